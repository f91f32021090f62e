"""Scission's model, criteria and output, reproduced exactly and vectorised (pure).

Scission (Lockhart et al., UCC 2020) places a model on three tiers in a fixed
order, device -> edge -> cloud, one system per tier; each tier runs a contiguous
range of blocks or nothing. Its cost model, kept here only for compatibility:

- compute: each used tier's block times, summed block by block in order;
- each hop used costs ``ping + bytes / bandwidth``, where bytes = the output of
  the last block on the sending tier, or the raw input when the device tier is
  unused; the result is not returned;
- a quirk kept on purpose: when the edge and cloud times are both exactly 0 the
  device's output counts as 0 bytes, and when the cloud time is 0 the edge's does.

Besides its criteria, Scission limits what the device and the edge send (bytes as
counted above, quirk included) and each tier's compute time, in seconds or as a
percentage of the scenarios' compute time (transfers not counted). A query that
no scenario satisfies gives no results (an empty list), as Scission prints
"No results for the specified configuration".

Scenarios are enumerated as Scission does (systems: device x edge x cloud in the
order given; splits: device end x, edge end y > x or none), identical scenarios
(same systems used, same layer ranges) are counted once, and ties in the ranking
keep the order of first appearance. Lines print as::

    [1] 9.0106s - 2.4087MB - Device(raspi4) = 0 - 6, Edge(vm2Core) = 7 - 11, Cloud(6700k(GPU)) = 12 - 25
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from splitinfer.errors import InfeasibleError, PlanError

TIERS = ("device", "edge", "cloud")


@dataclass(frozen=True)
class ScissionBlock:
    """One benchmarked block: Keras layers ``input_layer..output_layer`` (inclusive)."""

    input_layer: int
    output_layer: int
    seconds: float
    output_bytes: int


@dataclass(frozen=True)
class ScissionSystem:
    """A benchmarked machine on one tier, with its blocks for one model."""

    tier: str  # device | edge | cloud
    name: str
    blocks: tuple[ScissionBlock, ...]


@dataclass(frozen=True)
class ScissionLink:
    """A row of network_stats.csv, converted as Scission does."""

    ping_s: float
    bandwidth_bps: int


@dataclass(frozen=True)
class TierCriteria:
    """One tier's criteria: layers that must (not) run there, systems to use (not), and its limits."""

    layers_in: tuple[int, ...] = ()
    layers_out: tuple[int, ...] = ()
    names_in: tuple[str, ...] = ()
    names_out: tuple[str, ...] = ()
    max_upload_bytes: float | None = None  # what the tier sends (--device-upload / --edge-upload)
    max_time_s: float | None = None  # its compute seconds (--TIER-time N)
    max_time_percent: float | None = None  # its share of the compute, percent (--TIER-time N%)


def parse_criteria(text: str | None, tier: str = "device") -> TierCriteria:
    """Scission's criteria syntax: ``N``, ``!N``, ``-1`` (unused), ``!-1`` (used), ``name``, ``!name``."""
    if not text:
        return TierCriteria()
    layers_in: list[int] = []
    layers_out: list[int] = []
    names_in: list[str] = []
    names_out: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item or item == "!":
            raise PlanError(
                f"empty item in the {tier} criteria {text!r}",
                'separate items with single commas, e.g. -d "3,!10,raspi4"',
            )
        if item.isdigit() or item == "-1":
            layers_in.append(int(item))
        elif item[0] == "!" and (item[1:].isdigit() or item[1:] == "-1"):
            layers_out.append(int(item[1:]))
        elif item[0] == "!":
            names_out.append(item[1:])
        else:
            names_in.append(item)
    return TierCriteria(tuple(layers_in), tuple(layers_out), tuple(names_in), tuple(names_out))


@dataclass(frozen=True)
class ScissionScenario:
    """Which system runs which blocks (indices into ``blocks``, inclusive; None: the tier is unused),
    and the bytes the device and the edge send as Scission counts them (its quirk applied)."""

    device: str
    edge: str | None
    cloud: str | None
    device_blocks: tuple[int, int] | None
    edge_blocks: tuple[int, int] | None
    cloud_blocks: tuple[int, int] | None
    device_sends: float
    edge_sends: float


@dataclass(frozen=True)
class ScissionResult:
    """One ranked scenario: total seconds, megabytes sent, and Scission's description."""

    total_s: float
    megabytes: float
    config: str
    scenario: ScissionScenario | None = field(default=None, compare=False)

    def line(self, rank: int) -> str:
        """The line Scission prints for this result at ``rank``."""
        return (
            f"[{rank}] {format(round(self.total_s, 4), '.4f')}s - "
            f"{format(round(self.megabytes, 4), '0.4f')}MB - {self.config}"
        )


def _splits(num_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Scission's split order: device ends at x (-1: unused), edge at y > x (-1: unused)."""
    xs, ys = [], []
    for x in range(-1, num_blocks):
        for y in range(-1, num_blocks):
            if y > x or y == -1:
                xs.append(x)
                ys.append(y)
    return np.array(xs), np.array(ys)


def _running_sums(seconds: np.ndarray) -> np.ndarray:
    """table[i, j] = seconds[i] + ... + seconds[j] added left to right, as Scission adds them."""
    n = len(seconds)
    table = np.zeros((n, n))
    for i in range(n):
        table[i, i:] = np.cumsum(seconds[i:])  # cumsum adds sequentially: the same rounding
    return table


@dataclass(frozen=True)
class _Tier:
    """Per-split figures of one system on one tier (arrays over splits)."""

    name: str
    used: np.ndarray
    time: np.ndarray
    out: np.ndarray
    first: np.ndarray  # Keras layer labels of the range; -1 when unused
    last: np.ndarray


def _tier(system: ScissionSystem, used: np.ndarray, start: np.ndarray, end: np.ndarray) -> _Tier:
    blocks = system.blocks
    seconds = np.array([b.seconds for b in blocks], dtype=np.float64)
    sums = _running_sums(seconds)
    s, e = np.where(used, start, 0), np.where(used, end, 0)
    first = np.array([b.input_layer for b in blocks])[s]
    last = np.array([b.output_layer for b in blocks])[e]
    return _Tier(
        system.name,
        used,
        np.where(used, sums[s, e], 0.0),
        np.array([b.output_bytes for b in blocks], dtype=np.float64)[e],
        np.where(used, first, -1),
        np.where(used, last, -1),
    )


def _keep(tier: _Tier, crit: TierCriteria, sends: np.ndarray, compute: np.ndarray) -> np.ndarray:
    keep = np.ones(len(tier.used), dtype=bool)
    if crit.names_in:
        keep &= tier.used & (tier.name in crit.names_in)
    if crit.names_out:
        keep &= tier.used & (tier.name not in crit.names_out)
    for layer in crit.layers_in:
        keep &= (tier.first <= layer) & (layer <= tier.last)
    for layer in crit.layers_out:
        keep &= ~((tier.first <= layer) & (layer <= tier.last))
    if crit.max_upload_bytes is not None:
        keep &= sends <= crit.max_upload_bytes
    if crit.max_time_s is not None:
        keep &= tier.time <= crit.max_time_s
    elif crit.max_time_percent is not None:
        with np.errstate(divide="ignore", invalid="ignore"):  # no compute at all: no share (Scission fails)
            keep &= (tier.time / compute) * 100 <= crit.max_time_percent
    return keep


def _hop(
    network: Mapping[tuple[str, str], ScissionLink], src: str, dst: str, size: np.ndarray, needed: np.ndarray
) -> np.ndarray:
    link = network.get((src, dst))
    if link is None:
        if needed.any():
            raise PlanError(
                f"the network statistics have no row {src},{dst}",
                f"add a line `{src},{dst},PING_MS,BANDWIDTH_MBPS` to the csv file",
            )
        return np.zeros(len(size))
    return link.ping_s + size / link.bandwidth_bps


def _triple(
    systems: tuple[ScissionSystem, ScissionSystem, ScissionSystem],
    network: Mapping[tuple[str, str], ScissionLink],
    criteria: Mapping[str, TierCriteria],
    input_bytes: float,
    splits: tuple[np.ndarray, np.ndarray],
) -> dict[str, np.ndarray] | None:
    """Every split of one (device, edge, cloud) triple that the criteria keep: its columns."""
    xs, ys = splits
    last = len(systems[0].blocks) - 1
    dev = _tier(systems[0], xs >= 0, np.zeros_like(xs), xs)
    edge = _tier(systems[1], ys >= 0, xs + 1, ys)
    cloud_start = np.maximum(xs, ys) + 1
    cloud = _tier(systems[2], (xs != last) & (ys != last), cloud_start, np.full_like(xs, last))
    dev_out = np.where(dev.used, dev.out, input_bytes)
    edge_out = np.where(edge.used, edge.out, 0.0)
    # Scission's quirk: tests on the times, not on which tiers are used.
    dev_out = np.where((edge.time == 0) & (cloud.time == 0), 0.0, dev_out)
    edge_out = np.where(~((edge.time == 0) & (cloud.time == 0)) & (cloud.time == 0), 0.0, edge_out)
    compute = dev.time + edge.time + cloud.time
    keep = np.ones(len(xs), dtype=bool)
    for tier, name, sends in ((dev, "device", dev_out), (edge, "edge", edge_out), (cloud, "cloud", 0 * xs)):
        keep &= _keep(tier, criteria.get(name, TierCriteria()), sends, compute)
    if not keep.any():
        return None
    d, e, c = (s.name for s in systems)
    first = np.where(
        edge.used,
        _hop(network, d, e, dev_out, keep & edge.used),
        np.where(cloud.used, _hop(network, d, c, dev_out, keep & ~edge.used & cloud.used), 0.0),
    )
    second = np.where(
        edge.used & cloud.used, _hop(network, e, c, edge_out, keep & edge.used & cloud.used), 0.0
    )
    transfer = np.where(edge.used & cloud.used, first + second, first)
    columns = {
        "total": compute + transfer, "dev_out": dev_out, "edge_out": edge_out, "x": xs, "y": ys,
        "d0": dev.first, "d1": dev.last, "e_used": edge.used, "e0": edge.first, "e1": edge.last,
        "c_used": cloud.used, "c0": cloud.first, "c1": cloud.last, "c_start": cloud_start,
    }
    return {k: v[keep] for k, v in columns.items()}


def _config(names: tuple[str, str, str], row: dict) -> str:
    edge = names[1] if row["e_used"] else None
    cloud = names[2] if row["c_used"] else None
    return (
        f"Device({names[0]}) = {row['d0']} - {row['d1']}, Edge({edge}) = {row['e0']} - {row['e1']}, "
        f"Cloud({cloud}) = {row['c0']} - {row['c1']}"
    )


def _scenario(names: tuple[str, str, str], row: dict, last: int) -> ScissionScenario:
    x, y = row["x"], row["y"]
    return ScissionScenario(
        names[0],
        names[1] if row["e_used"] else None,
        names[2] if row["c_used"] else None,
        (0, x) if x >= 0 else None,
        (x + 1, y) if y >= 0 else None,
        (row["c_start"], last) if row["c_used"] else None,
        row["dev_out"],
        row["edge_out"],
    )


def rank_scission(
    systems: Sequence[ScissionSystem],
    network: Mapping[tuple[str, str], ScissionLink],
    criteria: Mapping[str, TierCriteria] | None = None,
    *,
    input_mb: float = 0.15,
    result_count: int = 5,
) -> list[ScissionResult]:
    """The ``result_count`` fastest scenarios under Scission's model and criteria, fastest first;
    none when no scenario satisfies them."""
    criteria = criteria or {}
    tiers = {t: [s for s in systems if s.tier == t] for t in TIERS}
    for s in systems:
        if s.tier not in TIERS:
            raise PlanError(f"system {s.name!r} has tier {s.tier!r}", f"use one of: {', '.join(TIERS)}")
        if len(s.blocks) != len(systems[0].blocks):
            raise PlanError(
                f"system {s.name!r} has {len(s.blocks)} blocks, {systems[0].name!r} has "
                f"{len(systems[0].blocks)}",
                "benchmark the same model version on every system",
            )
    if not all(tiers.values()) or not systems[0].blocks:
        raise InfeasibleError(
            "Scission needs at least one system on each tier (device, edge, cloud)",
            "add the missing {tier}-{name}.dat benchmark file",
        )
    input_bytes = input_mb * 1000 * 1000
    splits = _splits(len(systems[0].blocks))
    parts, names = [], []
    for d in tiers["device"]:
        for e in tiers["edge"]:
            for c in tiers["cloud"]:
                got = _triple((d, e, c), network, criteria, input_bytes, splits)
                if got is not None:
                    parts.append(got)
                    names.append((d.name, e.name, c.name))
    if not parts:
        return []
    totals = np.concatenate([p["total"] for p in parts])
    owner = np.concatenate([np.full(len(p["total"]), i) for i, p in enumerate(parts)])
    offset = np.concatenate([np.arange(len(p["total"])) for p in parts])
    last = len(systems[0].blocks) - 1
    results: list[ScissionResult] = []
    seen: set[str] = set()
    for flat in np.argsort(totals, kind="stable"):
        part = parts[owner[flat]]
        row = {k: col[offset[flat]].item() for k, col in part.items()}
        config = _config(names[owner[flat]], row)
        if config in seen:
            continue
        seen.add(config)
        megabytes = (row["dev_out"] + row["edge_out"]) / 1000 / 1000
        scenario = _scenario(names[owner[flat]], row, last)
        results.append(ScissionResult(row["total"], megabytes, config, scenario))
        if len(results) == result_count:
            break
    return results
