"""The zoo's graph builder: readable names, tracked shapes, seeded weights, and
expected activation moments.

Every op method adds one or a few ONNX nodes, names the output tensor after the
node, records its shape (so every intermediate gets a ``value_info``) and its
expected mean and second moment (:mod:`splitinfer.zoo.moments`), which scale
the next weight layer so its output has a chosen second moment.

With ``materialize=False`` no weight is drawn: the builder only counts
parameters and multiply-accumulates, which makes ``zoo list`` instant. With a
``weights`` file (:mod:`splitinfer.zoo.weights`) each large weight goes there as
it is drawn and the model keeps a reference to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import onnx
from onnx import helper, numpy_helper

from splitinfer.zoo import moments
from splitinfer.zoo.tensors import FLOAT, TensorInfo, broadcast_shapes, onnx_dims, recorded
from splitinfer.zoo.weights import WeightFile


class GraphBuilder:
    """Accumulates nodes, initializers and tensor facts; :meth:`finish` makes the model."""

    def __init__(self, *, seed: int = 0, opset: int = 17, materialize: bool = True,
                 weights: WeightFile | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.opset = opset
        self.materialize = materialize
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.model = onnx.ModelProto()
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.info: dict[str, TensorInfo] = {}
        self.num_params = 0
        self.num_macs = 0
        self._node_names: set[str] = set()
        self._consts: dict[str, np.ndarray] = {}

    # ---- graph interface -------------------------------------------------------------

    def add_input(self, name: str, shape: Sequence[int], dtype: int = FLOAT,
                  mean: float = 0.0, m2: float = 1.0) -> str:
        """Declare a graph input (default statistics: standard normal); a :class:`Dim` in ``shape`` is
        a dimension chosen at run time."""
        self._claim_tensor(name)
        self.info[name] = TensorInfo(recorded(shape), dtype, mean, m2)
        self.inputs.append(name)
        return name

    def mark_output(self, name: str) -> None:
        """Make an existing tensor a graph output."""
        self.outputs.append(name)

    def param(self, name: str, shape: Sequence[int], make: Callable[[], np.ndarray],
              mean: float = 0.0, m2: float = 1.0) -> np.ndarray | None:
        """A float32 weight; ``make`` runs now (RNG order = build order) unless counting only."""
        shape = tuple(int(d) for d in shape)
        self._claim_tensor(name)
        self.info[name] = TensorInfo(shape, FLOAT, mean, m2)
        self.num_params += math.prod(shape)
        if not self.materialize:
            return None
        array = np.ascontiguousarray(make(), dtype=np.float32).reshape(shape)
        if self.weights is not None and self.weights.takes(array):
            self.weights.append(self.model.graph.initializer.add(), name, array)
            return array
        # Written straight into the model: make_graph/make_model would copy every weight twice.
        tensor = self.model.graph.initializer.add()
        tensor.name, tensor.data_type = name, FLOAT
        tensor.dims.extend(shape)
        tensor.raw_data = array.astype("<f4", copy=False).tobytes()
        return array

    def normal(self, name: str, shape: Sequence[int], std: float) -> np.ndarray | None:
        """A weight with mean 0 and standard deviation ``std``, drawn uniformly (as torch's
        default init; uniform numbers are cheaper to draw than normal ones)."""
        half_width = np.float32(std * math.sqrt(3.0))

        def make() -> np.ndarray:
            w = self.rng.random(tuple(shape), dtype=np.float32)
            w *= 2 * half_width
            w -= half_width
            return w
        return self.param(name, shape, make, 0.0, std * std)

    def const(self, values: np.ndarray | float | int | Sequence[int], dtype: type = np.float32,
              name: str | None = None) -> str:
        """A small non-trainable constant, shared by every node that asks for the same one."""
        array = np.asarray(values, dtype=dtype)
        if name is None:
            if array.size > 8:
                raise ValueError("name constants of more than 8 elements")
            # Named by content, so equal constants are one shared initializer.
            text = "x".join(str(v) for v in array.ravel().tolist()).replace("-", "neg")
            suffix = "" if array.dtype == np.int64 else f".{array.dtype.name}"
            name = f"const.{'scalar.' if array.ndim == 0 else ''}{text}{suffix}"
        if name in self._consts:
            if not np.array_equal(self._consts[name], array) or self._consts[name].dtype != array.dtype:
                raise ValueError(f"constant {name!r} defined twice with different values")
            return name
        self._consts[name] = array
        self._claim_tensor(name)
        as_float = array.astype(np.float64)
        mean = float(as_float.mean()) if array.size else 0.0
        m2 = float((as_float**2).mean()) if array.size else 0.0
        self.info[name] = TensorInfo(array.shape, helper.np_dtype_to_tensor_dtype(array.dtype), mean, m2)
        if self.weights is not None and self.weights.takes(array):
            self.weights.append(self.model.graph.initializer.add(), name, array)
        else:
            self.model.graph.initializer.add().CopyFrom(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: Sequence[str], name: str, *, shape: Sequence[int],
             dtype: int = FLOAT, mean: float = 0.0, m2: float = 1.0, out: str | None = None,
             **attrs: object) -> str:
        """Add one node with a single output named ``out`` (default: the node name)."""
        if name in self._node_names:
            raise ValueError(f"node name {name!r} used twice")
        self._node_names.add(name)
        out = out or name
        self._claim_tensor(out)
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=name, **attrs))
        self.info[out] = TensorInfo(recorded(shape), dtype, mean, m2)
        return out

    def _claim_tensor(self, name: str) -> None:
        if name in self.info:
            raise ValueError(f"tensor name {name!r} used twice")

    def finish(self, graph_name: str, doc: str, metadata: dict[str, str]) -> onnx.ModelProto:
        """The model: inputs, outputs, value_info for every intermediate, opset and IR version."""
        def value(name: str) -> onnx.ValueInfoProto:
            info = self.info[name]
            return helper.make_tensor_value_info(name, info.dtype, onnx_dims(info.shape))

        graph = self.model.graph
        graph.name, graph.doc_string = graph_name, doc
        graph.node.extend(self.nodes)
        graph.input.extend(value(n) for n in self.inputs)
        graph.output.extend(value(n) for n in self.outputs)
        skip = set(self.outputs)
        graph.value_info.extend(value(out) for n in self.nodes for out in n.output if out not in skip)
        opset = helper.make_opsetid("", self.opset)
        self.model.opset_import.append(opset)
        self.model.ir_version = helper.find_min_ir_version_for([opset])
        self.model.producer_name = "splitinfer.zoo"
        self.model.doc_string = doc
        helper.set_model_props(self.model, metadata)
        return self.model

    def _scalar(self, y: str, stats: tuple[np.ndarray, np.ndarray]) -> str:
        """Record moments computed by :mod:`moments` (one-element arrays) for ``y``."""
        mean, m2 = stats
        self.info[y] = replace(self.info[y], mean=float(np.mean(mean)), m2=float(np.mean(m2)))
        return y

    # ---- convolutional ops -------------------------------------------------------------

    def conv(self, x: str, out_channels: int, kernel: int, *, name: str, stride: int = 1,
             pad: int | None = None, groups: int = 1, bias: bool = False, gain: float = 2.0,
             out: str | None = None) -> str:
        """Conv with weights scaled so the output's second moment is about ``gain``."""
        src = self.info[x]
        n, c, h, w = src.shape
        pad = kernel // 2 if pad is None else pad
        oh, ow = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
        fan_in = c // groups * kernel * kernel
        std = math.sqrt(gain / (fan_in * max(src.m2, 1e-6)))
        self.normal(f"{name}.weight", (out_channels, c // groups, kernel, kernel), std)
        inputs = [x, f"{name}.weight"]
        if bias:
            self.normal(f"{name}.bias", (out_channels,), 0.05)
            inputs.append(f"{name}.bias")
        self.num_macs += n * out_channels * oh * ow * fan_in
        return self.node("Conv", inputs, name, shape=(n, out_channels, oh, ow), m2=gain, out=out,
                         kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4,
                         group=groups)

    def batch_norm(self, x: str, *, name: str, eps: float = 1e-5) -> str:
        """BatchNormalization. Its running statistics are placeholders here: the zoo sets them
        afterwards from the model's own activations (see :mod:`splitinfer.zoo.calibration`)."""
        src = self.info[x]
        c = src.shape[1]
        gamma = self.param(f"{name}.weight", (c,), lambda: self.rng.uniform(0.8, 1.2, c))
        beta = self.param(f"{name}.bias", (c,), lambda: 0.1 * self.rng.standard_normal(c))
        self.param(f"{name}.running_mean", (c,), lambda: np.zeros(c))
        self.param(f"{name}.running_var", (c,), lambda: np.ones(c))
        mean, m2 = 0.0, 1.0
        if gamma is not None and beta is not None:
            mean, m2 = float(beta.mean()), float((gamma.astype(np.float64) ** 2 + beta**2).mean())
        inputs = [x] + [f"{name}.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
        return self.node("BatchNormalization", inputs, name, shape=src.shape, mean=mean, m2=m2,
                         epsilon=eps)

    def act(self, x: str, kind: str, *, name: str, out: str | None = None) -> str:
        """An activation: relu, relu6 (Clip), silu (Sigmoid*x), gelu (via Erf) or tanh."""
        src = self.info[x]
        mean, m2 = moments.activation(kind, src.mean, src.m2)
        kw = {"shape": src.shape, "mean": float(mean[0]), "m2": float(m2[0]), "out": out}
        if kind == "relu":
            return self.node("Relu", [x], name, **kw)
        if kind == "tanh":
            return self.node("Tanh", [x], name, **kw)
        if kind == "relu6":
            return self.node("Clip", [x, self.const(0.0), self.const(6.0)], name, **kw)
        if kind == "silu":
            gate = self.node("Sigmoid", [x], f"{name}.sigmoid", shape=src.shape, mean=0.5, m2=0.3)
            return self.node("Mul", [x, gate], name, **kw)
        if kind == "gelu":
            scaled = self.node("Div", [x, self.const(math.sqrt(2.0))], f"{name}.div", shape=src.shape)
            erf = self.node("Erf", [scaled], f"{name}.erf", shape=src.shape)
            shifted = self.node("Add", [erf, self.const(1.0)], f"{name}.add", shape=src.shape)
            gated = self.node("Mul", [x, shifted], f"{name}.mul", shape=src.shape)
            return self.node("Mul", [gated, self.const(0.5)], name, **kw)
        raise ValueError(f"unknown activation {kind!r}")

    def max_pool(self, x: str, kernel: int, stride: int, *, name: str, pad: int = 0,
                 source: tuple[str, int] | None = None) -> str:
        """MaxPool over ``kernel`` x ``kernel`` windows. ``source`` = (tensor, kernel) says the
        result is a max over that tensor's windows (chained pools, as in SPPF)."""
        n, c, h, w = self.info[x].shape
        oh, ow = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
        y = self.node("MaxPool", [x], name, shape=(n, c, oh, ow), kernel_shape=[kernel, kernel],
                      strides=[stride, stride], pads=[pad] * 4)
        origin, window = source or (x, kernel)
        # Windows reaching past a small map hold only the map's own values.
        num_values = min(window, h) * min(window, w)
        return self._scalar(y, moments.max_pool(self._moments(origin), num_values))

    def global_avg_pool(self, x: str, *, name: str) -> str:
        """GlobalAveragePool to [N, C, 1, 1]."""
        src = self.info[x]
        y = self.node("GlobalAveragePool", [x], name, shape=(*src.shape[:2], 1, 1))
        return self._scalar(y, moments.global_avg_pool(self._moments(x), src.shape[2] * src.shape[3]))

    def _moments(self, x: str) -> tuple[np.ndarray, np.ndarray]:
        return np.array([self.info[x].mean]), np.array([self.info[x].m2])

    def resize(self, x: str, scale: int, *, name: str) -> str:
        """Nearest-neighbour upsampling by an integer factor (as torch's nn.Upsample)."""
        src = self.info[x]
        n, c, h, w = src.shape
        scales = self.const([1.0, 1.0, float(scale), float(scale)])
        return self.node("Resize", [x, "", scales], name, shape=(n, c, h * scale, w * scale),
                         mean=src.mean, m2=src.m2, mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor")

    # ---- dense and tensor ops ----------------------------------------------------------

    def linear(self, x: str, out_features: int, *, name: str, gain: float = 1.0, bias: bool = True,
               bias_std: float = 0.02, out: str | None = None) -> str:
        """A fully connected layer: Gemm (torch layout, transB) on 2-D inputs, else MatMul + Add."""
        src = self.info[x]
        in_features = src.shape[-1]
        std = math.sqrt(gain / (in_features * max(src.m2, 1e-6)))
        rows = math.prod(src.shape[:-1])
        self.num_macs += rows * in_features * out_features
        shape = (*src.shape[:-1], out_features)
        m2 = gain + (bias_std**2 if bias else 0.0)
        if len(src.shape) == 2:
            self.normal(f"{name}.weight", (out_features, in_features), std)
            inputs = [x, f"{name}.weight"]
            if bias:
                self.normal(f"{name}.bias", (out_features,), bias_std)
                inputs.append(f"{name}.bias")
            return self.node("Gemm", inputs, name, shape=shape, m2=m2, out=out, transB=1)
        self.normal(f"{name}.weight", (in_features, out_features), std)
        if not bias:
            return self.node("MatMul", [x, f"{name}.weight"], name, shape=shape, m2=m2, out=out)
        y = self.node("MatMul", [x, f"{name}.weight"], f"{name}.matmul", shape=shape, m2=gain)
        self.normal(f"{name}.bias", (out_features,), bias_std)
        return self.node("Add", [y, f"{name}.bias"], name, shape=shape, m2=m2, out=out)

    def matmul(self, a: str, b: str, *, name: str) -> str:
        """MatMul of two activations (attention scores, attention-weighted values)."""
        ia, ib = self.info[a], self.info[b]
        k = ia.shape[-1]
        shape = (*broadcast_shapes(ia.shape[:-2], ib.shape[:-2]), ia.shape[-2], ib.shape[-1])
        self.num_macs += math.prod(shape) * k
        return self.node("MatMul", [a, b], name, shape=shape, mean=k * ia.mean * ib.mean,
                         m2=k * ia.m2 * ib.m2)

    def layer_norm(self, x: str, *, name: str, eps: float = 1e-5) -> str:
        """LayerNormalization over the last axis (decomposed into primitives below opset 17)."""
        src = self.info[x]
        dim = src.shape[-1]
        gamma = self.param(f"{name}.weight", (dim,),
                           lambda: 1.0 + 0.1 * self.rng.standard_normal(dim, dtype=np.float32))
        beta = self.param(f"{name}.bias", (dim,),
                          lambda: 0.02 * self.rng.standard_normal(dim, dtype=np.float32))
        mean, m2 = 0.0, 1.0
        if gamma is not None and beta is not None:
            mean, m2 = float(beta.mean()), float((gamma.astype(np.float64)**2 + beta**2).mean())
        kw = {"shape": src.shape, "mean": mean, "m2": m2}
        if self.opset >= 17:
            return self.node("LayerNormalization", [x, f"{name}.weight", f"{name}.bias"], name,
                             axis=-1, epsilon=eps, **kw)
        stat_shape = (*src.shape[:-1], 1)
        mu = self.node("ReduceMean", [x], f"{name}.mean", shape=stat_shape, axes=[-1])
        centred = self.node("Sub", [x, mu], f"{name}.centre", shape=src.shape)
        square = self.node("Mul", [centred, centred], f"{name}.square", shape=src.shape)
        var = self.node("ReduceMean", [square], f"{name}.var", shape=stat_shape, axes=[-1])
        var_eps = self.node("Add", [var, self.const(eps)], f"{name}.add_eps", shape=stat_shape)
        std = self.node("Sqrt", [var_eps], f"{name}.std", shape=stat_shape)
        normed = self.node("Div", [centred, std], f"{name}.normalize", shape=src.shape)
        scaled = self.node("Mul", [normed, f"{name}.weight"], f"{name}.scale", shape=src.shape)
        return self.node("Add", [scaled, f"{name}.bias"], name, **kw)

    def add(self, a: str, b: str, *, name: str, out: str | None = None) -> str:
        """Elementwise sum (a residual connection, a bias); moments add as if independent."""
        ia, ib = self.info[a], self.info[b]
        shape = broadcast_shapes(ia.shape, ib.shape)
        y = self.node("Add", [a, b], name, shape=shape, dtype=ia.dtype, mean=ia.mean + ib.mean,
                      m2=ia.m2 + ib.m2 + 2 * ia.mean * ib.mean, out=out)
        return y

    def binary(self, op: str, a: str, b: str, *, name: str) -> str:
        """Mul, Sub or Div with broadcasting; moments as for independent operands."""
        ia, ib = self.info[a], self.info[b]
        if op == "Mul":
            mean, m2 = ia.mean * ib.mean, ia.m2 * ib.m2
        elif op == "Sub":
            mean, m2 = ia.mean - ib.mean, ia.m2 + ib.m2 - 2 * ia.mean * ib.mean
        elif op == "Div":
            mean, m2 = ia.mean / ib.mean, ia.m2 / ib.m2
        else:
            raise ValueError(f"unknown binary op {op!r}")
        return self.node(op, [a, b], name, shape=broadcast_shapes(ia.shape, ib.shape), dtype=ia.dtype,
                         mean=mean, m2=m2)

    def reshape(self, x: str, shape: Sequence[int], *, name: str) -> str:
        """Reshape to a static shape (given in full, no -1)."""
        src = self.info[x]
        if math.prod(shape) != math.prod(src.shape):
            raise ValueError(f"{name}: cannot reshape {src.shape} to {tuple(shape)}")
        return self.node("Reshape", [x, self.const(list(shape), np.int64)], name, shape=shape,
                         dtype=src.dtype, mean=src.mean, m2=src.m2)

    def transpose(self, x: str, perm: Sequence[int], *, name: str) -> str:
        """Transpose by ``perm``."""
        src = self.info[x]
        return self.node("Transpose", [x], name, shape=[src.shape[p] for p in perm], dtype=src.dtype,
                         mean=src.mean, m2=src.m2, perm=list(perm))

    def flatten(self, x: str, *, name: str) -> str:
        """Flatten to [N, rest]."""
        src = self.info[x]
        return self.node("Flatten", [x], name, shape=(src.shape[0], math.prod(src.shape[1:])),
                         mean=src.mean, m2=src.m2, axis=1)

    def concat(self, xs: Sequence[str], axis: int, *, name: str) -> str:
        """Concat; moments are the size-weighted average of the parts."""
        infos = [self.info[x] for x in xs]
        shape = list(infos[0].shape)
        shape[axis] = sum(i.shape[axis] for i in infos)
        weights = [i.shape[axis] / shape[axis] for i in infos]
        mean = sum(w * i.mean for w, i in zip(weights, infos, strict=True))
        m2 = sum(w * i.m2 for w, i in zip(weights, infos, strict=True))
        y = self.node("Concat", list(xs), name, shape=shape, mean=mean, m2=m2, axis=axis)
        return y

    def softmax(self, x: str, *, name: str) -> str:
        """Softmax over the last axis; moments as for a peaked distribution."""
        src = self.info[x]
        n = src.shape[-1]
        return self.node("Softmax", [x], name, shape=src.shape, mean=1.0 / n, m2=1.0 / n, axis=-1)

    def gather(self, data: str, indices: str, *, name: str, axis: int = 0) -> str:
        """Gather rows of ``data`` (an embedding lookup, a token pick)."""
        src, idx = self.info[data], self.info[indices]
        shape = (*src.shape[:axis], *idx.shape, *src.shape[axis + 1:])
        return self.node("Gather", [data, indices], name, shape=shape, mean=src.mean, m2=src.m2,
                         axis=axis)

    def cast(self, x: str, to: int, *, name: str) -> str:
        """Cast to another element type."""
        src = self.info[x]
        return self.node("Cast", [x], name, shape=src.shape, dtype=to, mean=src.mean, m2=src.m2, to=to)

    def unsqueeze(self, x: str, axes: Sequence[int], *, name: str) -> str:
        """Unsqueeze (axes as an input, opset 13 and later)."""
        src = self.info[x]
        shape = list(src.shape)
        for axis in sorted(axes):
            shape.insert(axis, 1)
        return self.node("Unsqueeze", [x, self.const(list(axes), np.int64)], name, shape=shape,
                         dtype=src.dtype, mean=src.mean, m2=src.m2)

