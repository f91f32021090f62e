"""Build the planner's :class:`~splitinfer.plan.Problem` from a profile and a cluster."""

from __future__ import annotations

from splitinfer.cluster import Cluster
from splitinfer.errors import ProfileError
from splitinfer.plan.problem import AT_SOURCE, AtSource, Link, Power, Problem
from splitinfer.profile.schema import DeviceProfile, Profile
from splitinfer.profile.segments import corrected_profile

STATS = ("median_s", "mean_s", "p10_s", "p90_s")


def _links(profile: Profile, cluster: Cluster | None, names: tuple[str, ...]) -> list[Link]:
    """Cluster-declared numbers first, else the profile's measurement; neither: not connected."""
    measured = {(x.src, x.dst): x for x in profile.links}
    links = []
    for a in names:
        for b in names:
            if a == b:
                continue
            declared = cluster.link(a, b) if cluster is not None else None
            extra = profile.hop_overhead_s
            if declared is not None and declared.bandwidth_bps is not None and declared.latency_s is not None:
                links.append(Link(a, b, declared.bandwidth_bps, declared.latency_s + extra))
            elif (a, b) in measured:
                m = measured[(a, b)]
                links.append(Link(a, b, m.bandwidth_bps, m.latency_s + extra))
            elif declared is not None:
                raise ProfileError(
                    f"link {a}->{b} is to be measured but the profile has no measurement of it",
                    "measure links with `splitinfer profile --cluster ...`, or declare "
                    "bandwidth and latency in cluster.yaml",
                )
    return links


def joins_of(device: DeviceProfile, stat: str = "median_s") -> list[float | None]:
    """Per cut, what running its two blocks together adds on ``device`` (``plan/joins.py``): the pair's
    time less the two blocks' (None where one was not measured)."""
    out: list[float | None] = []
    for b, pair in enumerate(device.pairs):
        first, second = device.blocks[b], device.blocks[b + 1]
        if pair is None or first is None or second is None:
            out.append(None)
        else:
            out.append(getattr(pair, stat) - getattr(first, stat) - getattr(second, stat))
    return out


def build_problem(
    profile: Profile,
    cluster: Cluster | None = None,
    *,
    stat: str = "median_s",
    sink: str | AtSource | None = AT_SOURCE,
) -> Problem:
    """The planning problem of ``profile`` on ``cluster``'s devices (or the profile's own).

    ``stat``: which timing statistic to plan with (median_s by default). Memory per
    block = parameter bytes + peak activation bytes; a device's capacity comes from
    the cluster (``memory``), else from the profile. ``sink`` overrides the
    cluster's sink.
    """
    profile = corrected_profile(profile)  # measured segments (refinement) override their blocks' sum
    if stat not in STATS:
        raise ProfileError(f"unknown statistic {stat!r}", f"use one of: {', '.join(STATS)}")
    names = cluster.device_names if cluster is not None else tuple(profile.devices)
    if not names:
        raise ProfileError("the profile has no devices", "profile the model on at least one device")
    for name in names:
        if name not in profile.devices:
            raise ProfileError(
                f"device {name!r} is in the cluster but not in the profile",
                f"profile the model on {name} (`splitinfer profile`), or remove it from the cluster",
            )
    compute = {n: [None if s is None else getattr(s, stat) for s in profile.devices[n].blocks] for n in names}
    joins = {n: joins_of(profile.devices[n], stat) for n in names if profile.devices[n].pairs}
    memory = [b.param_bytes + b.activation_bytes for b in profile.blocks]
    capacity = {}
    power = {}
    for n in names:
        declared = cluster.device(n) if cluster is not None else None
        cap = declared.memory_bytes if declared is not None else None
        capacity[n] = cap if cap is not None else profile.devices[n].memory_bytes
        if declared is not None and declared.power is not None:
            p = declared.power
            power[n] = Power(p.busy_w, p.idle_w, p.radio_w, p.radio_j_per_byte, p.battery)
    source = cluster.source if cluster is not None else names[0]
    if isinstance(sink, AtSource):
        sink = cluster.sink if cluster is not None else source
    return Problem(
        names,
        compute,
        [b.cut_bytes for b in profile.blocks[:-1]],
        profile.input_bytes,
        profile.output_bytes,
        _links(profile, cluster, names),
        memory if any(memory) else None,
        capacity,
        power,
        source,
        sink,
        joins,
    )
