"""The cost model, evaluated for one given assignment: the single source of truth.

Every solver returns assignments (the device of every block); their predicted
breakdown always comes from :func:`evaluate` here, so all solvers report the same
numbers for the same plan.

- latency: upload + every stage's compute + every cut hop + return, one request
  after the other (an upload or return that stays on one device costs its messaging);
- bottleneck: the busiest resource of a pipeline in steady state: a device's
  compute summed over all its stages, or a link's transfers summed over all hops
  that use it (each transfer counted as latency + bytes / bandwidth; a hop within
  a device uses no link);
- energy: over battery-powered devices, ``busy_w`` x own compute (with ``Power.busy_w_blocks``: each
  block's watts x its seconds, each inner join its seconds x the mean of its two blocks' watts weighted
  by their seconds, ``watts.join_watts``) +
  ``radio_w`` x own transfer time + ``radio_j_per_byte`` x own bytes sent or
  received + ``idle_w`` x the rest of the request's latency; ``Metrics.energy_split`` keeps each
  device's three parts (compute; communication, the radio's two; idle) apart;
- memory (in :func:`violations`): each device's need, the sum of its stages' (:mod:`.memory`);
- with early exits (:mod:`.exits`): each part weighted by the requests that reach it, and each exit's
  return (a hop of kind ``exit``: its tensor from its block's device to the sink) by how often it is
  taken; those returns count in latency and energy, not in bytes sent or the bottleneck.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from splitinfer.plan.memory import device_needs
from splitinfer.plan.plan import EnergySplit, Hop, Plan, Stage
from splitinfer.plan.problem import Constraints, Instance, Power
from splitinfer.plan.proof import Proof, certify


class Metrics(NamedTuple):
    """The predicted figures of one assignment."""

    latency_s: float
    bottleneck_s: float
    bytes_sent: int
    upload_bytes: int
    energy_j: float | None
    runs: tuple[tuple[int, int, int], ...]  # (device, first block, last block)
    hops: tuple[tuple[int, int, int, float, str], ...]  # (src, dst, bytes, seconds, kind)
    stage_s: tuple[float, ...]
    energy_split: tuple[tuple[int, EnergySplit], ...] = ()  # (battery device, its joules by part)


def runs_of(assignment: Sequence[int]) -> tuple[tuple[int, int, int], ...]:
    """Stages of an assignment: maximal runs of equal devices as (device, first, last)."""
    out: list[tuple[int, int, int]] = []
    start = 0
    for b in range(1, len(assignment) + 1):
        if b == len(assignment) or assignment[b] != assignment[start]:
            out.append((int(assignment[start]), start, b - 1))
            start = b
    return tuple(out)


def _hops(inst: Instance, runs: tuple[tuple[int, int, int], ...]
          ) -> tuple[list[tuple[int, int, int, float, str]], list[float]]:
    """Every hop that costs something: the upload, the cuts and the return; an upload or return that
    stays on one device costs its messaging (``Problem.messaging``) and is listed when not free. And the
    share of requests that take each (1 without early exits): the seconds are already weighted by it."""
    reach = np.ones(inst.num_blocks + 1) if inst.reach is None else inst.reach
    hops, shares = [], []
    first = runs[0][0]
    if first != inst.source or inst.upload_s[first] > 0:
        hops.append((inst.source, first, inst.input_bytes, float(inst.upload_s[first]), "upload"))
        shares.append(1.0)
    for (a, _, last), (b, _, _) in itertools.pairwise(runs):
        n = int(inst.cut_bytes[last])
        share = float(reach[last + 1])  # those who did not exit
        seconds = inst.transfer_s(a, b, n)  # a missing link stays inf, whoever crosses it
        hops.append((a, b, n, seconds * share if math.isfinite(seconds) else seconds, "cut"))
        shares.append(share)
    end = runs[-1][0]
    if inst.sink is not None and (end != inst.sink or inst.return_s[end] > 0):
        hops.append((end, inst.sink, inst.output_bytes, float(inst.return_s[end]), "return"))
        shares.append(float(reach[-1]))
    return hops, shares


def _exit_hops(inst: Instance, assignment: Sequence[int]) -> tuple[list[tuple[int, int, int, float, str]],
                                                                   list[float]]:
    """The returns of early exits, each taken from its block's device with its probability (seconds
    weighted by it; bytes as sent when taken), and those probabilities. Every exit taken at all is
    listed, free on the sink or not, in the exits' order: the k-th exit hop is the k-th such exit
    (``Plan.exit_mix``), which is how a bench tells them apart."""
    if inst.sink is None:
        return [], []
    hops, shares = [], []
    for e in inst.exits:
        d = int(assignment[e.block])
        if e.probability > 0:
            hops.append((d, inst.sink, e.num_bytes, e.probability * float(e.return_s[d]), "exit"))
            shares.append(e.probability)
    return hops, shares


def _crossing(hops: Sequence[tuple[int, int, int, float, str]]) -> list[tuple[int, int, int, float, str]]:
    """The hops between two devices: those that use a link (and a radio) and whose bytes are sent."""
    return [h for h in hops if h[0] != h[1]]


def _compute_j(inst: Instance, p: Power, e: int, runs: tuple[tuple[int, int, int], ...],
               stage_s: Sequence[float]) -> float:
    """Joules device ``e`` spends running its stages: ``busy_w`` x their seconds, or with measured watts per
    block each block's watts x its seconds plus each inner join's seconds (plan/joins.py, negative when the
    stage saves) x the watts of the two blocks it joins, their mean weighted by their seconds
    (``watts.join_watts``: a join then saves at most half of their joules, as of their seconds)."""
    if p.busy_w_blocks is None:
        return p.busy_w * math.fsum(t for (d, _, _), t in zip(runs, stage_s, strict=True) if d == e)
    parts: list[float] = []
    for d, first, last in runs:
        if d == e:
            parts += (inst.compute_s[first : last + 1, e] * inst.busy_w[first : last + 1, e]).tolist()
            parts += (inst.join_s[first:last, e] * inst.join_w[first:last, e]).tolist()
    return math.fsum(parts)


def _energy(
    inst: Instance,
    runs: tuple[tuple[int, int, int], ...],
    stage_s: Sequence[float],
    hops: Sequence[tuple[int, int, int, float, str]],
    latency: float,
    shares: Sequence[float],
) -> tuple[float | None, tuple[tuple[int, EnergySplit], ...]]:
    """The joules of the battery devices and each one's split. ``shares[i]``: the fraction of requests
    whose bytes hop i moves (an exit's: its probability)."""
    if not inst.has_energy:
        return None, ()
    parts, split = [], []
    for e, p in enumerate(inst.power):
        if p is None or not p.battery:
            continue
        busy = math.fsum(t for (d, _, _), t in zip(runs, stage_s, strict=True) if d == e)
        radio = math.fsum(h[3] for h in _crossing(hops) if e in (h[0], h[1]))  # a local hop: idle
        moved = math.fsum(h[2] * share for h, share in zip(hops, shares, strict=True)
                          if h[0] != h[1] and e in (h[0], h[1]))
        compute, idle = _compute_j(inst, p, e, runs, stage_s), p.idle_w * (latency - busy - radio)
        communication = (p.radio_w * radio, p.radio_j_per_byte * moved)
        parts += [compute, *communication, idle]
        split.append((e, EnergySplit(compute, math.fsum(communication), idle)))
    return math.fsum(parts), tuple(split)


def measure(inst: Instance, assignment: Sequence[int]) -> Metrics | None:
    """Figures of an assignment, or None if a block cannot run there or a hop has no link."""
    runs = runs_of(assignment)
    stage_s = []
    for d, first, last in runs:
        times = inst.compute_s[first : last + 1, d].tolist()
        if math.inf in times:  # prepare() leaves no NaN, and inf marks "cannot run"
            return None
        stage_s.append(math.fsum(times + inst.join_s[first:last, d].tolist()))  # plan/joins.py
    hops, shares = _hops(inst, runs)
    exits, taken = _exit_hops(inst, assignment)
    if any(math.isinf(h[3]) for h in (*hops, *exits)):
        return None
    shares += taken
    latency = math.fsum([*stage_s, *(h[3] for h in (*hops, *exits))])
    busy: dict[int, list[float]] = {}
    for (d, _, _), t in zip(runs, stage_s, strict=True):
        busy.setdefault(d, []).append(t)
    links: dict[tuple[int, int], list[float]] = {}
    for h in _crossing(hops):
        links.setdefault((h[0], h[1]), []).append(h[3])
    bottleneck = max([math.fsum(v) for v in busy.values()] + [math.fsum(v) for v in links.values()])
    crossing = _crossing(hops)
    energy, split = _energy(inst, runs, stage_s, [*hops, *exits], latency, shares)
    return Metrics(
        latency,
        bottleneck,
        sum(h[2] for h in crossing),
        sum(h[2] for h in crossing if h[0] == inst.source),
        energy,
        runs,
        tuple([*hops, *exits]),
        tuple(stage_s),
        split,
    )


def throughput_cap_s(min_throughput_rps: float | None) -> float:
    """The largest bottleneck (s) a throughput bound allows (inf: no bound)."""
    if not min_throughput_rps:
        return math.inf
    return 1.0 / min_throughput_rps


def objective_value(m: Metrics | Plan, objective: str) -> float:
    """The figure an objective minimises (throughput minimises the bottleneck)."""
    if objective == "latency" or objective.startswith("pareto"):  # a front: the fastest under each budget
        return m.latency_s
    if objective == "throughput":
        return m.bottleneck_s
    if objective == "energy":
        return math.inf if m.energy_j is None else m.energy_j
    raise ValueError(objective)


def evaluate(
    inst: Instance,
    assignment: Sequence[int],
    objective: str,
    *,
    rank: int = 1,
    proof: Proof | None = None,
    solver: str = "",
) -> Plan:
    """The :class:`Plan` of an assignment (it must be feasible: see :func:`measure`), with the
    ``bound`` and ``gap`` that ``proof`` gives it (:func:`.proof.certify`; None: an exact method)."""
    m = measure(inst, assignment)
    if m is None:
        raise ValueError("assignment runs a block where it cannot run or uses a missing link")
    names = inst.names
    stages = tuple(
        Stage(names[d], first, last, t) for (d, first, last), t in zip(m.runs, m.stage_s, strict=True)
    )
    hops = tuple(Hop(names[a], names[b], n, t, kind) for a, b, n, t, kind in m.hops)  # type: ignore[arg-type]
    throughput = math.inf if m.bottleneck_s == 0 else 1.0 / m.bottleneck_s
    bound, gap = certify(objective_value(m, objective), proof)
    return Plan(
        objective,
        stages,
        hops,
        m.latency_s,
        m.bottleneck_s,
        throughput,
        m.bytes_sent,
        m.upload_bytes,
        m.energy_j,
        rank,
        gap=gap,
        bound=bound,
        solver=solver,
        exit_mix={e.output: e.probability for e in inst.exits},
        energy_split={names[d]: part for d, part in m.energy_split},
        full_depth=evaluate(inst.full, assignment, objective, rank=rank, solver=solver)
        if inst.full is not None else None,
    )


# Sums of float seconds and joules differ in their last bits with the order of adding: a figure
# exactly at its bound, added up by another solver, must not be refused for that.
BOUND_TOLERANCE = 1e-9


def _over(value: float, bound: float) -> bool:
    return value > bound + BOUND_TOLERANCE * max(1.0, abs(bound))


def violations(
    inst: Instance,
    cons: Constraints,
    assignment: Sequence[int],
    m: Metrics | None = None,
    *,
    revisits: bool = True,
) -> list[str]:
    """The constraints an assignment breaks, each named like its CLI flag (empty: feasible)."""
    m = m if m is not None else measure(inst, assignment)
    if m is None:
        return ["no link or no measured time"]
    names = inst.names
    out = [f"--pin {b}={d}" for b, d in cons.pins if names[assignment[b]] != d]
    out += [f"--forbid {b}={d}" for b, d in cons.forbids if names[assignment[b]] == d]
    used = {names[d] for d, _, _ in m.runs}
    out += [f"--exclude {d}" for d in cons.excludes if d in used]
    out += [f"--require {d}" for d in cons.requires if d not in used]
    if any(assignment[b] != inst.source for b in range(cons.private_blocks)):
        out.append(f"--private-blocks {cons.private_blocks}")
    if cons.max_stages is not None and len(m.runs) > cons.max_stages:
        out.append(f"--max-stages {cons.max_stages}")
    if not revisits and len({d for d, _, _ in m.runs}) < len(m.runs):
        out.append("--no-revisits")
    if np.isfinite(inst.capacity_bytes).any():  # plan/memory.py: the sum of its stages' needs
        need = device_needs(inst, m.runs)
        out += [f"memory of {names[d]}" for d in range(inst.num_devices) if need[d] > inst.capacity_bytes[d]]
    if cons.max_latency_s is not None and _over(m.latency_s, cons.max_latency_s):
        out.append(f"--max-latency {cons.max_latency_s}")
    cap_s = throughput_cap_s(cons.min_throughput_rps)
    if cons.min_throughput_rps is not None and _over(m.bottleneck_s, cap_s):
        out.append(f"--min-throughput {cons.min_throughput_rps}")
    if cons.max_upload_bytes is not None and m.upload_bytes > cons.max_upload_bytes:
        out.append(f"--max-upload-bytes {cons.max_upload_bytes}")
    if cons.max_energy_j is not None and m.energy_j is not None and _over(m.energy_j, cons.max_energy_j):
        out.append(f"--max-energy {cons.max_energy_j}")
    return out
