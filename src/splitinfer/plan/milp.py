"""The general case as a mixed-integer linear program, solved by HiGHS (highspy).

Variables: ``x[b,d]`` (block b runs on device d, binary) and ``y[b,d,e]`` (block b
on d and block b+1 on e, continuous: the flow constraints make it the product of
the x's). The path structure is a network flow, so the relaxation is tight for
plain latency; the other constraints are rows:

- no revisits: every device is entered at most once;
- ``--max-stages``: the number of device changes;
- memory: every device's stages fit its capacity (:func:`.memory.add_memory_rows`: stage starts
  and ends from x and y, a peak column per device, or a running peak per column with revisits, and
  the inner cuts its stages hold, a minimum chosen by one binary);
- throughput: every device's compute and every link's transfers (summed) are at
  most the bottleneck z (objective) or 1 / min throughput (bound);
- bounds on latency, energy and bytes leaving the source: linear rows;
- top-k: after each answer a no-good cut excludes its assignment.

Every answer is re-checked exactly by :mod:`.cost`; one that breaks a bound by
less than the solver's tolerance is cut off and the search goes on.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import highspy
import numpy as np

from splitinfer.plan.cost import throughput_cap_s
from splitinfer.plan.memory import StageMemory, add_memory_rows
from splitinfer.plan.problem import Constraints, Instance
from splitinfer.plan.proof import Proof
from splitinfer.plan.weights import Weights, energy_weights, latency_weights, link_weights, upload_weights

_INF = highspy.kHighsInf
_STDOUT_LOCK = threading.Lock()
SMALL_MODEL = 2000  # columns; below this HiGHS runs without presolve


@dataclass
class _Rows:
    """Rows of a sparse matrix under construction (row-wise)."""

    lower: list[float]
    upper: list[float]
    cols: list[np.ndarray]
    vals: list[np.ndarray]

    empty_infeasible: bool = False  # an empty row whose bounds exclude 0

    def add(self, cols: np.ndarray, vals: np.ndarray, lower: float, upper: float) -> None:
        keep = vals != 0
        if not keep.any():
            # Empty rows trip HiGHS's presolve (it declared feasible models infeasible): keep them out.
            self.empty_infeasible |= not lower <= 0.0 <= upper
            return
        cols = np.asarray(cols, dtype=np.int32)[keep]
        order = np.argsort(cols, kind="stable")  # HiGHS's presolve expects sorted indices per row
        self.cols.append(cols[order])
        self.vals.append(np.asarray(vals, dtype=np.float64)[keep][order])
        self.lower.append(lower)
        self.upper.append(upper)


@dataclass(frozen=True)
class MilpSpec:
    """What to minimise and which rows to add, in terms of the instance's arrays."""

    objective: Weights | None  # an additive objective; None = minimise the bottleneck z
    allowed: np.ndarray  # (L, D) bool
    connected: np.ndarray  # (D, D) bool (diagonal True)
    revisits: bool
    max_stages: int | None
    requires: Sequence[int]
    memory: StageMemory  # what a stage's memory need is made of (plan/memory.py)
    capacity_bytes: np.ndarray  # (D,)
    bottleneck: tuple[np.ndarray, Weights, int, int | None] | None  # (compute (L,D), times, source, sink)
    bottleneck_cap_s: float  # inf = no throughput bound
    bounds: Sequence[tuple[Weights, float]]  # sum of weights <= value
    # Trade-offs (plan/tradeoffs.py) plan on variants of devices: column v is a variant of device
    # groups[v]. Revisits, stages, requires, memory and the bottleneck count devices, not variants.
    groups: np.ndarray | None = None  # (D,) device of each column; None: each column is a device
    # Seconds a hop keeps its sender and its receiver busy (compressing, restoring): (L-1, D, D) each.
    arc_busy: tuple[np.ndarray, np.ndarray] | None = None
    # Seconds the upload to a first stage on each column keeps the source busy (compressing): (D,).
    upload_busy: np.ndarray | None = None

    def members(self) -> list[np.ndarray]:
        """The columns of each device (one list per device, in device order)."""
        num_dev = self.allowed.shape[1]
        if self.groups is None:
            return [np.array([d]) for d in range(num_dev)]
        return [np.flatnonzero(self.groups == g) for g in range(int(self.groups.max()) + 1)]


def _column_costs(w: Weights, num_x: int, usable_x: np.ndarray, usable_y: np.ndarray) -> np.ndarray:
    node = w.node_w.copy()
    node[0] += w.upload_w
    node[-1] += w.return_w
    costs = np.concatenate([node.ravel(), w.arc_w.ravel()])
    usable = np.concatenate([usable_x, usable_y])
    costs[~usable] = 0.0  # those columns are fixed at 0; keep inf out of the matrix
    return costs


def _indices(allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The columns of x (L, D) and of y (L-1, D, D)."""
    num_blocks, num_dev = allowed.shape
    num_x = num_blocks * num_dev
    x = np.arange(num_x).reshape(num_blocks, num_dev)
    y = num_x + np.arange((num_blocks - 1) * num_dev * num_dev).reshape(num_blocks - 1, num_dev, num_dev)
    return x, y


def _structure(spec: MilpSpec, rows: _Rows) -> tuple[np.ndarray, np.ndarray]:
    num_blocks, num_dev = spec.allowed.shape
    x, y = _indices(spec.allowed)
    usable_y = (spec.allowed[:-1, :, None] & spec.allowed[1:, None, :] & spec.connected[None]).ravel()
    for b in range(num_blocks):
        rows.add(x[b], np.ones(num_dev), 1.0, 1.0)
    for b in range(num_blocks - 1):
        for d in range(num_dev):
            rows.add(np.append(y[b, d, :], x[b, d]), np.append(np.ones(num_dev), -1.0), 0.0, 0.0)
            rows.add(np.append(y[b, :, d], x[b + 1, d]), np.append(np.ones(num_dev), -1.0), 0.0, 0.0)
    members = spec.members()
    group = np.arange(num_dev) if spec.groups is None else spec.groups
    off = group[:, None] != group[None, :]  # a hop between two devices (not two variants of one)
    if not spec.revisits:
        for cols in members:
            outside = np.setdiff1d(np.arange(num_dev), cols)
            entries = y[:, outside[:, None], cols[None, :]].ravel()
            rows.add(np.concatenate([entries, x[0, cols]]), np.ones(len(entries) + len(cols)), -_INF, 1.0)
    if spec.max_stages is not None:
        changes = y[:, off].ravel()
        rows.add(changes, np.ones(len(changes)), -_INF, spec.max_stages - 1.0)
    for d in spec.requires:
        cols = x[:, members[d]].ravel()
        rows.add(cols, np.ones(len(cols)), 1.0, _INF)
    return spec.allowed.ravel(), usable_y


def _bottleneck_rows(spec: MilpSpec, rows: _Rows, z: int | None, cap: float) -> None:
    """Device compute sums and link transfer sums, each <= z (or <= cap without z)."""
    assert spec.bottleneck is not None
    compute, times, source, sink = spec.bottleneck
    num_dev = spec.allowed.shape[1]
    x, y = _indices(spec.allowed)
    extra_col = [] if z is None else [z]
    extra_val = [] if z is None else [-1.0]
    upper = cap if z is None else 0.0
    members = spec.members()
    for d, g in enumerate(members):
        cols, vals = [x[:, g].ravel()], [np.where(spec.allowed[:, g], compute[:, g], 0.0).ravel()]
        if spec.arc_busy is not None:  # compressing on the way out, restoring on the way in
            out = np.setdiff1d(np.arange(num_dev), g)  # hops inside a device keep nobody busy
            cols += [y[:, g[:, None], out[None, :]].ravel(), y[:, out[:, None], g[None, :]].ravel()]
            vals += [spec.arc_busy[0][:, g[:, None], out[None, :]].ravel(),
                     spec.arc_busy[1][:, out[:, None], g[None, :]].ravel()]
        if spec.upload_busy is not None and d == source:  # compressing the input for another device
            away = np.setdiff1d(np.arange(num_dev), g)
            cols.append(x[0, away])
            vals.append(spec.upload_busy[away])
        v = np.concatenate(vals)
        v[~np.isfinite(v)] = 0.0  # columns fixed at 0 anyway
        rows.add(np.append(np.concatenate(cols), extra_col), np.append(v, extra_val), -_INF, upper)
    for d, src in enumerate(members):
        for e, dst in enumerate(members):
            if d == e or not spec.connected[np.ix_(src, dst)].any():
                continue
            pair = (slice(None), src[:, None], dst[None, :])
            cols, vals = [y[pair].ravel()], [times.arc_w[pair].ravel()]
            if d == source:
                cols.append(x[0, dst])
                vals.append(times.upload_w[dst])
            if sink is not None and e == sink:
                cols.append(x[-1, src])
                vals.append(times.return_w[src])
            v = np.concatenate(vals)
            v[~np.isfinite(v)] = 0.0  # columns fixed at 0 anyway
            rows.add(
                np.concatenate([*map(np.asarray, cols), extra_col]).astype(np.int32),
                np.append(v, extra_val),
                -_INF,
                upper,
            )
    if z is not None:
        _bottleneck_cuts(spec, rows, x, y, z)


def _bottleneck_cuts(spec: MilpSpec, rows: _Rows, x: np.ndarray, y: np.ndarray, z: int) -> None:
    """Valid rows that tighten the relaxation: every block's compute and every cut's transfer <= z.

    Implied by the sums for integer plans, but a fractional plan spreads a block
    over devices and averages the sums down; these keep each block's own cost.
    """
    compute, times, _, _ = spec.bottleneck  # type: ignore[misc]
    for b in range(spec.allowed.shape[0]):
        vals = np.where(spec.allowed[b], compute[b], 0.0)
        rows.add(np.append(x[b], z), np.append(vals, -1.0), -_INF, 0.0)
    for b in range(spec.allowed.shape[0] - 1):
        vals = np.where(np.isfinite(times.arc_w[b]), times.arc_w[b], 0.0).ravel()
        rows.add(np.append(y[b].ravel(), z), np.append(vals, -1.0), -_INF, 0.0)


@dataclass
class MilpResult:
    """Assignments found, best first, each with what its solve proved (:class:`.proof.Proof`)."""

    found: list[tuple[list[int], Proof]]
    timed_out: bool


def _quiet_highs() -> highspy.Highs:
    """A Highs instance that prints nothing.

    highspy 1.16 prints its banner to the C-level stdout while constructing, before
    any option can be set, which would corrupt `splitinfer plan --json` output.
    """
    with _STDOUT_LOCK:
        sys.stdout.flush()
        saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            h = highspy.Highs()
            h.setOptionValue("output_flag", False)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
    return h


def _build(spec: MilpSpec) -> tuple[highspy.Highs, int, bool]:
    num_blocks, num_dev = spec.allowed.shape
    num_x = num_blocks * num_dev
    num_y = (num_blocks - 1) * num_dev * num_dev
    rows = _Rows([], [], [], [])
    usable_x, usable_y = _structure(spec, rows)
    x, y = _indices(spec.allowed)
    peaks, binary = add_memory_rows(rows, spec.memory, spec.allowed, spec.members(), spec.capacity_bytes,
                                    spec.revisits, x, y, num_x + num_y)  # after x and y
    usable = np.concatenate([usable_x, usable_y])
    num_cols = num_x + num_y + len(peaks) + (1 if spec.objective is None else 0)
    z = num_cols - 1 if spec.objective is None else None
    if spec.bottleneck is not None and (z is not None or math.isfinite(spec.bottleneck_cap_s)):
        _bottleneck_rows(spec, rows, z, spec.bottleneck_cap_s)
    for weights, bound in spec.bounds:
        costs = _column_costs(weights, num_x, usable_x, usable_y)
        rows.add(np.arange(num_x + num_y), costs, -_INF, bound)
    cost = np.zeros(num_cols)
    if spec.objective is not None:
        cost[: num_x + num_y] = _column_costs(spec.objective, num_x, usable_x, usable_y)
    else:
        cost[z] = 1.0
    lp = highspy.HighsLp()
    lp.num_col_ = num_cols
    lp.num_row_ = len(rows.lower)
    lp.col_cost_ = cost
    lp.col_lower_ = np.zeros(num_cols)
    lp.col_upper_ = np.concatenate([usable.astype(np.float64), peaks, [_INF] * (z is not None)])
    lp.row_lower_ = np.array(rows.lower)
    lp.row_upper_ = np.array(rows.upper)
    lengths = np.array([len(c) for c in rows.cols])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    lp.a_matrix_.index_ = np.concatenate(rows.cols).astype(np.int32)
    lp.a_matrix_.value_ = np.concatenate(rows.vals)
    integrality = [highspy.HighsVarType.kInteger] * num_x + [highspy.HighsVarType.kContinuous] * (
        num_cols - num_x
    )
    for col in binary:
        integrality[col] = highspy.HighsVarType.kInteger
    lp.integrality_ = integrality
    h = _quiet_highs()
    h.setOptionValue("mip_rel_gap", 0.0)
    h.setOptionValue("mip_abs_gap", 0.0)
    h.setOptionValue("mip_feasibility_tolerance", 1e-9)
    h.setOptionValue("primal_feasibility_tolerance", 1e-9)
    h.setOptionValue("random_seed", 0)
    if num_cols < SMALL_MODEL:
        h.setOptionValue("presolve", "off")  # cheap without it, and see solve_milp on presolve
    h.passModel(lp)
    return h, num_x, rows.empty_infeasible


def solve_milp(
    spec: MilpSpec,
    k: int,
    accept: Callable[[list[int]], bool],
    *,
    time_limit_s: float = 60.0,
    max_rejects: int = 50,
) -> MilpResult:
    """Up to k best assignments that ``accept`` (the exact check) agrees with.

    Each comes with its solve's :class:`.proof.Proof`: proven optimal, or, for the last one when
    the time limit stopped the search, HiGHS's dual bound (the k-th solve has the k - 1 answers
    before it cut off, so its bound is on the best plan outside them).
    """
    num_blocks, num_dev = spec.allowed.shape
    h, num_x, empty_infeasible = _build(spec)
    if empty_infeasible:
        return MilpResult([], False)
    h.setOptionValue("time_limit", float(time_limit_s))
    found: list[tuple[list[int], Proof]] = []
    rejects = 0
    timed_out = False
    x = np.arange(num_x).reshape(num_blocks, num_dev)
    while len(found) < k:
        h.run()
        status = h.getModelStatus()
        if status == highspy.HighsModelStatus.kInfeasible and h.getOptionValue("presolve") != "off":
            # HiGHS 1.15's presolve has called feasible models infeasible: confirm without it.
            h.setOptionValue("presolve", "off")
            h.run()
            status = h.getModelStatus()
        if status == highspy.HighsModelStatus.kTimeLimit:
            timed_out = True
        elif status != highspy.HighsModelStatus.kOptimal:
            break
        if h.getInfo().primal_solution_status != highspy.kSolutionStatusFeasible:
            break
        values = np.asarray(h.getSolution().col_value[:num_x]).reshape(num_blocks, num_dev)
        if values.size == 0 or not np.all(np.isfinite(values)):
            break
        assignment = [int(d) for d in np.argmax(values, axis=1)]
        if accept(assignment):
            bound = float(h.getInfo().mip_dual_bound)  # -inf when stopped before any bound
            found.append((assignment, Proof(not timed_out, bound if math.isfinite(bound) else None)))
        else:
            rejects += 1
            if rejects > max_rejects:
                break
        cols = x[np.arange(num_blocks), assignment].astype(np.int32)
        h.addRow(-_INF, num_blocks - 1.0, num_blocks, cols, np.ones(num_blocks))
        if timed_out:
            break
    return MilpResult(found, timed_out)


def spec_for(
    inst: Instance,
    cons: Constraints,
    allowed: np.ndarray,
    revisits: bool,
    objective: str,
    extra_bounds: Sequence[tuple[str, float]] = (),
) -> MilpSpec:
    """The MILP of an objective ('latency', 'energy', 'upload' or 'throughput') under ``cons``.

    ``extra_bounds``: more (figure, upper bound) rows, e.g. ("latency", 1.5).
    """
    figures: dict[str, Callable[[Instance, np.ndarray], Weights]] = {
        "latency": latency_weights,
        "energy": energy_weights,
        "upload": upload_weights,
    }
    bounds = [
        (name, value)
        for name, value in (
            ("latency", cons.max_latency_s),
            ("energy", cons.max_energy_j),
            ("upload", cons.max_upload_bytes),
        )
        if value is not None
    ]
    bounds += list(extra_bounds)
    cap = throughput_cap_s(cons.min_throughput_rps)
    times = link_weights(inst, allowed)
    bottleneck, arc_busy = None, None
    if objective == "throughput" or math.isfinite(cap):
        compute = np.where(allowed, times.node_w, 0.0)  # blocks and the joins after them
        bottleneck = (compute, dataclasses.replace(times, arc_w=times.links()), inst.source, inst.sink)
        if times.end_w is not None:  # a stage's end gives its last join back: the sender's busy time
            num_dev = inst.num_devices
            ends = np.broadcast_to(times.end_w[:, :, None], (len(times.end_w), num_dev, num_dev))
            arc_busy = (ends, np.zeros_like(ends))
    connected = ~np.isnan(inst.link_bandwidth_bps)
    return MilpSpec(
        objective=None if objective == "throughput" else figures[objective](inst, allowed),
        allowed=allowed,
        connected=connected,
        revisits=revisits,
        max_stages=cons.max_stages,
        requires=[inst.names.index(d) for d in cons.requires],
        memory=StageMemory.of(inst),
        capacity_bytes=inst.capacity_bytes,
        bottleneck=bottleneck,
        bottleneck_cap_s=cap,
        bounds=[(figures[name](inst, allowed), float(value)) for name, value in bounds],
        arc_busy=arc_busy,
    )
