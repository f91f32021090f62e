"""FLOPs and MACs of one node, from the shapes of its inputs and outputs.

Convention: a MAC is one multiply-add. For Conv, ConvTranspose, Gemm, MatMul,
Einsum and their quantized/fused variants, FLOPs = 2 x MACs (bias adds, alpha
and beta are not counted: the textbook number, e.g. a 3x3 Conv 64->64 on 56x56
is 2*64*64*9*56*56 FLOPs). BatchNormalization counts one MAC and two FLOPs per
element (inference folds it into a scale and a shift). Other ops count no MACs
and the FLOPs listed in ``_ELEMENTWISE_FLOPS`` per output element (1 for plain
arithmetic, more for transcendental functions); pooling counts one FLOP per
window element per output; reductions one per input element; Softmax 5 and
LayerNormalization 8 per element; Resize 1 (nearest), 2*2^k (linear) or
2*4^k (cubic) per output element, k = number of resized axes. Data movement
(Reshape, Transpose, Concat, Gather, Slice, ...) counts 0. Nodes with
subgraphs (If, Loop, Scan) count 0: which branch runs, and how often, is data.
Recurrent layers (LSTM, GRU, RNN) count their gates' matrix products: per time
step, direction and batch row, gates x (input + hidden) x hidden MACs (4 gates
for LSTM, 3 for GRU, 1 for RNN); their activations and cell updates are not
counted, as a Conv's bias is not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import onnx
from onnx import helper

ShapeOf = Callable[[str], "tuple[int, ...] | None"]


class NodeStats(NamedTuple):
    """Arithmetic work of one node."""

    flops: int
    macs: int


_ELEMENTWISE_FLOPS: dict[str, int] = {
    **dict.fromkeys(
        ["Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "PRelu", "Neg", "Abs", "Max", "Min", "Sum",
         "Mean", "Clip", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Equal", "Greater",
         "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Not", "Where", "Mod", "Pow",
         "ThresholdedRelu", "BitShift", "Dropout", "QuantizeLinear", "DequantizeLinear"],
        1,
    ),
    **dict.fromkeys(["Sigmoid", "Tanh", "Exp", "Log", "Erf", "Softplus", "Softsign", "Elu", "Selu",
                     "Celu", "HardSigmoid", "HardSwish", "Sin", "Cos", "IsNaN", "IsInf"], 4),
    **dict.fromkeys(["Gelu", "Mish", "FastGelu", "BiasGelu", "QuickGelu"], 8),
}
_POOL = frozenset({"MaxPool", "AveragePool", "LpPool", "QLinearAveragePool"})
_GLOBAL_POOL = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "QLinearGlobalAveragePool"})
_REDUCE = frozenset({"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                     "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin"})
# (op, weight input slot) for convolutions, plain and quantized/fused.
_CONV_WEIGHT = {"Conv": 1, "ConvInteger": 1, "FusedConv": 1, "NhwcConv": 1, "QLinearConv": 3}
_MATMUL_B = {"MatMul": 1, "MatMulInteger": 1, "FusedMatMul": 1, "QLinearMatMul": 3}
_RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _numel(shape: tuple[int, ...] | None) -> int:
    return math.prod(shape) if shape is not None else 0


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _str_attr(node: onnx.NodeProto, name: str, default: str) -> str:
    value = _attr(node, name)
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def _conv(node: onnx.NodeProto, shape_of: ShapeOf) -> int:
    weight = shape_of(node.input[_CONV_WEIGHT[node.op_type]])
    out = shape_of(node.output[0])
    if weight is None or out is None:
        return 0
    # weight: (Cout, Cin/group, *kernel); every output element needs Cin/group * kernel MACs.
    return _numel(out) * math.prod(weight[1:])


def _conv_transpose(node: onnx.NodeProto, shape_of: ShapeOf) -> int:
    x, weight = shape_of(node.input[0]), shape_of(node.input[1])
    if x is None or weight is None:
        return 0
    # weight: (Cin, Cout/group, *kernel); every input element scatters into Cout/group * kernel.
    return _numel(x) * math.prod(weight[1:])


def _matmul(node: onnx.NodeProto, shape_of: ShapeOf) -> int:
    a = shape_of(node.input[0])
    out = shape_of(node.output[0])
    if a is None or out is None or not a:
        return 0
    return _numel(out) * a[-1]


def _gemm(node: onnx.NodeProto, shape_of: ShapeOf) -> int:
    a, out = shape_of(node.input[0]), shape_of(node.output[0])
    if a is None or out is None or len(a) != 2:
        return 0
    k = a[0] if _attr(node, "transA", 0) else a[1]
    return _numel(out) * k


def _einsum(node: onnx.NodeProto, shape_of: ShapeOf) -> int:
    equation = _str_attr(node, "equation", "")
    lhs = equation.replace(" ", "").split("->")[0].split(",")
    if "..." in equation or len(lhs) != len(node.input):
        return 0
    sizes: dict[str, int] = {}
    for letters, name in zip(lhs, node.input, strict=True):
        shape = shape_of(name)
        if shape is None or len(shape) != len(letters):
            return 0
        sizes.update(zip(letters, shape, strict=True))
    # Every combination of all indices is one multiply-add (for two operands).
    return math.prod(sizes.values()) * max(1, len(lhs) - 1)


def _recurrent(node: onnx.NodeProto, shape_of: ShapeOf) -> int:
    x, w = shape_of(node.input[0]), shape_of(node.input[1])
    hidden = _attr(node, "hidden_size")
    if x is None or w is None or len(x) != 3 or len(w) != 3 or not hidden:
        return 0
    # x: (seq, batch, input) (layout 0); w: (directions, gates * hidden, input)
    seq, batch = (x[1], x[0]) if _attr(node, "layout", 0) else (x[0], x[1])
    gates = _RECURRENT_GATES[node.op_type]
    return seq * batch * w[0] * gates * (w[2] + int(hidden)) * int(hidden)  # type: ignore[call-overload]


def _pool(node: onnx.NodeProto, shape_of: ShapeOf) -> int:
    kernel = _attr(node, "kernel_shape", [])
    return _numel(shape_of(node.output[0])) * math.prod(kernel)  # type: ignore[arg-type]


def _resize(node: onnx.NodeProto, shape_of: ShapeOf) -> int:
    x, out = shape_of(node.input[0]), shape_of(node.output[0])
    if x is None or out is None:
        return 0
    mode = _str_attr(node, "mode", "nearest")
    k = sum(1 for a, b in zip(x, out, strict=False) if a != b)
    per = {"nearest": 1, "linear": 2 * 2**k, "cubic": 2 * 4**k}.get(mode, 1)
    return _numel(out) * per


def count_node(node: onnx.NodeProto, shape_of: ShapeOf) -> NodeStats:
    """FLOPs and MACs of ``node``; ``shape_of(name)`` gives a tensor's shape or None."""
    op = node.op_type
    if op in _CONV_WEIGHT:
        macs = _conv(node, shape_of)
    elif op in ("ConvTranspose", "QLinearConvTranspose"):
        macs = _conv_transpose(node, shape_of)
    elif op in _MATMUL_B:
        macs = _matmul(node, shape_of)
    elif op == "Gemm":
        macs = _gemm(node, shape_of)
    elif op == "Einsum":
        macs = _einsum(node, shape_of)
    elif op in _RECURRENT_GATES:
        macs = _recurrent(node, shape_of)
    elif op == "BatchNormalization":
        n = _numel(shape_of(node.output[0]))
        return NodeStats(2 * n, n)
    else:
        return NodeStats(_count_other(node, shape_of), 0)
    return NodeStats(2 * macs, macs)


def _count_other(node: onnx.NodeProto, shape_of: ShapeOf) -> int:
    op = node.op_type
    if op in _ELEMENTWISE_FLOPS:
        return _ELEMENTWISE_FLOPS[op] * _numel(shape_of(node.output[0]))
    if op in _POOL:
        return _pool(node, shape_of)
    if op in _GLOBAL_POOL or op in _REDUCE:
        return _numel(shape_of(node.input[0]))
    if op in ("Softmax", "LogSoftmax"):
        return 5 * _numel(shape_of(node.output[0]))
    if op in ("LayerNormalization", "SkipLayerNormalization", "InstanceNormalization",
              "GroupNormalization", "SimplifiedLayerNormalization"):
        return 8 * _numel(shape_of(node.output[0]))
    if op == "Resize" or op == "Upsample":
        return _resize(node, shape_of)
    return 0
