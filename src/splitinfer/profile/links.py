"""Links in the profile: fitted from probes, declared in cluster.yaml, or read from Scission's csv.

A link's transfer time is modelled as ``t = latency_s + bytes / bandwidth_bps``.
Probes measure echo round trips of several message sizes (the same size both
ways), so one way is half a round trip; the fit is ordinary least squares on
the per-size medians, and ``r2`` says how well the line explains them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from splitinfer.cluster import Cluster
from splitinfer.errors import ProfileError
from splitinfer.profile.schema import LinkProfile
from splitinfer.profile.scission import load_network_stats

# Probe sizes: small ones pin the latency, large ones the bandwidth.
DEFAULT_PROBE_SIZES_BYTES = (64, 16_384, 262_144, 1_048_576, 4_194_304)


@dataclass(frozen=True)
class LinkFit:
    """``t = latency_s + bytes / bandwidth_bps`` fitted to samples; ``r2`` in [0, 1] (1: a perfect line)."""

    latency_s: float
    bandwidth_bps: float  # inf when time does not grow with size
    r2: float
    num_samples: int


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def fit_link(samples: Iterable[tuple[float, float]]) -> LinkFit:
    """Fit ``seconds = latency + bytes / bandwidth`` to ``(bytes, seconds)`` samples.

    Samples of the same size are reduced to their median first (a few slow
    outliers on a busy machine should not tilt the line). A negative intercept
    becomes latency 0, a non-positive slope an infinite bandwidth.
    """
    by_size: dict[float, list[float]] = {}
    for size, seconds in samples:
        if not (size >= 0 and seconds >= 0) or math.isinf(seconds):
            raise ProfileError(f"link sample ({size} bytes, {seconds} s) is not a size and a duration",
                               "give sizes >= 0 and finite durations >= 0")
        by_size.setdefault(float(size), []).append(float(seconds))
    num = sum(len(v) for v in by_size.values())
    if len(by_size) < 2:
        raise ProfileError(f"a link fit needs at least 2 message sizes, got {len(by_size)}",
                           "probe the link with several sizes (e.g. 64 B and 1 MB)")
    x = np.array(sorted(by_size))
    y = np.array([float(np.median(by_size[s])) for s in sorted(by_size)])
    slope, intercept = np.polyfit(x, y, 1)
    predicted = intercept + slope * x
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - predicted) ** 2)) / total if total > 0 else 1.0
    if slope <= 0:  # sizes make no measurable difference: latency is the mean time
        return LinkFit(float(y.mean()), math.inf, max(0.0, r2), num)
    return LinkFit(max(0.0, float(intercept)), float(1.0 / slope), max(0.0, min(1.0, r2)), num)


def fit_round_trips(sizes_bytes: Sequence[int], rtts_s: Sequence[Sequence[float]]) -> LinkFit:
    """Fit a link from echo round trips (``rtts_s[i]``: round trips of ``sizes_bytes[i]`` each way)."""
    if len(sizes_bytes) != len(rtts_s):
        raise ProfileError(f"{len(sizes_bytes)} probe sizes but {len(rtts_s)} lists of round trips",
                           "give one list of round trips per size")
    return fit_link((size, rtt / 2) for size, times in zip(sizes_bytes, rtts_s, strict=True) for rtt in times)


def measured_link(src: str, dst: str, fit: LinkFit) -> LinkProfile:
    """The profile entry of a fitted link."""
    return LinkProfile(src=src, dst=dst, latency_s=fit.latency_s, bandwidth_bps=fit.bandwidth_bps, r2=fit.r2,
                       source="measured", date=_now())


def declared_links(cluster: Cluster) -> list[LinkProfile]:
    """The links cluster.yaml gives bandwidth and latency for, taken verbatim (``source="declared"``)."""
    return [LinkProfile(src=x.src, dst=x.dst, latency_s=x.latency_s, bandwidth_bps=x.bandwidth_bps,
                        source="declared", date=_now())
            for x in cluster.links if x.bandwidth_bps is not None and x.latency_s is not None]


def links_to_measure(cluster: Cluster) -> list[tuple[str, str]]:
    """Ordered device pairs to probe: links marked ``measure: true``, or every pair when
    cluster.yaml lists no links at all (then nothing says which pairs are connected).
    Pairs with no link in a cluster that lists links stay unconnected, as the planner reads it."""
    declared = {(x.src, x.dst) for x in declared_links(cluster)}
    names = cluster.device_names
    if not cluster.links:
        return [(a, b) for a in names for b in names if a != b]
    return [(x.src, x.dst) for x in cluster.links if x.measure and (x.src, x.dst) not in declared]


def scission_links(path: str | Path, names: Iterable[str] | None = None) -> list[LinkProfile]:
    """Links from Scission's ``network_stats.csv`` (ping as latency, Mbit/s as bandwidth).

    Scission lists one direction per pair; the other direction is taken to be the
    same unless the file lists it too. ``names`` keeps only links between those devices.
    """
    rows = load_network_stats(path)
    keep = None if names is None else set(names)
    links: dict[tuple[str, str], LinkProfile] = {}
    for (a, b), row in rows.items():
        if a == b or (keep is not None and not {a, b} <= keep):
            continue
        for src, dst in ((a, b), (b, a)):
            if (src, dst) == (a, b) or (src, dst) not in rows:
                links[(src, dst)] = LinkProfile(src=src, dst=dst, latency_s=row.ping_s,
                                                bandwidth_bps=float(row.bandwidth_bps), source="scission",
                                                date=_now())
    return list(links.values())
