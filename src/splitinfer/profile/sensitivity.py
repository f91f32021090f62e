"""Sensitivity: what each precision of each block, and each compression of each cut, costs in quality.

Measured alone, on calibration data: the model runs block by block on every calibration batch
(the reference, fp32, raw), then once more from each block with only that block quantised, and from
each cut with only that cut's tensors compressed and restored, and from the start with only the
model input compressed and restored (the upload). The *quality cost* of a change is
the fraction of rows whose top-1 class (the argmax of the model's first output along its last axis)
differs from the reference's: the drop of top-1 agreement that change alone causes. The planner
adds these costs up (``plan/tradeoffs.py``); the runtime measures the chosen plan's real drop.

The same pass gives what the device timings need: each block quantised (calibrated on the real
tensors that reach it) and one batch's real cut tensors, and each compression's bytes on the wire
per cut (the median over the batches: lossless ratios depend on the data).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from splitinfer.compression import Compressed, decompress, parse_compression, wire_bytes
from splitinfer.errors import InputError, ProfileError, SplitinferError
from splitinfer.graph.inference import create_inference_session
from splitinfer.graph.quantize import check_precision, quantize_model

log = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]
MAX_SAMPLES = 10_000


@dataclass
class Sensitivity:
    """Quality costs and what device timing needs, for the precisions and compressions asked for."""

    num_rows: int  # rows compared (calibration samples)
    block_quality: dict[str, list[float | None]]  # precision -> per block (None: could not quantise)
    quantized_blocks: dict[str, list[bytes | None]]  # precision -> per block partition
    cut_quality: dict[str, list[float]]  # compression -> per cut
    cut_bytes: dict[str, list[int]]  # compression -> per cut, on the wire for one batch (median)
    cut_tensors: list[dict[str, np.ndarray]]  # per cut: the first batch's real cut tensors
    # The model input as the upload carries it (compressed by the source, restored by the first stage).
    input_quality: dict[str, float] = dataclasses.field(default_factory=dict)  # compression -> cost
    input_bytes: dict[str, int] = dataclasses.field(default_factory=dict)  # compression -> bytes (median)
    input_tensors: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # the first batch


def _rows_top1(out: np.ndarray) -> np.ndarray:
    """Each row's top-1: the argmax along the last axis (scores), or the value itself (labels)."""
    arr = np.asarray(out)
    if arr.ndim <= 1:
        return arr.reshape(-1)
    return np.argmax(arr.reshape(-1, arr.shape[-1]), axis=1)


def compared_output(outputs: Sequence[tuple[str, str, Sequence[int | str | None]]]) -> str | None:
    """The output whose top-1 is compared: the first float output of class scores (rows x classes, at
    least 2 classes), as ``quality.agreement`` and the repair loop compare it; None if there is none.
    ``outputs``: (name, dtype, shape) of each model output."""
    for name, dtype, shape in outputs:
        one_class = len(shape) == 2 and isinstance(shape[1], int) and shape[1] < 2
        if dtype.startswith("float") and len(shape) == 2 and not one_class:
            return name
    return None


class _Chain:
    """The model's block partitions as ONNX Runtime inference sessions, run from any block on."""

    def __init__(self, block_bytes: Sequence[bytes], output: str) -> None:
        self.sessions = [create_inference_session(b) for b in block_bytes]
        self.output = output

    def run_from(
        self,
        start: int,
        values: dict[str, np.ndarray],
        first: object = None,
        keep: list[dict[str, np.ndarray]] | None = None,
    ) -> np.ndarray:
        """The first model output, running blocks ``start..`` on ``values`` (block ``start`` replaced by
        ``first`` if given); ``keep`` gets the values as they stand before each block."""
        values = dict(values)
        for b in range(start, len(self.sessions)):
            if keep is not None:
                keep.append(dict(values))
            session = first if (b == start and first is not None) else self.sessions[b]
            names = [o.name for o in session.get_outputs()]  # type: ignore[attr-defined]
            inputs = {i.name: values[i.name] for i in session.get_inputs()}  # type: ignore[attr-defined]
            values.update(zip(names, session.run(names, inputs), strict=True))  # type: ignore[attr-defined]
        return values[self.output]


def _batches(x: np.ndarray, input_shape: Sequence[int | str | None], limit: int) -> list[np.ndarray]:
    """Calibration samples in batches the model takes (its batch size when fixed, else 32)."""
    if not 1 <= limit <= MAX_SAMPLES:
        raise InputError(f"limit {limit} is outside 1..{MAX_SAMPLES}", "compare at most 10,000 samples")
    batch = input_shape[0] if input_shape and isinstance(input_shape[0], int) and input_shape[0] > 0 else 32
    x = x[:limit]
    if len(x) < batch:
        raise InputError(
            f"the calibration data has {len(x)} samples, the model takes batches of {batch}",
            f"give at least {batch} samples",
        )
    return [np.ascontiguousarray(x[i : i + batch]) for i in range(0, len(x) - len(x) % batch, batch)]


def measure_sensitivity(
    block_bytes: Sequence[bytes],
    cut_names: Sequence[Sequence[str]],
    input_name: str,
    input_shape: Sequence[int | str | None],
    output_name: str,
    x: np.ndarray,
    precisions: Sequence[str] = (),
    compressions: Sequence[str] = (),
    *,
    limit: int = 256,
    progress: Progress | None = None,
) -> Sensitivity:
    """Quality costs of ``precisions`` per block and ``compressions`` per cut on samples ``x``.

    ``block_bytes``: the model's block partitions; ``cut_names[c]``: the tensors crossing cut c
    (between block c and c+1); the model has one input (``input_name``, fed batches of ``x``) and
    its first output ``output_name`` is compared.
    """
    for p in precisions:
        check_precision(p, "precision")
    codecs = {name: parse_compression(name) for name in compressions}
    batches = _batches(x, input_shape, limit)
    chain = _Chain(block_bytes, output_name)
    num_blocks = len(block_bytes)
    before: list[list[dict[str, np.ndarray]]] = []  # per batch, the values before each block
    reference = []
    for xb in batches:
        keep: list[dict[str, np.ndarray]] = []
        reference.append(_rows_top1(chain.run_from(0, {input_name: xb}, keep=keep)))
        before.append(keep)
    rows = sum(len(r) for r in reference)

    def cost(run: Callable[[int], np.ndarray]) -> float:
        return sum(int(np.sum(_rows_top1(run(i)) != reference[i])) for i in range(len(batches))) / rows

    total = len(precisions) * num_blocks + len(codecs) * num_blocks
    done = 0

    def step(what: str) -> None:
        nonlocal done
        if progress:
            progress(done, total, what)
        done += 1

    block_quality: dict[str, list[float | None]] = {}
    quantized: dict[str, list[bytes | None]] = {}
    for p in precisions:
        block_quality[p], quantized[p] = [], []
        for b in range(num_blocks):
            step(f"block {b} in {p}")
            part = _quantize_block(
                block_bytes[b], p, [_inputs(chain, b, before[i][b]) for i in range(len(batches))], b
            )
            quantized[p].append(part)
            if part is None:
                block_quality[p].append(None)
                continue
            session = create_inference_session(part)
            block_quality[p].append(cost(lambda i, b=b, s=session: chain.run_from(b, before[i][b], s)))
    cut_quality: dict[str, list[float]] = {name: [] for name in codecs}
    cut_bytes: dict[str, list[int]] = {name: [] for name in codecs}
    for name, codec in codecs.items():
        for c in range(num_blocks - 1):
            step(f"cut {c} with {name}")
            sent = [{n: codec.carry(before[i][c + 1][n]) for n in cut_names[c]} for i in range(len(batches))]
            cut_bytes[name].append(int(np.median([sum(_bytes(v) for v in one.values()) for one in sent])))

            def resume(i: int, c: int = c, sent=sent) -> np.ndarray:
                values = {**before[i][c + 1], **{n: _restored(v) for n, v in sent[i].items()}}
                return chain.run_from(c + 1, values)

            cut_quality[name].append(cost(resume) if codec.lossy else 0.0)  # lossless: bit-exact
    input_quality: dict[str, float] = {}
    input_bytes: dict[str, int] = {}
    for name, codec in codecs.items():
        step(f"the input with {name}")
        carried = [codec.carry(xb) for xb in batches]
        input_bytes[name] = int(np.median([_bytes(v) for v in carried]))
        restart = lambda i, sent=carried: chain.run_from(0, {input_name: _restored(sent[i])})  # noqa: E731
        input_quality[name] = cost(restart) if codec.lossy else 0.0
    tensors = [{n: before[0][c + 1][n] for n in cut_names[c]} for c in range(num_blocks - 1)]
    if progress:
        progress(total, total, "done")
    return Sensitivity(rows, block_quality, quantized, cut_quality, cut_bytes, tensors, input_quality,
                       input_bytes, {input_name: batches[0]})


def _restored(value: np.ndarray | Compressed) -> np.ndarray:
    return decompress(value) if isinstance(value, Compressed) else value


def _bytes(value: np.ndarray | Compressed) -> int:
    return wire_bytes(value) if isinstance(value, Compressed) else value.nbytes


def _inputs(chain: _Chain, b: int, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {i.name: values[i.name] for i in chain.sessions[b].get_inputs()}


def _quantize_block(
    part: bytes, precision: str, feeds: list[dict[str, np.ndarray]], index: int
) -> bytes | None:
    """Block ``index`` at ``precision``, calibrated on ``feeds``; None (logged) if it cannot be."""
    if precision == "fp32":
        return part
    try:
        return quantize_model(part, precision, calibration=feeds).SerializeToString()
    except SplitinferError as e:
        log.warning("block %d cannot run in %s: %s", index, precision, e.problem)
        return None
    except Exception as e:  # ONNX Runtime's quantiser raises its own types on ops it does not know
        raise ProfileError(
            f"quantising block {index} to {precision} failed: {e}",
            "profile without this precision, or report the model",
        ) from None
