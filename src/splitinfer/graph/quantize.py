"""Quantised partitions: a model, or each partition of a chain, in fp32, fp16 or int8.

int8 goes through ONNX Runtime's quantisation tools: static QDQ (QuantizeLinear/DequantizeLinear
around each quantised op, scales calibrated on real inputs) or dynamic (weights int8 ahead of time,
activations quantised as each batch runs: DynamicQuantizeLinear + MatMulInteger/ConvInteger). fp16
converts weights and compute to float16 and keeps float32 at the inputs and outputs, so a stage's
cut tensors stay what its neighbours send and expect. A quantised model has the same inputs and
outputs (names, dtypes, shapes) as the model it came from; that is checked on every call. A model
with nothing the precision would change (a block of ArgMax, Cast, Reshape on labels) comes back
unchanged, and its ``splitinfer.quantize`` metadata says so (``"unchanged"``: why).

A partition is calibrated on the tensors that reach it when the model runs on real data
(:func:`calibration_feeds`), not on the model's inputs::

    from splitinfer.graph.quantize import quantize_model, quantize_partitions
    q = quantize_model("digits.onnx", "int8", calibration=[{"x": x[i:i + 32]} for i in range(0, 320, 32)])
    parts = quantize_partitions([p0, p1], ["fp32", "int8"], calibration=feeds)
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from splitinfer.errors import (
    CalibrationNeeded,
    InputError,
    ModelError,
    PlanError,
    SplitinferError,
    first_line,
)
from splitinfer.graph._calibration import (
    check_feeds,
    feed_reader,
    input_values,
    quiet_ort_logging,
    read_model,
    restore_interface,
    signature,
    without_passthrough,
)
from splitinfer.graph.inference import create_inference_session

__all__ = ["METHODS", "PRECISIONS", "calibration_feeds", "check_method", "check_precision",
           "choose_method", "input_values", "quantize_model", "quantize_partitions", "read_model"]

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "fp16", "int8")
METHODS = ("auto", "static", "dynamic")
ModelLike = onnx.ModelProto | bytes | str | Path
Feeds = Mapping[str, np.ndarray]
# Protobuf cannot serialise 2 GiB; above this the quantiser writes the weights as external data.
_EXTERNAL_DATA_BYTES = 1_800_000_000
_MAX_FP16_RETRIES = 16
# Ops that mark a graph as quantised: (Dynamic)QuantizeLinear, DequantizeLinear, MatMulInteger,
# ConvInteger, QLinear*, QGemm, QAttention, DynamicQuantizeMatMul, ...
_INT8_OP = re.compile(r"Quantize|Integer|^Q[A-Z]")
# Ops that compute nothing: one that only moves float16 values is no reason to convert a graph.
_NO_COMPUTE = frozenset({"Cast", "Identity"})


def check_precision(name: object, where: str = "precision") -> str:
    """``name`` if it is one of :data:`PRECISIONS`, else a PlanError naming ``where`` and the choices."""
    if name not in PRECISIONS:
        raise PlanError(f"{where} {name!r} is not a precision", f"use one of {', '.join(PRECISIONS)}")
    return str(name)


def check_method(name: object, where: str = "method") -> str:
    """``name`` if it is one of :data:`METHODS`, else a PlanError naming ``where`` and the choices."""
    if name not in METHODS:
        raise PlanError(f"{where} {name!r} is not an int8 quantisation method",
                        f"use one of {', '.join(METHODS)}")
    return str(name)


def _op_types(model: onnx.ModelProto) -> set[str]:
    return {node.op_type for node in model.graph.node}


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of the subgraphs of its If/Loop/Scan nodes, which the quantisers
    convert too."""
    for node in graph.node:
        yield node
        for a in node.attribute:
            for sub in (a.g, *a.graphs) if a.type in (onnx.AttributeProto.GRAPH,
                                                      onnx.AttributeProto.GRAPHS) else ():
                yield from _nodes(sub)


def choose_method(model: ModelLike, precision: str, method: str = "auto") -> str | None:
    """How ``precision`` is reached: "static" or "dynamic" for int8, None for fp32 and fp16.

    The "auto" rule: dynamic when the model has MatMul and no Conv (a transformer or an MLP, whose
    cost is in MatMul: ONNX Runtime's dynamic quantisation turns MatMul into MatMulInteger with
    per-batch activation scales, and needs no calibration); static QDQ otherwise (CNNs: a Conv's
    activations are best calibrated, and a Gemm is quantised only by static quantisation).
    """
    if check_precision(precision) != "int8":
        return None
    if check_method(method) != "auto":
        return method
    ops = _op_types(model if isinstance(model, onnx.ModelProto) else read_model(model))
    return "dynamic" if "MatMul" in ops and "Conv" not in ops else "static"


def quantize_model(model: ModelLike, precision: str, *,
                   calibration: Iterable[Feeds] | None = None, method: str = "auto") -> onnx.ModelProto:
    """``model`` in ``precision`` ("fp32": an unchanged copy, "fp16", "int8").

    ``calibration``: feed dicts (input name -> array, a batch each) of real data, needed by static
    int8 (:func:`choose_method` says when "auto" picks it). ``method``: "auto", "static" (QDQ,
    per-channel weights for a model with Conv) or "dynamic". The result has the same inputs and
    outputs, names, dtypes and shapes; nothing is left on disk.
    """
    proto = read_model(model)
    chosen = choose_method(proto, precision, method)
    if precision == "fp32":
        return proto
    feeds = None
    if chosen == "static":
        if calibration is None:
            raise CalibrationNeeded(
                "static int8 quantisation needs calibration data, and calibration is None",
                "pass calibration= feed dicts of real inputs (a few hundred samples), or method='dynamic'")
        feeds = [dict(f) if isinstance(f, Mapping) else f for f in calibration]
        check_feeds(feeds, proto, "calibration")
    core = without_passthrough(proto)
    unchanged = _nothing_to_quantize(core, chosen)
    if unchanged is None:
        out = _to_fp16(core) if precision == "fp16" else _int8(core, feeds)
        unchanged = _nothing_quantized(out, precision)
    if unchanged is not None:
        # The precision does not apply: the model as it is runs exactly as it would, and the caller
        # (a profile timing every block in every precision) still gets a model for this block.
        log.info("%s: %s, the model is left unchanged", precision, unchanged)
        out, chosen = read_model(proto), None
    else:
        restore_interface(proto, out)
    _keep_signature(proto, out)
    _check_loads(out, precision)
    info: dict[str, Any] = {"precision": precision, "method": chosen}
    if unchanged is not None:
        info["unchanged"] = unchanged
    out.metadata_props.add(key="splitinfer.quantize", value=json.dumps(info, sort_keys=True))
    return out


def _nothing_to_quantize(model: onnx.ModelProto, method: str | None) -> str | None:
    """Why int8 ``method`` has nothing to do in ``model`` (no op of a type its quantiser handles), or
    None. Not asking ONNX Runtime then: its tools fail on graphs of ML ops alone (ZipMap, ...)."""
    if method is None:
        return None
    from onnxruntime.quantization.registry import IntegerOpsRegistry, QDQRegistry, QLinearOpsRegistry

    # The op types each of ONNX Runtime's quantisers handles when not told which (its defaults).
    handled = set(IntegerOpsRegistry) if method == "dynamic" else set(QLinearOpsRegistry) | set(QDQRegistry)
    if not handled & {n.op_type for n in _nodes(model.graph)}:
        return f"no op that {method} int8 quantises"
    return None


def _nothing_quantized(model: onnx.ModelProto, precision: str) -> str | None:
    """Why the quantiser's ``model`` is no different from what it was given (no quantised op; no op
    computing in float16, only the boundary Casts), or None."""
    nodes = list(_nodes(model.graph))
    if precision == "int8":
        return None if any(_INT8_OP.search(n.op_type) for n in nodes) else "nothing to quantise"
    # The float16 values: converted weights, and what a Cast or Constant makes float16; a node that
    # reads or writes one computes in float16 (a node computing in float32 touches none of them).
    fp16 = onnx.TensorProto.FLOAT16
    half = {t.name for t in model.graph.initializer if t.data_type == fp16}
    half |= {o for n in nodes if n.op_type in ("Cast", "Constant") and any(
        (a.name == "to" and a.i == fp16) or (a.name == "value" and a.t.data_type == fp16)
        for a in n.attribute) for o in n.output}
    computes = any(n.op_type not in _NO_COMPUTE and half & {*n.input, *n.output} for n in nodes)
    return None if computes else "no op to compute in float16"


def _int8(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]] | None) -> onnx.ModelProto:
    """ONNX Runtime's static QDQ quantisation (``feeds`` given) or dynamic quantisation, in a temp dir."""
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    external = model.ByteSize() > _EXTERNAL_DATA_BYTES
    with tempfile.TemporaryDirectory(prefix="splitinfer-quantize-") as tmp, quiet_ort_logging():
        source = _preprocess(model, Path(tmp), external)
        target = Path(tmp, "quantized.onnx")
        # 7-bit weights (reduce_range): x86 CPUs without VNNI multiply uint8 by int8 in pairs summed
        # into int16, which saturates with full-range weights (measured on a zoo ResNet-18: SNR 7 dB,
        # 23 dB with reduce_range). A partition may run on any device, so always.
        try:
            if feeds is None:
                quantize_dynamic(source, target, reduce_range=True, use_external_data_format=external)
            else:
                # Per-channel weight scales help a Conv (its output channels differ in range); on
                # MatMul-only models they measured no better than one scale per tensor.
                quantize_static(source, target, feed_reader(feeds), quant_format=QuantFormat.QDQ,
                                per_channel="Conv" in _op_types(model), reduce_range=True,
                                use_external_data_format=external)
            return onnx.load(str(target))
        except SplitinferError:
            raise
        except Exception as e:  # ORT's quantiser raises anything from ValueError to its own errors
            kind = "static" if feeds is not None else "dynamic"
            raise ModelError(f"ONNX Runtime cannot quantise the model to int8 ({kind}): {first_line(e)}",
                             "try the other --method, or precision fp16") from None


def _preprocess(model: onnx.ModelProto, tmp: Path, external: bool) -> Path:
    """``quant_pre_process`` (shape inference and graph clean-up, which ONNX Runtime recommends before
    quantising), or the model as it is when that fails (custom or ML ops it cannot infer). A file
    either way: the quantiser rewrites a ModelProto it is given in place."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, target = tmp / "model.onnx", tmp / "preprocessed.onnx"
    # From a file: given a ModelProto, ONNX Runtime 1.32's pre-processing fails in its optimisation step.
    onnx.save_model(model, str(source), save_as_external_data=external)
    # Symbolic shape inference needs sympy, which ONNX Runtime does not install: ONNX's alone then.
    for skip_symbolic in (False, True):
        try:
            quant_pre_process(source, target, skip_symbolic_shape=skip_symbolic,
                              save_as_external_data=external)
            pre = onnx.load(str(target), load_external_data=False)
            return target if signature(pre) == signature(model) else source
        except Exception:  # pre-processing is an improvement, not a requirement
            continue
    return source


def _to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """float16 weights and compute, float32 inputs and outputs. An op ONNX Runtime has no float16
    kernel for (on the CPU) stays float32 behind Casts."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    blocked: list[str] = list(DEFAULT_OP_BLOCK_LIST)
    for _ in range(_MAX_FP16_RETRIES):
        with quiet_ort_logging():
            try:
                out = convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
            except Exception as e:  # the converter's own errors (shape inference, unsupported types)
                raise ModelError(f"cannot convert the model to fp16: {first_line(e)}",
                                 "quantise it to int8 instead, or keep it in fp32") from None
        missing = _missing_kernel(out)
        if missing is None or missing in blocked:
            return out
        blocked.append(missing)
    return out


def _missing_kernel(model: onnx.ModelProto) -> str | None:
    """The op type ONNX Runtime has no kernel for in ``model`` (as it says when loading it), if any."""
    try:
        create_inference_session(model.SerializeToString(), optimize=False)
    except ModelError as e:
        found = re.search(r"implementation for (\w+)\(", e.problem)
        return found.group(1) if found else None
    return None


def _keep_signature(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    """The quantised model's inputs and outputs are the original's: names, dtypes and fixed dims
    checked (a change is a bug), and the original value infos kept (symbolic dim names, docs)."""
    if signature(after) != signature(before):
        raise ModelError("quantising changed the model's inputs or outputs "
                         f"({signature(before)} became {signature(after)})",
                         "this is a splitinfer bug; please report it with the model")
    inputs = {vi.name: vi for vi in before.graph.input}
    for vi in input_values(after.graph):
        vi.CopyFrom(inputs[vi.name])
    for vi, original in zip(after.graph.output, before.graph.output, strict=True):
        vi.CopyFrom(original)


def _check_loads(model: onnx.ModelProto, precision: str) -> None:
    if model.ByteSize() > _EXTERNAL_DATA_BYTES:
        return  # a session would need the weights on disk; the caller saves it with external data
    try:
        create_inference_session(model.SerializeToString(), optimize=False)
    except ModelError as e:
        raise ModelError(f"the {precision} model does not load in ONNX Runtime: {e.problem}",
                         "keep this model (or stage) in fp32, or try the other precision") from None


def _as_proto(part: Any, index: int) -> onnx.ModelProto:
    """A partition as a ModelProto: a ModelProto, its bytes, a path, or anything with ``to_bytes()``
    (a :class:`~splitinfer.graph.partition.Partition`)."""
    to_bytes = getattr(part, "to_bytes", None)
    try:
        return read_model(to_bytes() if callable(to_bytes) else part)
    except ModelError as e:
        raise ModelError(f"partition {index}: {e.problem}", e.fix) from None


def calibration_feeds(partitions: Sequence[Any],
                      feeds: Iterable[Feeds]) -> Iterator[list[dict[str, np.ndarray]]]:
    """For each partition of a chain in turn, the feeds that reach it when ``feeds`` (the first
    partition's inputs: the model's) run through the chain in fp32: the real intermediate tensors.

    Lazy: partition k runs only when the feeds of partition k + 1 are asked for.
    """
    batches = [dict(f) for f in feeds]
    if not batches:
        raise InputError("calibration holds no samples", "give at least one feed dict of real inputs")
    values = batches  # every tensor known so far, per batch
    for k, part in enumerate(partitions):
        proto = _as_proto(part, k)
        names = [vi.name for vi in input_values(proto.graph)]
        missing = sorted(set(names) - set(values[0]))
        if missing:
            raise ModelError(f"partition {k} needs {missing}, which neither the calibration feeds nor "
                             "the partitions before it provide",
                             "give the partitions in chain order, split from the same model")
        reaching = [{name: v[name] for name in names} for v in values]
        yield reaching
        if k + 1 == len(partitions):
            return
        session = create_inference_session(proto.SerializeToString())
        outputs = [o.name for o in proto.graph.output]
        try:
            values = [{**v, **dict(zip(outputs, session.run(outputs, f), strict=True))}
                      for v, f in zip(values, reaching, strict=True)]
        except Exception as e:  # ORT's errors for feeds that do not fit
            raise InputError(f"calibration feeds do not run through partition {k}: {first_line(e)}",
                             "give feeds of the model's inputs (names, dtypes and shapes)") from None


def quantize_partitions(partitions: Sequence[Any], precisions: Sequence[str],
                        calibration: Iterable[Feeds] | None = None, *,
                        method: str = "auto") -> list[onnx.ModelProto]:
    """Each partition of a chain in its own precision (``precisions[k]`` for partition k), an int8 one
    calibrated on the real intermediate tensors that reach it (``calibration``: feed dicts of the
    whole model's inputs, run through the partitions before it in fp32)."""
    if len(precisions) != len(partitions):
        raise PlanError(f"{len(precisions)} precisions for {len(partitions)} partitions",
                        "give one precision per partition, e.g. ['fp32', 'int8']")
    for k, precision in enumerate(precisions):
        check_precision(precision, f"partition {k}'s precision")
    check_method(method)
    protos = [_as_proto(p, k) for k, p in enumerate(partitions)]
    static = [k for k, (p, prec) in enumerate(zip(protos, precisions, strict=True))
              if choose_method(p, prec, method) == "static"]
    if static and calibration is None:
        raise CalibrationNeeded(f"partition {static[0]} is quantised to static int8, which needs calibration "
                         "data, and calibration is None",
                         "pass calibration= feed dicts of the model's real inputs, or method='dynamic'")
    reaching = calibration_feeds(protos, calibration) if static else iter(())
    out = []
    for k, (proto, precision) in enumerate(zip(protos, precisions, strict=True)):
        feeds = next(reaching) if static and k <= static[-1] else None
        try:
            out.append(quantize_model(proto, precision, calibration=feeds, method=method))
        except SplitinferError as e:
            raise type(e)(f"partition {k}: {e.problem}", e.fix) from None
    return out
