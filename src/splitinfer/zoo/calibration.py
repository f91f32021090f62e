"""BatchNormalization statistics from the model's own activations.

Statistics predicted on paper drift from the real ones layer after layer, and a
BatchNormalization with wrong running statistics amplifies the error instead of
removing it: deep random networks then blow up to outputs of 1e3 and more. So
the zoo measures them, as one recalibrates a network's BN layers on new data:
one ONNX Runtime pass over a seeded batch of standard normal inputs, with every
BatchNormalization replaced by its training-mode form (normalise by the batch's
own per-channel mean and variance, then scale and shift). That pass yields the
mean and variance of every BatchNormalization's input as they will be in the
final model, which become its running statistics. The same pass gives the
model's outputs; a Conv or Gemm that makes an output is then rescaled so the
output has a second moment of 1 on that batch (logits of unit scale). A model
whose weights are in a ``.data`` file (:mod:`splitinfer.zoo.weights`) is
calibrated the same way: ONNX Runtime reads them from the file's folder, and a
rescaled weight is written back in its place there.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from splitinfer.types import numpy_dtype
from splitinfer.zoo.weights import WeightFile, is_external


def _reduce_mean(x: str, out: str, opset: int, axes: str) -> onnx.NodeProto:
    if opset >= 18:
        return helper.make_node("ReduceMean", [x, axes], [out], name=out, keepdims=1)
    return helper.make_node("ReduceMean", [x], [out], name=out, axes=[0, 2, 3], keepdims=1)


def _training_mode(node: onnx.NodeProto, opset: int) -> tuple[list[onnx.NodeProto], list[str], TensorProto]:
    """Nodes computing ``node`` with batch statistics, the names of those statistics, and the
    epsilon constant the nodes read."""
    x, gamma, beta = node.input[:3]
    eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
    p = f"{node.name}.calibrate"
    eps_tensor = numpy_helper.from_array(np.array(eps, dtype=np.float32), f"{p}.eps")

    def op(kind: str, inputs: list[str], suffix: str, out: str | None = None) -> onnx.NodeProto:
        return helper.make_node(kind, inputs, [out or f"{p}.{suffix}"], name=f"{p}.{suffix}")

    nodes = [
        _reduce_mean(x, f"{p}.mean", opset, "calibrate.axes"),
        op("Sub", [x, f"{p}.mean"], "centred"),
        op("Mul", [f"{p}.centred", f"{p}.centred"], "square"),
        _reduce_mean(f"{p}.square", f"{p}.var", opset, "calibrate.axes"),
        op("Add", [f"{p}.var", f"{p}.eps"], "var_eps"),
        op("Sqrt", [f"{p}.var_eps"], "std"),
        op("Div", [f"{p}.centred", f"{p}.std"], "normalized"),
        op("Unsqueeze", [gamma, "calibrate.axes"], "gamma"),
        op("Unsqueeze", [beta, "calibrate.axes"], "beta"),
        op("Mul", [f"{p}.normalized", f"{p}.gamma"], "scaled"),
        op("Add", [f"{p}.scaled", f"{p}.beta"], "shifted", out=node.output[0]),
    ]
    return nodes, [f"{p}.mean", f"{p}.var"], eps_tensor



def _calibration_model(model: onnx.ModelProto,
                       batch: int) -> tuple[onnx.ModelProto, dict[str, tuple[str, str, str, str]]]:
    graph = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    nodes: list[onnx.NodeProto] = []
    stats: dict[str, tuple[str, str, str, str]] = {}  # bn -> (mean out, var out, mean init, var init)
    extra = [numpy_helper.from_array(np.array([0, 2, 3], dtype=np.int64), "calibrate.axes")]
    for node in graph.node:
        if node.op_type != "BatchNormalization":
            nodes.append(node)
            continue
        replaced, (mean_out, var_out), eps_tensor = _training_mode(node, opset)
        nodes.extend(replaced)
        extra.append(eps_tensor)
        stats[node.name] = (mean_out, var_out, node.input[3], node.input[4])
    running = {name for entry in stats.values() for name in entry[2:]}
    inputs = []
    for value in graph.input:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        inputs.append(helper.make_tensor_value_info(value.name, value.type.tensor_type.elem_type,
                                                    [batch, *dims[1:]]))
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
               for entry in stats.values() for name in entry[:2]]
    outputs += [helper.make_tensor_value_info(v.name, v.type.tensor_type.elem_type, None)
                for v in graph.output]
    initializers = [t for t in graph.initializer if t.name not in running] + extra
    calib_graph = helper.make_graph(nodes, "calibrate", inputs, outputs, initializers)
    calib = helper.make_model(calib_graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    return calib, stats


def calibrate_batch_norms(model: onnx.ModelProto, *, seed: int, weights: WeightFile | None = None) -> None:
    """Set every BatchNormalization's running mean and variance, in place, to the statistics of
    its input over a seeded batch of standard normal inputs (a few samples; more for small maps).
    ``weights``: the closed file holding the model's external weights, if any."""
    if not any(n.op_type == "BatchNormalization" for n in model.graph.node):
        return
    first = model.graph.input[0].type.tensor_type.shape.dim
    area = int(np.prod([d.dim_value for d in first[2:]])) if len(first) > 2 else 1
    # Enough samples that even the last, smallest maps give stable per-channel statistics.
    batch = int(np.clip(2**18 // max(area, 1), 2, 64))
    calib, stats = _calibration_model(model, batch)
    rng = np.random.default_rng([seed, 0x5EED])
    feeds = {}
    for value in calib.graph.input:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = rng.standard_normal(dims).astype(numpy_dtype(value.type.tensor_type.elem_type))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one thread: the same sums in the same order on every run
    options.log_severity_level = 3
    if weights is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                         str(weights.folder))
    session = ort.InferenceSession(calib.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [name for entry in stats.values() for name in entry[:2]]
    outputs = [v.name for v in model.graph.output]
    results = session.run(names + outputs, feeds)
    del session  # it may map the weights file, which rewrite() now changes
    measured = dict(zip(names + outputs, results, strict=True))
    index = {t.name: i for i, t in enumerate(model.graph.initializer)}

    def read(name: str) -> np.ndarray:
        tensor = model.graph.initializer[index[name]]
        return weights.read(tensor) if weights is not None else numpy_helper.to_array(tensor)

    def rewrite(name: str, values: np.ndarray) -> None:
        tensor = model.graph.initializer[index[name]]
        if weights is not None and is_external(tensor):
            weights.overwrite(tensor, values.astype(np.float32))
        else:
            tensor.CopyFrom(numpy_helper.from_array(values.astype(np.float32), name))

    for mean_out, var_out, mean_init, var_init in stats.values():
        rewrite(mean_init, measured[mean_out].reshape(-1))
        rewrite(var_init, measured[var_out].reshape(-1))
    _normalize_outputs(model, measured, set(index), read, rewrite)


def _normalize_outputs(model: onnx.ModelProto, measured: dict[str, np.ndarray], initializers: set[str],
                       read: Callable[[str], np.ndarray], rewrite: Callable[[str, np.ndarray], None]) -> None:
    """Scale the Conv or Gemm making each output so the output's mean square on the batch is 1."""
    producers = {out: node for node in model.graph.node for out in node.output}
    for value in model.graph.output:
        node = producers.get(value.name)
        m2 = float(np.mean(measured[value.name].astype(np.float64) ** 2))
        if node is None or node.op_type not in ("Conv", "Gemm") or not m2 > 0:
            continue
        scale = 1.0 / np.sqrt(m2)
        for param in node.input[1:3]:
            if param in initializers:
                rewrite(param, read(param) * scale)
