"""TensorFlow to ONNX through tf2onnx: a Keras model (``.keras``, ``.h5``, or a ``keras.Model``), a
SavedModel (a folder: its ``serving_default`` signature, or its only one) and a TFLite flatbuffer
(``.tflite``). TensorFlow and tf2onnx are imported here, when a conversion runs. The names of the
converted model's inputs and outputs are the Keras inputs', the signature's keys."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from splitinfer.convert._common import (
    Declared,
    Exported,
    canonical_names,
    missing_framework,
    output_names,
    rename_values,
    shapes_for,
)
from splitinfer.errors import ModelError, first_line

OPSET = 17
SIGNATURE = "serving_default"


def _tf() -> tuple[Any, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError as e:
        raise missing_framework(e.name or "tensorflow", "tf", "a TensorFlow or Keras model") from None
    return tf, tf2onnx


def _fresh_names(tf2onnx: Any) -> None:
    """tf2onnx numbers the names it makes with a counter of the process: from 1 for every conversion,
    the same model gives the same ONNX bytes (a profile names the model that later runs by its sha256)."""
    if isinstance(getattr(tf2onnx.utils, "INTERNAL_NAME", None), int):
        tf2onnx.utils.INTERNAL_NAME = 1


def is_keras(obj: object) -> bool:
    """A Keras model object (without importing Keras if it is not loaded)."""
    import sys

    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, keras.Model)


def _flat(out: Any) -> tuple[list[Any], list[str] | None]:
    if isinstance(out, Mapping):
        return list(out.values()), [str(k) for k in out]
    if isinstance(out, list | tuple):
        return list(out), None
    return [out], None


def _numpy(values: Sequence[Any]) -> list[np.ndarray]:
    return [np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in values]


def convert_keras(source: object, input_shapes: Mapping[str, Sequence[int]] | None, batch: int | None,
                  what: str) -> Exported:
    tf, tf2onnx = _tf()
    import keras

    model = source
    if isinstance(source, str | Path):
        keras.backend.clear_session()  # layer names as saved, not numbered after models loaded before
        try:
            model = keras.saving.load_model(str(source), compile=False)
        except Exception as e:  # Keras raises ValueError, OSError, TypeError by cause
            raise ModelError(f"cannot load {source} as a Keras model ({first_line(e)})",
                             "save it with model.save('m.keras'); custom layers need their code") from None
    inputs = [Declared(str(t.name), tuple(t.shape), str(getattr(t.dtype, "name", t.dtype)))
              for t in model.inputs]
    shapes = shapes_for(inputs, input_shapes, batch, what)
    names = [d.name for d in inputs]
    signature = [tf.TensorSpec(shapes[d.name], d.dtype, name=d.name) for d in inputs]
    try:
        _fresh_names(tf2onnx)
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET)
    except Exception as e:
        raise ModelError(f"tf2onnx cannot convert {what}: {first_line(e)}",
                         "check that every layer is a TensorFlow op tf2onnx knows") from None

    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        args = [tf.constant(feeds[n]) for n in names]
        return _numpy(_flat(model(args[0] if len(args) == 1 else args, training=False))[0])

    _, keys = _flat(model(example(shapes, inputs), training=False))
    canonical_names(proto.graph)
    rename_values(proto.graph, dict(zip([o.name for o in proto.graph.output],
                                        output_names(len(proto.graph.output), keys), strict=False)))
    rename_values(proto.graph, {i.name: n for i, n in zip(_graph_inputs(proto), names, strict=False)})
    return Exported(proto, f"tf2onnx {tf2onnx.__version__}", shapes, run)


def example(shapes: Mapping[str, tuple[int, ...]], inputs: Sequence[Declared]) -> Any:
    arrays = [np.zeros(shapes[d.name], dtype=d.dtype) for d in inputs]
    return arrays[0] if len(arrays) == 1 else arrays


def _graph_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in inits]


def _signature(loaded: Any, what: str) -> tuple[str, Any]:
    names = sorted(loaded.signatures.keys())
    if not names:
        raise ModelError(f"{what} has no signatures",
                         "export it with tf.saved_model.save(m, dir, signatures=...)"
                         " or keras' model.export(dir)")
    name = SIGNATURE if SIGNATURE in names else names[0]
    return name, loaded.signatures[name]


def convert_saved_model(path: Path, input_shapes: Mapping[str, Sequence[int]] | None, batch: int | None,
                        what: str) -> Exported:
    tf, tf2onnx = _tf()
    from tf2onnx import tf_loader
    from tf2onnx.convert import _convert_common

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:
        raise ModelError(f"cannot load {path} as a SavedModel ({first_line(e)})",
                         "give the folder that holds saved_model.pb") from None
    name, fn = _signature(loaded, what)
    specs = fn.structured_input_signature[1]
    inputs = [Declared(k, tuple(s.shape.as_list()), s.dtype.name) for k, s in specs.items()]
    shapes = shapes_for(inputs, input_shapes, batch, what)
    try:
        _fresh_names(tf2onnx)
        graph_def, ins, outs, tables, renames = tf_loader.from_saved_model(
            str(path), None, None, None, [name], None, False, return_initialized_tables=True,
            return_tensors_to_rename=True)
        with tf.device("/cpu:0"):
            proto, _ = _convert_common(graph_def, name=str(path), continue_on_error=False, opset=OPSET,
                                       input_names=ins, output_names=outs, tensors_to_rename=renames,
                                       initialized_tables=tables)
    except Exception as e:
        raise ModelError(f"tf2onnx cannot convert {what}: {first_line(e)}",
                         "check that its ops are TensorFlow ops tf2onnx knows") from None
    canonical_names(proto.graph)
    order = [o.name for o in proto.graph.output]

    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        out = fn(**{d.name: tf.constant(feeds[d.name]) for d in inputs})
        return [np.asarray(out[k].numpy()) for k in order]

    return Exported(proto, f"tf2onnx {tf2onnx.__version__}, signature {name}", shapes, run)


def _interpreter(tf: Any, path: Path) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path))


def convert_tflite(path: Path, input_shapes: Mapping[str, Sequence[int]] | None, batch: int | None,
                   what: str) -> Exported:
    tf, tf2onnx = _tf()
    try:
        interpreter = _interpreter(tf, path)
    except Exception as e:
        raise ModelError(f"cannot read {path} as a TFLite model ({first_line(e)})",
                         "give a .tflite flatbuffer (tf.lite.TFLiteConverter)") from None
    signatures = interpreter.get_signature_list()
    if not signatures:
        raise ModelError(f"{what} has no signature to run it by name",
                         "convert it from a model with a serving signature "
                         "(TFLiteConverter.from_keras_model)")
    runner = interpreter.get_signature_runner(SIGNATURE if SIGNATURE in signatures else sorted(signatures)[0])
    in_details, out_details = runner.get_input_details(), runner.get_output_details()
    inputs = [Declared(k, tuple(None if s < 0 else int(s) for s in d.get("shape_signature", d["shape"])),
                       np.dtype(d["dtype"]).name) for k, d in in_details.items()]
    shapes = shapes_for(inputs, input_shapes, batch, what)
    try:
        _fresh_names(tf2onnx)
        proto, _ = tf2onnx.convert.from_tflite(str(path), opset=OPSET)
    except Exception as e:
        raise ModelError(f"tf2onnx cannot convert {what}: {first_line(e)}",
                         "check that its ops are TFLite builtins tf2onnx knows") from None
    rename_values(proto.graph, {d["name"]: k for k, d in {**in_details, **out_details}.items()})
    canonical_names(proto.graph)
    order = [o.name for o in proto.graph.output]

    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        out = runner(**{d.name: np.ascontiguousarray(feeds[d.name]) for d in inputs})
        return [np.asarray(out[k]) for k in order]

    return Exported(proto, f"tf2onnx {tf2onnx.__version__}", shapes, run)
