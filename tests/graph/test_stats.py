"""FLOPs/MACs per node against textbook numbers."""

from __future__ import annotations

import onnx
import pytest
from onnx import helper

from splitinfer.graph import count_node

SHAPES = {
    "x": (1, 64, 56, 56), "w3": (64, 64, 3, 3), "y": (1, 64, 56, 56),
    "wg": (64, 16, 3, 3),  # grouped, group=4
    "a": (32, 512), "b": (1000, 512), "g": (32, 1000),
    "q": (8, 12, 128, 64), "k": (8, 12, 64, 128), "s": (8, 12, 128, 128),
    "t_in": (1, 16, 14, 14), "t_w": (16, 8, 2, 2), "t_out": (1, 8, 28, 28),
    "p_out": (1, 64, 28, 28), "gap": (1, 64, 1, 1),
    "r_out": (1, 64, 112, 112),
}


def _count(node: onnx.NodeProto):
    return count_node(node, SHAPES.get)


def test_conv_textbook():
    stats = _count(helper.make_node("Conv", ["x", "w3"], ["y"], pads=[1, 1, 1, 1]))
    assert stats.macs == 64 * 64 * 3 * 3 * 56 * 56
    assert stats.flops == 2 * stats.macs


def test_grouped_conv():
    stats = _count(helper.make_node("Conv", ["x", "wg"], ["y"], group=4, pads=[1, 1, 1, 1]))
    assert stats.macs == 56 * 56 * 64 * 16 * 9


def test_gemm_textbook():
    stats = _count(helper.make_node("Gemm", ["a", "b"], ["g"], transB=1))
    assert stats.macs == 32 * 512 * 1000 and stats.flops == 2 * 32 * 512 * 1000


def test_batched_matmul_and_einsum_agree():
    mm = _count(helper.make_node("MatMul", ["q", "k"], ["s"]))
    assert mm.macs == 8 * 12 * 128 * 128 * 64
    es = _count(helper.make_node("Einsum", ["q", "k"], ["s"], equation="bhqd,bhdk->bhqk"))
    assert es == mm


def test_conv_transpose():
    stats = _count(helper.make_node("ConvTranspose", ["t_in", "t_w"], ["t_out"], strides=[2, 2]))
    assert stats.macs == 16 * 14 * 14 * 8 * 2 * 2


@pytest.mark.parametrize(
    ("node", "flops"),
    [
        (helper.make_node("Relu", ["y"], ["y2"]), 64 * 56 * 56),
        (helper.make_node("Add", ["y", "y"], ["y2"]), 64 * 56 * 56),
        (helper.make_node("Sigmoid", ["y"], ["y2"]), 4 * 64 * 56 * 56),
        (helper.make_node("MaxPool", ["y"], ["p_out"], kernel_shape=[2, 2], strides=[2, 2]),
         64 * 28 * 28 * 4),
        (helper.make_node("GlobalAveragePool", ["y"], ["gap"]), 64 * 56 * 56),
        (helper.make_node("Softmax", ["s"], ["s2"]), 5 * 8 * 12 * 128 * 128),
        (helper.make_node("Resize", ["y", "", "sc"], ["r_out"], mode="nearest"), 64 * 112 * 112),
        (helper.make_node("Resize", ["y", "", "sc"], ["r_out"], mode="linear"), 8 * 64 * 112 * 112),
        (helper.make_node("Reshape", ["y", "shape"], ["y2"]), 0),
    ],
)
def test_other_ops(node, flops):
    shapes = {**SHAPES, "y2": SHAPES["y"], "s2": SHAPES["s"]}
    stats = count_node(node, shapes.get)
    assert stats.flops == flops and stats.macs == 0


def test_batch_norm_and_unknown_shapes():
    bn = helper.make_node("BatchNormalization", ["y", "g", "b", "m", "v"], ["y2"])
    assert count_node(bn, {"y2": (1, 64, 56, 56)}.get).macs == 64 * 56 * 56
    assert count_node(helper.make_node("Conv", ["u", "w"], ["v"]), {}.get) == (0, 0)


@pytest.mark.parametrize(("op", "gates"), [("LSTM", 4), ("GRU", 3), ("RNN", 1)])
def test_recurrent_layers_count_their_gates_products(op, gates):
    # seq 10, batch 2, input 32, hidden 64, both directions: per step, direction and row,
    # gates x (input + hidden) x hidden multiply-adds
    shapes = {"seq": (10, 2, 32), "w": (2, gates * 64, 32), "r": (2, gates * 64, 64)}
    stats = count_node(helper.make_node(op, ["seq", "w", "r"], ["y"], hidden_size=64,
                                        direction="bidirectional"), shapes.get)
    assert stats.macs == 10 * 2 * 2 * gates * (32 + 64) * 64 and stats.flops == 2 * stats.macs
    batch_first = {"seq": (2, 10, 32), "w": shapes["w"]}  # layout 1: (batch, seq, input)
    assert count_node(helper.make_node(op, ["seq", "w", "r"], ["y"], hidden_size=64, layout=1),
                      batch_first.get) == stats
