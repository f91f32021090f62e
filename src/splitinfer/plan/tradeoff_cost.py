"""The cost model of a trade-off plan (:mod:`.tradeoffs`), evaluated for one assignment of blocks to
variants: what :mod:`.cost` is for plain plans, with each stage's precision, each hop's compression and
its codec seconds (busy time of the devices that compress and restore).

A hop within a device (an upload that stays on the source, a return on the sink) costs the device's
messaging and is listed when it costs something, as :mod:`.cost` lists it; it uses no link, sends no
bytes and keeps no radio busy. Energy as :mod:`.cost` charges it, split per battery device the same way;
compressing and restoring are the device's compute, at its ``busy_w`` (measured watts per block,
``Power.busy_w_blocks``, price the blocks and joins of its stages, whatever their precision).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from splitinfer.plan.cost import runs_of
from splitinfer.plan.plan import EnergySplit, Hop, Stage
from splitinfer.plan.tradeoffs import Variants


class TradeoffMetrics(NamedTuple):
    """The predicted figures of an assignment of blocks to variants."""

    latency_s: float
    bottleneck_s: float
    energy_j: float | None
    quality_cost: float
    upload_bytes: int
    stages: tuple[Stage, ...]
    hops: tuple[Hop, ...]
    energy_split: tuple[tuple[str, EnergySplit], ...] = ()  # (battery device, its joules by part)


def _hop(var: Variants, a: int, b: int, n: float, wire_s: float, kind: str, codec: tuple[str, float]) -> Hop:
    names = var.inst.names
    return Hop(
        names[var.device[a]],
        names[var.device[b]],
        int(n),
        float(wire_s),
        kind,  # type: ignore[arg-type]
        codec[0],
        float(codec[1]),
    )


def measure(var: Variants, assignment: Sequence[int]) -> TradeoffMetrics | None:
    """Figures of an assignment, or None where a block cannot run or a hop is not allowed."""
    inst, runs = var.inst, runs_of(assignment)
    stages, busy, hops, quality = [], np.zeros(inst.num_devices), [], []
    # joules of the busy seconds at measured watts per block (Power.busy_w_blocks; codecs at busy_w)
    busy_j, codec_w = np.zeros(inst.num_devices), np.array([p.busy_w if p else 0.0 for p in inst.power])
    for v, first, last in runs:
        times = var.compute_s[first : last + 1, v]
        if not np.isfinite(times).all():
            return None
        joins = inst.join_s[first:last, var.device[v]].tolist()  # plan/joins.py
        stages.append(
            Stage(inst.names[var.device[v]], first, last, math.fsum(times.tolist() + joins), var.precision[v])
        )
        busy[var.device[v]] += stages[-1].compute_s
        busy_j[var.device[v]] += _stage_j(var, var.device[v], first, last, times)
        quality += var.node_quality[first : last + 1, v].tolist()
    first_v, last_v = runs[0][0], runs[-1][0]
    if not (math.isfinite(var.upload_s[first_v]) and math.isfinite(var.return_s[last_v])):
        return None
    src_v = int(np.flatnonzero(var.device == inst.source)[0])
    if var.device[first_v] != inst.source:
        on_source, restore = var.upload_compress_s[first_v], var.upload_decompress_s[first_v]
        busy[inst.source] += on_source
        busy[var.device[first_v]] += restore
        busy_j[inst.source] += codec_w[inst.source] * on_source
        busy_j[var.device[first_v]] += codec_w[var.device[first_v]] * restore
        upload = (var.upload_compression[first_v], on_source + restore)
        sent = var.upload_bytes[first_v]
        hops.append(_hop(var, src_v, first_v, sent, var.upload_s[first_v], "upload", upload))
    elif var.upload_s[first_v] > 0:  # a hop within the source: its messaging (plan/cost.py lists it too)
        hops.append(_hop(var, src_v, first_v, inst.input_bytes, var.upload_s[first_v], "upload", ("none", 0)))
    for (a, _, last), (b, _, _) in itertools.pairwise(runs):
        if not math.isfinite(var.wire_s[last, a, b]):
            return None
        codec_s = var.compress_s[last, a, b] + var.decompress_s[last, a, b]
        busy[var.device[a]] += var.compress_s[last, a, b]
        busy[var.device[b]] += var.decompress_s[last, a, b]
        busy_j[var.device[a]] += codec_w[var.device[a]] * var.compress_s[last, a, b]
        busy_j[var.device[b]] += codec_w[var.device[b]] * var.decompress_s[last, a, b]
        cut = (var.compression[a], codec_s)
        hops.append(_hop(var, a, b, var.hop_bytes[last, a, b], var.wire_s[last, a, b], "cut", cut))
        quality.append(var.hop_quality[last, a, b])
    if inst.sink is not None and (var.device[last_v] != inst.sink or var.return_s[last_v] > 0):
        at_sink = var.device[last_v] == inst.sink
        sink_v = last_v if at_sink else int(np.flatnonzero(var.device == inst.sink)[0])
        hops.append(_hop(var, last_v, sink_v, inst.output_bytes, var.return_s[last_v], "return", ("none", 0)))
    latency = math.fsum([*(s.compute_s for s in stages), *(h.transfer_s + h.codec_s for h in hops)])
    links: dict[tuple[str, str], float] = {}
    for h in crossing(hops):
        links[h.src, h.dst] = links.get((h.src, h.dst), 0.0) + h.transfer_s
    bottleneck = max([*busy.tolist(), *links.values()])
    upload = sum(h.num_bytes for h in crossing(hops) if h.src == inst.names[inst.source])
    energy, split = _energy(var, busy, busy_j, hops, latency)
    return TradeoffMetrics(latency, bottleneck, energy, math.fsum(quality), upload, tuple(stages),
                           tuple(hops), split)


def _stage_j(var: Variants, d: int, first: int, last: int, times: np.ndarray) -> float:
    """A stage's joules at measured watts per block: each block's watts x its seconds, each inner join's
    its seconds x its watts (``Instance.join_w``), as :func:`.cost._compute_j` charges them."""
    inst = var.inst
    joins = inst.join_s[first:last, d] * inst.join_w[first:last, d]
    return math.fsum((times * inst.busy_w[first : last + 1, d]).tolist() + joins.tolist())


def _energy(var: Variants, busy: np.ndarray, busy_j: np.ndarray, hops: Sequence[Hop], latency: float
            ) -> tuple[float | None, tuple[tuple[str, EnergySplit], ...]]:
    """The battery devices' joules and each one's split; ``busy``: each device's seconds computing,
    compressing and restoring, ``busy_j`` their joules at measured watts per block."""
    inst = var.inst
    if not inst.has_energy:
        return None, ()
    parts, split = [], []
    for d, p in enumerate(inst.power):
        if p is None or not p.battery:
            continue
        name = inst.names[d]
        radio = math.fsum(h.transfer_s for h in crossing(hops) if name in (h.src, h.dst))  # local: idle
        moved = sum(h.num_bytes for h in crossing(hops) if name in (h.src, h.dst))
        compute = p.busy_w * busy[d] if p.busy_w_blocks is None else float(busy_j[d])
        communication = (p.radio_w * radio, p.radio_j_per_byte * moved)
        idle = p.idle_w * (latency - busy[d] - radio)
        parts += [compute, *communication, idle]
        split.append((name, EnergySplit(float(compute), math.fsum(communication), float(idle))))
    return math.fsum(parts), tuple(split)


def crossing(hops: Sequence[Hop]) -> list[Hop]:
    """The hops between two devices: a hop within one (its messaging) uses no link and sends nothing."""
    return [h for h in hops if h.src != h.dst]
