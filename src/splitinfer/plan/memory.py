"""A stage's memory need, as PipeEdge charges it: the one definition every solver plans with.

A stage (blocks i..j on one device) is one ONNX Runtime inference session with its own arena. It
holds its weights (the sum of ``weight_bytes[i..j]``), the activations of one run (its blocks run one
after another, so the largest of ``activation_bytes[i..j]``), and, for each of the ``in_flight``
requests it holds at once (the one it runs and those queued: PipeEdge's buffers + 1), the tensors
entering and leaving it: the model input if i is the first block, else cut i-1; the output if j is
the last block, else cut j. Raw cut bytes: a compressed hop is restored before the stage reads it.

A stage also holds its inner cut tensors (cuts i..j-1) in its arena, where each block measured alone
handed its output out: they spread a stage's working memory over more pages than its largest block
touches, the more the longer the stage, up to what the whole model's session touched beyond its
largest block (``held_cut_cap_bytes``, measured: profile/problem.py). vit_b16's blocks 30-31 touch
1.2 MB beyond block 30's, blocks 25-31 2.9 MB beyond their largest, the whole model 3.8 MB; a
convolution network's whole model about 1 MB, so its stages hardly grow. A device holds its stages'
inner cut bytes, at most the cap once per stage: one minimum per device (the MILP takes it with one
binary), with revisits at least what each stage's own minimum would sum to.

A device's need for running is the sum over the stages it hosts (with revisits, several).

Before it runs, a deploy creates each stage's session, and creating one holds more for a moment than it
keeps, in two ways the device's creation need takes the larger of:

- ONNX Runtime pre-packs a fully connected layer's weights, the original and the packed copy held
  together (vgg16 at resolution 128: its first such layer keeps 134 MB and holds 133 MB more while its
  session is created). Per block, ``created_bytes`` is what creating its session allocates and keeps
  (pre-packed, re-laid-out weights; not the pages mapped from the partition's file, which only a run
  reads) and ``moment_bytes`` what it holds beyond that for a moment. Sessions create their blocks'
  kernels in order, so when block b's moment comes, the blocks before it on the device hold what they
  created: the largest, over the device's blocks b, of their ``created_bytes`` up to b plus b's
  ``moment_bytes``;
- optimising a session's graph copies its weights (a convolution's into ONNX Runtime's blocked layout)
  while the originals are held, and those copies come and go before the first run: the device's blocks'
  ``weight_bytes`` with their ``shared_moment_bytes`` (each block's share of the moment of the whole
  model's session, profile/problem.py), all summed, with no activations.

A device needs the larger of running and creation, at most its capacity. Measured on this project's
machine: benchmarks/bench_memory.py.

Readers: :mod:`.cost` (:func:`device_needs`, the reference), the segment DP (:class:`SegmentNeeds`:
every start of a stage ending at one block at once), the MILP (:func:`add_memory_rows`, the exact
linearisation) and :mod:`.solve` (:func:`need_bound`: can memory bind at all).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from splitinfer.plan.problem import Instance


@dataclass(frozen=True, eq=False)
class StageMemory:
    """Per block, what a stage's need is made of."""

    weight_bytes: np.ndarray  # (L,)
    activation_bytes: np.ndarray  # (L,)
    enter_bytes: np.ndarray  # (L,) per request, held by a stage that starts at block b: input or cut b-1
    leave_bytes: np.ndarray  # (L,) per request, held by a stage that ends at block b: cut b or output
    in_flight: int
    created_bytes: np.ndarray  # (L,) what creating the block's session allocates and keeps
    moment_bytes: np.ndarray  # (L,) what creating it holds for a moment beyond that
    shared_moment_bytes: np.ndarray  # (L,) its share of the moment of a session of many blocks
    inner_bytes: np.ndarray  # (L-1,) cut b, held by a stage that goes on through it
    held_cap: float  # the most a stage holds of its inner cuts

    @classmethod
    def of(cls, inst: Instance) -> StageMemory:
        cuts = inst.cut_bytes.astype(np.float64)
        return cls(
            inst.weight_bytes,
            inst.activation_bytes,
            np.concatenate([[float(inst.input_bytes)], cuts]),
            np.concatenate([cuts, [float(inst.output_bytes)]]),
            inst.in_flight,
            inst.created_bytes,
            inst.moment_bytes,
            inst.shared_moment_bytes,
            cuts,
            inst.held_cut_cap_bytes,
        )

    def terms(self, first: int, last: int) -> tuple[float, float, float]:
        """What the need of one stage of blocks first..last is made of: its weights, its largest
        activation, and the buffers of the requests it holds."""
        weights = math.fsum(self.weight_bytes[first : last + 1].tolist())
        peak = float(self.activation_bytes[first : last + 1].max())
        buffers = float(self.enter_bytes[first]) + float(self.leave_bytes[last])
        return weights, peak, self.in_flight * buffers

    def held(self, stages: Sequence[tuple[int, int]]) -> float:
        """What one device's ``stages`` (first, last) hold of their inner cut tensors: their bytes, at
        most the cap per stage."""
        inner = math.fsum(float(self.inner_bytes[first:last].sum()) for first, last in stages)
        return min(len(stages) * self.held_cap, inner)

    def creation(self, blocks: Sequence[int]) -> float:
        """What creating the sessions of ``blocks`` (ascending: one device's) holds at its peak."""
        at = list(blocks)
        in_order = float((np.cumsum(self.created_bytes[at]) + self.moment_bytes[at]).max(initial=0.0))
        return max(in_order, math.fsum((self.weight_bytes[at] + self.shared_moment_bytes[at]).tolist()))

    def stage(self, first: int, last: int) -> float:
        """The need of one stage of blocks first..last, alone on its device."""
        running = sum(self.terms(first, last)) + self.held([(first, last)])
        return max(running, self.creation(range(first, last + 1)))


def device_needs(inst: Instance, runs: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """(D,) each device's need: the sum over the stages ``runs`` (device, first, last) puts on it, or
    creating their sessions where that is more."""
    mem = StageMemory.of(inst)
    parts: list[list[float]] = [[] for _ in range(inst.num_devices)]
    stages: list[list[tuple[int, int]]] = [[] for _ in range(inst.num_devices)]
    for d, first, last in runs:
        parts[d].append(sum(mem.terms(first, last)))
        stages[d].append((first, last))
    blocks = [sorted(b for i, j in s for b in range(i, j + 1)) for s in stages]
    return np.array([max(math.fsum(p) + mem.held(s), mem.creation(b))
                     for p, s, b in zip(parts, stages, blocks, strict=True)])


class SegmentNeeds:
    """``needs(j)[i, 0]``: the need of a stage of blocks i..j-1, for every start i < j at once (j, 1).

    Prefix sums of the weights and of the cuts (the inner ones held), a running maximum of the
    activations taken from the end, and the buffers of the stage's first and last cut; for its
    creation, prefix sums of what the blocks create and a running maximum, from the end, of that sum at
    each block plus its moment, and prefix sums of the weights with their shared moments: O(j) per end,
    for the segment DP's limits.
    """

    def __init__(self, mem: StageMemory) -> None:
        self._mem = mem
        self._prefix = np.concatenate([[0.0], np.cumsum(mem.weight_bytes)])
        self._inner = np.concatenate([[0.0], np.cumsum(mem.inner_bytes)])  # (L,): cuts before each block
        self._shared = np.concatenate([[0.0], np.cumsum(mem.weight_bytes + mem.shared_moment_bytes)])
        self._created = np.concatenate([[0.0], np.cumsum(mem.created_bytes)])
        # Creating block b: what blocks 0..b created, and b's moment.
        self._at = self._created[1:] + mem.moment_bytes

    def __call__(self, j: int) -> np.ndarray:
        m = self._mem
        peak = np.maximum.accumulate(m.activation_bytes[:j][::-1])[::-1]
        buffers = m.in_flight * (m.enter_bytes[:j] + m.leave_bytes[j - 1])
        held = np.minimum(m.held_cap, self._inner[j - 1] - self._inner[:j])  # cuts i..j-2
        run = self._prefix[j] - self._prefix[:j] + peak + buffers + held
        creation = np.maximum.accumulate(self._at[:j][::-1])[::-1] - self._created[:j]
        return np.maximum(np.maximum(run, creation), self._shared[j] - self._shared[:j])[:, None]


def need_bound(mem: StageMemory, allowed: np.ndarray, revisits: bool) -> np.ndarray:
    """(D,) at least any device's need under ``allowed`` (L, D): memory cannot bind where it fits.

    Every block allowed there counts its weights. One stage holds the largest activation and the
    largest entering and leaving buffers; several (revisits) hold distinct blocks' activations and
    distinct cuts' buffers, so their sums bound them; their inner cuts, at most every cut between two
    allowed blocks, and the cap per stage (one, or as many as the blocks allowed). Creating them holds at
    most what every allowed block creates and the largest moment, or every block's weights and shared
    moment.
    """
    a = allowed.astype(np.float64)
    weights = a.T @ mem.weight_bytes
    held = _held_bound(mem, allowed, revisits)

    def largest(values: np.ndarray) -> np.ndarray:
        return np.where(allowed, values[:, None], 0.0).max(axis=0)

    creation = np.maximum(a.T @ mem.created_bytes + largest(mem.moment_bytes),
                          a.T @ (mem.weight_bytes + mem.shared_moment_bytes))
    if revisits:
        buffers = a.T @ (mem.enter_bytes + mem.leave_bytes)
        return np.maximum(weights + a.T @ mem.activation_bytes + held + mem.in_flight * buffers, creation)
    buffers = largest(mem.enter_bytes) + largest(mem.leave_bytes)
    return np.maximum(weights + largest(mem.activation_bytes) + held + mem.in_flight * buffers, creation)


def _held_bound(mem: StageMemory, allowed: np.ndarray, revisits: bool) -> np.ndarray:
    """(D,) the most a device's stages hold of their inner cuts under ``allowed`` (L, D)."""
    inner = (allowed[:-1] & allowed[1:]).astype(np.float64).T @ mem.inner_bytes
    stages = allowed.sum(axis=0) if revisits else np.ones(allowed.shape[1])
    return np.minimum(stages * mem.held_cap, inner)


class Rows(Protocol):
    def add(self, cols: np.ndarray, vals: np.ndarray, lower: float, upper: float) -> None: ...


def add_memory_rows(
    rows: Rows,
    mem: StageMemory,
    allowed: np.ndarray,
    members: Sequence[np.ndarray],
    capacity: np.ndarray,
    revisits: bool,
    x: np.ndarray,
    y: np.ndarray,
    next_col: int,
) -> tuple[list[float], list[int]]:
    """Each device's need <= its capacity, as MILP rows over ``x`` (L, C) and ``y`` (L-1, C, C).

    A column is a device or a variant of one (``members``: the columns of each device); a stage stays
    on one column, so a stage on c starts at b exactly when ``x[b,c] - y[b-1,c,c]`` is 1 and ends
    when ``x[b,c] - y[b,c,c]`` is: the weights and the cut buffers are linear in x and y. The largest
    activation of each stage takes continuous columns, and what a device's stages hold of their inner
    cuts one continuous and one binary (:func:`_held_rows`): numbered from ``next_col``, their upper
    bounds are returned, and the binary ones' columns. See :func:`_one_stage` and :func:`_running_max`.
    Devices that cannot exceed their capacity get no row.
    """
    num_blocks = x.shape[0]
    dev_allowed = np.stack([allowed[:, g].any(axis=1) for g in members], axis=1)
    bound = need_bound(mem, dev_allowed, revisits)
    k = float(mem.in_flight)
    upper: list[float] = []
    binary: list[int] = []
    for d, g in enumerate(members):
        if not bound[d] > capacity[d]:
            continue
        cols = [x[:, g].ravel()]  # (b, c) row-major: one value per block, repeated per column
        vals = [np.repeat(mem.weight_bytes + k * (mem.enter_bytes + mem.leave_bytes), len(g))]
        if num_blocks > 1:  # a stage going on through cut b neither leaves at b nor enters at b + 1
            cols.append(y[:, g, g].ravel())
            vals.append(np.repeat(-k * (mem.leave_bytes[:-1] + mem.enter_bytes[1:]), len(g)))
        if mem.activation_bytes.any():
            charge = (_running_max if revisits else _one_stage)(rows, mem, allowed, g, x, next_col, upper)
            cols.append(np.array(charge, dtype=np.int64))
            vals.append(np.ones(len(charge)))
        held = _held_rows(rows, mem, dev_allowed[:, d], g, x, y, next_col, upper, binary)
        cols.append(np.array(held, dtype=np.int64))
        vals.append(np.ones(len(held)))
        rows.add(np.concatenate(cols), np.concatenate(vals), -math.inf, float(capacity[d]))
        _creation_rows(rows, mem, dev_allowed[:, d], g, x, float(capacity[d]))
    return upper, binary


def _held_rows(rows: Rows, mem: StageMemory, on: np.ndarray, g: np.ndarray, x: np.ndarray, y: np.ndarray,
               next_col: int, upper: list[float], binary: list[int]) -> list[int]:
    """What a device's stages hold of their inner cuts, min(stages x cap, their bytes), as a column h
    (returned; none where it holds nothing) that one binary z bounds by either side:
    h >= I - M1 z and h >= cap S - M2 (1 - z), where I is the bytes of the cuts the device's columns go
    on through (y[b,c,c]) and S its stages (each column's x less its y: a stage starts where a block is
    on c and the one before is not); M1 and M2 bound I and cap S (a stage per allowed block at most).
    A minimum is not convex, hence the binary: one per device whose memory binds."""
    pairs = np.flatnonzero(on[:-1] & on[1:])
    inner_max = float(mem.inner_bytes[pairs].sum())
    if mem.held_cap <= 0 or inner_max <= 0:
        return []
    stages_max = float(on.sum()) * mem.held_cap
    h, z = next_col + len(upper), next_col + len(upper) + 1
    upper += [min(inner_max, stages_max), 1.0]
    binary.append(z)
    through = y[pairs[:, None], g[None, :], g[None, :]].ravel()  # (pair, column) row-major
    rows.add(np.concatenate([[h, z], through]),
             np.concatenate([[1.0, inner_max], -np.repeat(mem.inner_bytes[pairs], len(g))]), 0.0, math.inf)
    blocks = np.flatnonzero(on)
    starts = x[blocks][:, g].ravel()
    continues = y[np.arange(len(on) - 1)[:, None], g[None, :], g[None, :]].ravel()
    cap = mem.held_cap
    rows.add(np.concatenate([[h, z], starts, continues]),
             np.concatenate([[1.0, -stages_max], np.full(len(starts), -cap), np.full(len(continues), cap)]),
             -stages_max, math.inf)
    return [h]


def _creation_rows(rows: Rows, mem: StageMemory, on: np.ndarray, g: np.ndarray, x: np.ndarray,
                   capacity: float) -> None:
    """The device's creation need <= its capacity: for each block b with a moment, what the device's
    blocks up to b create plus b's moment if b is there (:meth:`StageMemory.creation`), and all they
    create (the blocks without one). A row whose b is elsewhere still holds: the device's last block
    before b has a moment of at least 0. And the device's blocks' weights with their shared moments."""
    blocks = np.flatnonzero(on)
    if mem.shared_moment_bytes[blocks].any():
        shared = mem.weight_bytes[blocks] + mem.shared_moment_bytes[blocks]
        rows.add(x[blocks][:, g].ravel(), np.repeat(shared, len(g)), -math.inf, capacity)
    ends = [(b, mem.moment_bytes[b]) for b in blocks[mem.moment_bytes[blocks] > 0]]
    if mem.created_bytes[blocks].any():
        ends.append((blocks[-1], 0.0))
    for b, moment in ends:
        before = blocks[blocks <= b]
        cols = x[before][:, g].ravel()
        vals = np.repeat(mem.created_bytes[before], len(g))
        vals[-len(g):] += moment
        rows.add(cols, vals, -math.inf, capacity)


def _one_stage(
    rows: Rows, mem: StageMemory, allowed: np.ndarray, g: np.ndarray, x: np.ndarray, next_col: int,
    upper: list[float],
) -> list[int]:
    """No revisits: the device hosts one stage, so one column a >= activation[b] x[b,c] is its peak."""
    act = mem.activation_bytes
    where = [(b, c) for c in g for b in np.flatnonzero(allowed[:, c] & (act > 0))]
    a = next_col + len(upper)
    upper.append(float(max((act[b] for b, _ in where), default=0.0)))
    for b, c in where:
        rows.add(np.array([a, x[b, c]]), np.array([1.0, -act[b]]), 0.0, math.inf)
    return [a]


def _running_max(
    rows: Rows, mem: StageMemory, allowed: np.ndarray, g: np.ndarray, x: np.ndarray, next_col: int,
    upper: list[float],
) -> list[int]:
    """Revisits: each stage's own peak, summed, through r[b,c] and its rises p[b,c] >= 0.

    r[b,c] >= activation[b] x[b,c] and r[b,c] <= A x[b,c] (A: the largest activation allowed on c),
    so r is 0 off the column; p[b,c] >= r[b,c] - r[b-1,c]. Over a stage i..j, p[i] + ... + p[b] >=
    r[b] - r[i-1] = r[b] >= activation[b] for every b in it, so its p's sum to at least its peak, and
    r = the running peak with p = its rises attains it: the device's p's sum to the sum of its stages'
    peaks, exactly. 2 columns and at most 3 rows per allowed (block, column).
    """
    act = mem.activation_bytes
    charge: list[int] = []
    for c in g:
        on = allowed[:, c]
        top = float(act[on].max()) if on.any() else 0.0
        if top == 0:
            continue
        prev = None
        for b in range(len(act)):
            if not on[b]:
                prev = None  # r there is 0
                continue
            r, p = next_col + len(upper), next_col + len(upper) + 1
            upper += [top, top]
            if act[b] > 0:
                rows.add(np.array([r, x[b, c]]), np.array([1.0, -act[b]]), 0.0, math.inf)
            rows.add(np.array([r, x[b, c]]), np.array([1.0, -top]), -math.inf, 0.0)
            rise = [p, r] + ([] if prev is None else [prev])
            rows.add(np.array(rise), np.array([1.0, -1.0, 1.0][: len(rise)]), 0.0, math.inf)
            charge.append(p)
            prev = r
    return charge
