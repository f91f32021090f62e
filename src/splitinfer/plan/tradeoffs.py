"""Trade-offs: a precision per stage and a compression per hop, chosen together with the split.

Plain numbers in, as for :class:`~splitinfer.plan.problem.Problem`. For each precision besides
fp32 (a :class:`PrecisionOption`): every block's seconds on every device and its *quality cost*.
For each compression besides none (a :class:`CompressionOption`): every cut's bytes on the wire,
the seconds to compress it on each sending device and to restore it on each receiving device, and
its quality cost. A quality cost is the drop of top-1 agreement with the fp32 model when only that
block (or only that cut) is changed, measured on calibration data (``profile/sensitivity.py``).
The model is additive: a plan's quality cost is the sum over its stages' blocks and its hops, and
``max_quality_drop`` bounds that sum. The runtime measures the chosen plan's real drop afterwards
(``runtime/repair.py``) and re-solves without a combination that broke the budget.

The solvers work on *variants*: a variant is a device with a precision and the compression of the
hop that leaves it. A stage runs on one variant; two variants of one device never follow each other
(a stage has one precision, and a hop inside a device moves nothing), so stages are still the runs
of equal devices and every constraint about devices (revisits, memory, stages, requires) reads as
before.

The upload (the model input, from the source to the first stage) may be compressed too: towards each
device it takes the fastest compression whose quality cost on the input was measured as zero (an
image's pixels survive int8, lz4 is lossless), or none. Only those: a choice that spends no quality
budget is exact without a variable of its own. The return travels raw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from splitinfer.errors import PlanError
from splitinfer.plan.problem import Instance
from splitinfer.plan.weights import Weights, busy_over_idle, with_joins

BASE_PRECISION = "fp32"
NO_COMPRESSION = "none"


@dataclass(frozen=True)
class PrecisionOption:
    """One precision a stage may run at: seconds per device and block, quality cost per block."""

    name: str
    compute_s: Mapping[str, Sequence[float | None]]  # None or inf: cannot run there at this precision
    quality_cost: Sequence[float]


@dataclass(frozen=True)
class CompressionOption:
    """One compression a cut hop may use: bytes, seconds per device and quality cost, per cut."""

    name: str
    cut_bytes: Sequence[int]  # on the wire
    compress_s: Mapping[str, Sequence[float]]  # on the sending device; a device not listed: 0
    decompress_s: Mapping[str, Sequence[float]]  # on the receiving device; a device not listed: 0
    quality_cost: Sequence[float]
    # The model input on the upload: bytes on the wire (None: the upload was not measured), seconds
    # on the source and on the receiving device, quality cost.
    input_bytes: int | None = None
    input_compress_s: Mapping[str, float] = field(default_factory=dict)
    input_decompress_s: Mapping[str, float] = field(default_factory=dict)
    input_quality_cost: float = 0.0


@dataclass(frozen=True)
class Tradeoffs:
    """What the planner may trade: precisions, compressions, and the quality budget (None: any)."""

    precisions: tuple[PrecisionOption, ...] = ()
    compressions: tuple[CompressionOption, ...] = ()
    max_quality_drop: float | None = None
    # Plans (as describe_stages writes them) whose measured quality broke the budget although the
    # additive model said they hold (the repair loop, runtime/repair.py): never chosen again.
    excluded: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "precisions", tuple(self.precisions))
        object.__setattr__(self, "compressions", tuple(self.compressions))
        object.__setattr__(self, "excluded", frozenset(self.excluded))


@dataclass(frozen=True, eq=False)
class Variants:
    """A prepared problem with trade-offs: dense arrays over variants (V) instead of devices."""

    inst: Instance  # the devices' problem
    device: np.ndarray  # (V,) the device of each variant
    precision: tuple[str, ...]  # (V,)
    compression: tuple[str, ...]  # (V,) of the hop that leaves a stage on this variant
    compute_s: np.ndarray  # (L, V), inf: cannot run
    node_quality: np.ndarray  # (L, V)
    wire_s: np.ndarray  # (L-1, V, V) latency + bytes / bandwidth; 0 on the diagonal, inf: not allowed
    hop_bytes: np.ndarray  # (L-1, V, V)
    compress_s: np.ndarray  # (L-1, V, V) on the sender
    decompress_s: np.ndarray  # (L-1, V, V) on the receiver
    hop_quality: np.ndarray  # (L-1, V, V)
    upload_s: np.ndarray  # (V,) on the link: latency + bytes / bandwidth
    return_s: np.ndarray  # (V,) inf where the variant's compression is not none (the return is raw)
    upload_compression: tuple[str, ...] = ()  # (V,) how the input travels to a first stage on v
    upload_bytes: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (V,) on the wire
    upload_compress_s: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (V,) on the source
    upload_decompress_s: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (V,) on v's device

    @property
    def num_variants(self) -> int:
        return len(self.device)

    def name(self, v: int) -> str:
        return f"{self.inst.names[self.device[v]]}:{self.precision[v]}>{self.compression[v]}"


def _costs(values: Sequence[float], n: int, where: str) -> np.ndarray:
    if len(values) != n:
        raise PlanError(
            f"{where} has {len(values)} entries, expected {n}", f"give one value per {where.split('.')[-1]}"
        )
    out = np.array([float(v) if v is not None else math.inf for v in values], dtype=np.float64)
    if np.isnan(out).any() or (out < 0).any():
        raise PlanError(f"{where} has a negative or NaN value", "give numbers >= 0")
    return out


def _per_device(
    table: Mapping[str, Sequence[float | None]], inst: Instance, n: int, where: str, missing: float
) -> np.ndarray:
    out = np.full((n, inst.num_devices), missing)
    for name, values in table.items():
        out[:, inst.index(name, where)] = _costs(values, n, f"{where}[{name!r}]")
    return out


def _check_names(tradeoffs: Tradeoffs) -> None:
    for kind, options, base in (
        ("precision", tradeoffs.precisions, BASE_PRECISION),
        ("compression", tradeoffs.compressions, NO_COMPRESSION),
    ):
        names = [o.name for o in options]
        if base in names or len(set(names)) != len(names):
            raise PlanError(
                f"{kind} options {names} repeat a name or list {base!r}",
                f"list each {kind} once; {base!r} is always an option",
            )
    budget = tradeoffs.max_quality_drop
    if budget is not None and (isinstance(budget, bool) or not math.isfinite(budget) or budget < 0):
        raise PlanError(f"max_quality_drop is {budget!r}", "give a fraction >= 0, e.g. 0.01 for 1%")


def expand(inst: Instance, tradeoffs: Tradeoffs) -> Variants:
    """The variants of ``inst``'s devices under ``tradeoffs``; PlanError names a bad field."""
    _check_names(tradeoffs)
    num_blocks, num_dev = inst.num_blocks, inst.num_devices
    num_cuts = num_blocks - 1
    computes = [inst.compute_s]
    node_q = [np.zeros(num_blocks)]
    for p in tradeoffs.precisions:
        where = f"precision {p.name!r}"
        computes.append(_per_device(p.compute_s, inst, num_blocks, f"{where} compute_s", math.inf))
        node_q.append(_costs(p.quality_cost, num_blocks, f"{where} quality_cost.block"))
    raw = inst.cut_bytes.astype(np.float64)
    zeros = np.zeros((num_cuts, num_dev))
    hops = [(raw, zeros, zeros, np.zeros(num_cuts))]
    for c in tradeoffs.compressions:
        where = f"compression {c.name!r}"
        hops.append(
            (
                _costs(c.cut_bytes, num_cuts, f"{where} cut_bytes.cut"),
                _per_device(c.compress_s, inst, num_cuts, f"{where} compress_s", 0.0),
                _per_device(c.decompress_s, inst, num_cuts, f"{where} decompress_s", 0.0),
                _costs(c.quality_cost, num_cuts, f"{where} quality_cost.cut"),
            )
        )
    precisions = [BASE_PRECISION, *(p.name for p in tradeoffs.precisions)]
    compressions = [NO_COMPRESSION, *(c.name for c in tradeoffs.compressions)]
    table = [
        (d, p, c) for d in range(num_dev) for p in range(len(precisions)) for c in range(len(compressions))
    ]
    device = np.array([d for d, _, _ in table])
    prec = np.array([p for _, p, _ in table])
    comp = np.array([c for _, _, c in table])
    compute = np.stack([computes[p][:, d] for d, p, _ in table], axis=1)
    compute = np.where(
        np.isfinite(inst.compute_s[:, device]), compute, math.inf
    )  # fp32 rules where a block runs
    node_quality = np.stack([node_q[p] for p in prec], axis=1)
    nbytes = np.stack([hops[c][0] for c in comp], axis=1)  # (L-1, V) bytes leaving each variant
    lat = inst.link_latency_s[device[:, None], device[None, :]]
    bw = inst.link_bandwidth_bps[device[:, None], device[None, :]]
    with np.errstate(invalid="ignore"):
        wire = lat[None] + nbytes[:, :, None] / bw[None]
    wire = np.where(np.isnan(wire), math.inf, wire)
    same_device = device[:, None] == device[None, :]
    wire[:, same_device] = math.inf  # a stage has one precision; a hop inside a device moves nothing
    v_idx = np.arange(len(table))
    wire[:, v_idx, v_idx] = 0.0
    hop_bytes = np.where(same_device[None], 0.0, np.broadcast_to(nbytes[:, :, None], wire.shape))
    hop = ~same_device[None]
    send = np.stack([hops[c][1][:, d] for d, _, c in table], axis=1)  # (L-1, V) on the sender
    compress = np.where(hop, send[:, :, None], 0.0)
    recv = np.stack([hops[c][2] for c in comp], axis=1)[:, :, device]  # (L-1, V, V) on the receiver
    decompress = np.where(hop, recv, 0.0)
    quality = np.where(hop, np.stack([hops[c][3] for c in comp], axis=1)[:, :, None], 0.0)
    back = np.where(comp == 0, inst.return_s[device], math.inf)
    arrays = (compute, node_quality, wire, hop_bytes, compress, decompress, quality)
    for arr in arrays:
        arr.setflags(write=False)
    upload = _uploads(inst, tradeoffs.compressions)
    return Variants(
        inst,
        device,
        tuple(precisions[p] for p in prec),
        tuple(compressions[c] for c in comp),
        *arrays,
        upload.wire_s[device],
        back,
        tuple(upload.names[d] for d in device),
        upload.num_bytes[device],
        upload.compress_s[device],
        upload.decompress_s[device],
    )


@dataclass(frozen=True)
class _Uploads:
    """Per device, how the model input reaches a first stage there."""

    names: list[str]
    wire_s: np.ndarray
    num_bytes: np.ndarray
    compress_s: np.ndarray  # on the source
    decompress_s: np.ndarray  # on the receiving device


def _uploads(inst: Instance, compressions: Sequence[CompressionOption]) -> _Uploads:
    """The fastest way to each device among raw and the compressions measured free on the input."""
    src, num_dev = inst.source, inst.num_devices
    best = _Uploads(
        [NO_COMPRESSION] * num_dev,
        inst.upload_s.astype(np.float64).copy(),
        np.full(num_dev, float(inst.input_bytes)),
        np.zeros(num_dev),
        np.zeros(num_dev),
    )
    best.num_bytes[src] = 0.0
    for c in compressions:
        if c.input_bytes is None or c.input_quality_cost > 0:
            continue
        where = f"compression {c.name!r} input"
        size = _costs([c.input_bytes], 1, f"{where}_bytes.input")[0]
        on_source = _costs([c.input_compress_s.get(inst.names[src], 0.0)], 1, f"{where}_compress_s.input")[0]
        for d in range(num_dev):
            if d == src or not math.isfinite(inst.upload_s[d]):
                continue
            restore = _costs(
                [c.input_decompress_s.get(inst.names[d], 0.0)], 1, f"{where}_decompress_s.input"
            )[0]
            # the raw upload's time less its bytes' share, plus the compressed bytes' share
            wire = inst.upload_s[d] + (size - inst.input_bytes) / inst.link_bandwidth_bps[src, d]
            if wire + on_source + restore < best.wire_s[d] + best.compress_s[d] + best.decompress_s[d]:
                best.names[d] = c.name
                best.wire_s[d], best.num_bytes[d] = wire, size
                best.compress_s[d], best.decompress_s[d] = on_source, restore
    return best


def figure_weights(var: Variants, allowed: np.ndarray, figure: str) -> Weights:
    """Additive weights over variants: "latency" (s), "energy" (J), "upload" (bytes leaving the source)
    or "quality" (summed quality cost). ``allowed``: (L, V)."""
    node_allowed = allowed & np.isfinite(var.compute_s)
    codec = var.compress_s + var.decompress_s
    if figure == "latency":
        upload = var.upload_s + var.upload_compress_s + var.upload_decompress_s
        plain = Weights(
            np.where(node_allowed, var.compute_s, math.inf), var.wire_s + codec, upload, var.return_s
        )
        return with_joins(plain, var.inst.join_s[:, var.device])
    if figure == "quality":
        arc = np.where(np.isfinite(var.wire_s), var.hop_quality, math.inf)
        return Weights(
            np.where(node_allowed, var.node_quality, math.inf),
            arc,
            np.where(np.isfinite(var.upload_s), 0.0, math.inf),
            np.where(np.isfinite(var.return_s), 0.0, math.inf),
        )
    if figure == "upload":
        src = var.inst.source
        leaves = (var.device[:, None] == src) & (var.device[None, :] != src)
        arc = np.where(np.isfinite(var.wire_s), np.where(leaves[None], var.hop_bytes, 0.0), math.inf)
        upload = np.where(np.isfinite(var.upload_s), var.upload_bytes, math.inf)
        out = var.inst.output_bytes if var.inst.sink is not None and var.inst.sink != src else 0
        back = np.where(np.isfinite(var.return_s), np.where(var.device == src, float(out), 0.0), math.inf)
        return Weights(np.where(node_allowed, 0.0, math.inf), arc, upload, back)
    if figure == "energy":
        return _energy_weights(var, node_allowed)
    raise ValueError(figure)


def _energy_weights(var: Variants, node_allowed: np.ndarray) -> Weights:
    """Joules of the battery devices, as :func:`splitinfer.plan.weights.energy_weights` counts them,
    with compressing and restoring counted as the device's busy time (at its ``busy_w``: measured watts
    per block, ``Power.busy_w_blocks``, price its blocks and joins at every precision)."""
    inst = var.inst
    battery = [p if p is not None and p.battery else None for p in inst.power]
    idle_all = sum(p.idle_w for p in battery if p is not None)
    busy = np.array([p.busy_w - p.idle_w if p else 0.0 for p in battery])[var.device]
    block_busy, join_busy = (b[:, var.device] for b in busy_over_idle(inst))
    radio = np.array([p.radio_w - p.idle_w if p else 0.0 for p in battery])[var.device]
    per_byte = np.array([p.radio_j_per_byte if p else 0.0 for p in battery])[var.device]
    with np.errstate(invalid="ignore"):
        node = np.where(node_allowed, var.compute_s * (idle_all + block_busy), math.inf)
    with np.errstate(invalid="ignore"):
        arc = (
            var.wire_s * (idle_all + radio[:, None] + radio[None, :])[None]
            + var.hop_bytes * (per_byte[:, None] + per_byte[None, :])[None]
            + var.compress_s * (idle_all + busy)[None, :, None]
            + var.decompress_s * (idle_all + busy)[None, None, :]
        )
    arc = np.where(np.isfinite(var.wire_s), arc, math.inf)
    src = inst.source
    with np.errstate(invalid="ignore"):
        up_factor = idle_all + radio + (radio[var.device == src][0] if (var.device == src).any() else 0.0)
        upload = (
            var.upload_s * up_factor
            + var.upload_bytes * (per_byte + per_byte[var.device == src][0])
            + var.upload_compress_s * (idle_all + busy[var.device == src][0])
            + var.upload_decompress_s * (idle_all + busy)
        )
    local = idle_all * var.upload_s  # a hop within a device: its messaging, radios idle
    upload = np.where(np.isfinite(var.upload_s), np.where(var.device == src, local, upload), math.inf)
    if inst.sink is None:
        back = np.where(np.isfinite(var.return_s), 0.0, math.inf)
    else:
        at_sink = var.device == inst.sink
        with np.errstate(invalid="ignore"):
            back = var.return_s * (idle_all + radio + radio[at_sink][0]) + inst.output_bytes * (
                per_byte + per_byte[at_sink][0]
            )
        back = np.where(np.isfinite(var.return_s), np.where(at_sink, idle_all * var.return_s, back), math.inf)
    return with_joins(Weights(node, arc, upload, back), inst.join_s[:, var.device], idle_all + join_busy)
