"""``splitinfer quantize``: a whole model to int8 or fp16, calibrated on a data set.

The library does the work (:func:`splitinfer.graph.quantize.quantize_model`); the data set is read as
``eval`` reads it (:func:`splitinfer.data.load_dataset`, images fitted to the model's input). Every
flag, the model and the data are checked before quantising.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from splitinfer.cli._common import check_writable, console
from splitinfer.cli._model import ModelPath, converted
from splitinfer.errors import InputError, SplitinferError
from splitinfer.units import check_number

if TYPE_CHECKING:
    import numpy as np
    import onnx

CALIBRATION_BATCH = 32  # samples per calibration batch when the model's batch axis is dynamic


def _calibration(model: onnx.ModelProto, data: Path, preprocess: str | None,
                 limit: int | None) -> list[dict[str, np.ndarray]]:
    """The data set as feed dicts of the model's one input, batched as the input allows."""
    from splitinfer.data import load_dataset
    from splitinfer.graph.quantize import input_values
    from splitinfer.types import ONNX_TO_NUMPY, TensorSpec

    inputs = input_values(model.graph)
    if len(inputs) != 1:
        raise InputError(f"--calibration feeds one input, and the model has {len(inputs)} "
                         f"({', '.join(vi.name for vi in inputs)})",
                         "quantise it in Python: quantize_model(model, 'int8', calibration=[{name: array}])")
    vi = inputs[0]
    tt = vi.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tt.shape.dim)
    dtype = ONNX_TO_NUMPY.get(tt.elem_type, "float32")
    dataset = load_dataset(data, preprocess, input_shape=[d if d > 0 else None for d in dims],
                           input_dtype=dtype, limit=limit)
    dataset.check_fits(TensorSpec(vi.name, dtype, dims))
    batch = dims[0] if dims and dims[0] > 0 else CALIBRATION_BATCH
    if len(dataset) < batch:
        raise InputError(f"--calibration {data} has {len(dataset)} samples, the model's input takes "
                         f"batches of {batch}", f"give at least {batch} samples")
    return [{vi.name: x} for x in dataset.batches(batch, drop_last=True)]


def quantize_command(
    model: ModelPath,
    output: Annotated[Path, typer.Option("--output", "-o", metavar="OUT.onnx",
                                         help="Where to write the quantised model.", show_default=False)],
    calibration: Annotated[Path | None, typer.Option(
        "--calibration", metavar="DATA", help="Real inputs to calibrate int8 on (static): an image folder, "
                                              "an .npz (x), an .npy, or one image. A few hundred samples "
                                              "suffice.", show_default=False)] = None,
    precision: Annotated[str, typer.Option("--precision", metavar="int8|fp16",
                                           help="int8 (ONNX Runtime's quantisation) or fp16 (float32 "
                                                "inputs and outputs kept).")] = "int8",
    method: Annotated[str, typer.Option("--method", metavar="auto|static|dynamic",
                                        help="int8 only: static QDQ, calibrated on --calibration; dynamic, "
                                             "no calibration; auto: dynamic for MatMul models without "
                                             "Conv, static otherwise.")] = "auto",
    preprocess: Annotated[str | None, typer.Option(
        "--preprocess", metavar="SPEC", help="How images become inputs, e.g. "
                                             "resize=256,crop=224,norm=imagenet (default: fit the model's "
                                             "input).", show_default=False)] = None,
    limit: Annotated[int | None, typer.Option("--limit", metavar="N", help="At most N calibration samples.",
                                              show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite -o if it exists.")] = False,
) -> None:
    """Quantise a whole model to int8 or fp16; its inputs and outputs stay as they are.

    int8 static inserts QuantizeLinear/DequantizeLinear pairs whose scales are calibrated on
    --calibration (give the same preprocessing as at inference); int8 dynamic quantises MatMul
    weights and computes activation scales as each batch runs. fp16 halves the weights and keeps
    float32 at the model's inputs and outputs. Measure what it costs with `splitinfer eval`.

    Examples:

      splitinfer quantize r18.onnx --calibration val/ --limit 300 -o r18.int8.onnx

      splitinfer quantize digits.onnx --calibration digits.npz -o digits.int8.onnx

      splitinfer quantize bert.onnx --method dynamic -o bert.int8.onnx

      splitinfer quantize r18.onnx --precision fp16 -o r18.fp16.onnx
    """
    from splitinfer.graph.quantize import check_method, check_precision, choose_method, quantize_model

    # Every flag first: nothing is read or written for a command that cannot run.
    check_precision(precision, "--precision")
    check_method(method, "--method")
    if precision == "fp32":
        raise InputError("--precision fp32 leaves the model as it is", "give --precision int8 or fp16")
    if limit is not None:
        check_number(limit, "--limit", low=1, whole=True, error=InputError, fix="the most samples to take")
    if output.exists() and not force:
        raise SplitinferError(f"-o {output} exists", "give another path, or --force to overwrite it")
    check_writable(output, "-o")

    from splitinfer.graph.quantize import read_model

    proto = read_model(converted(model))  # a framework model: converted and verified first
    chosen = choose_method(proto, precision, method)
    if chosen == "static" and calibration is None:
        why = "--method static" if method == "static" else \
            "auto picks static: the model has Conv or no MatMul"
        raise InputError(f"static int8 needs calibration data ({why}), and no --calibration is given",
                         "give --calibration DATA (a few hundred real inputs), or --method dynamic")
    if chosen != "static" and (calibration is not None or preprocess is not None or limit is not None):
        console.print(f"note: {precision}{' ' + chosen if chosen else ''} needs no calibration; "
                      "--calibration, --preprocess and --limit are not used", highlight=False, soft_wrap=True)
    feeds = _calibration(proto, calibration, preprocess, limit) \
        if chosen == "static" and calibration is not None else None

    start = time.perf_counter()
    with console.status(f"quantising {model.name} to {precision} ..."):
        quantized = quantize_model(proto, precision, calibration=feeds, method=method)
    took_s = time.perf_counter() - start
    data = quantized.SerializeToString()
    try:
        output.write_bytes(data)
    except OSError as e:  # checked before any work; gone or full since
        raise SplitinferError(f"cannot write -o {output}: {e.strerror or e}",
                              "pick a writable path for -o") from None

    how = precision if chosen is None else f"{precision} {chosen}"
    if feeds:
        how += f", calibrated on {sum(len(next(iter(f.values()))) for f in feeds)} samples of {calibration}"
    before_mb, after_mb = proto.ByteSize() / 1e6, len(data) / 1e6
    ratio = f" ({after_mb / before_mb:.0%})" if before_mb else ""
    console.print(f"quantised {model} to {how} in {took_s:.2f} s: {before_mb:.3g} MB -> {after_mb:.3g} MB"
                  f"{ratio}", highlight=False, soft_wrap=True)
    console.print(f"wrote {output}", highlight=False, soft_wrap=True)
    meta = (p.value for p in quantized.metadata_props if p.key == "splitinfer.quantize")
    info = json.loads(next(meta, "{}"))
    if info.get("unchanged"):
        console.print(f"note: the model is unchanged: {info['unchanged']}", highlight=False, soft_wrap=True)
        return
    console.print(f"measure what it costs: splitinfer eval {output} --data {calibration or 'DATA'} "
                  f"(and the same for {model})",
                  highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this group's command to the main app."""
    app.command("quantize", no_args_is_help=True)(quantize_command)
