"""The zoo's models with early exits: heads where they should be, outputs in depth order, their
exits in the metadata with thresholds that about half the inputs pass at each exit."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from splitinfer import zoo
from splitinfer.cli import main
from splitinfer.quality.confidence import confidence
from splitinfer.zoo import exits as zoo_exits

NAMES = ["resnet18_exits", "bert_exits"]
# name -> (the tensor each exit head reads, the number of classes) in the small variant
HEADS = {"resnet18_exits": ({"exit1.pool": "layer1.0.relu", "exit2.pool": "layer3.0.relu"}, 10),
         "bert_exits": ({"exit1.first_token": "encoder.layer.0.output.LayerNorm",
                         "exit2.first_token": "encoder.layer.1.output.LayerNorm"}, 2)}


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def exits_of(model: onnx.ModelProto) -> list[dict]:
    return json.loads({p.key: p.value for p in model.metadata_props}[zoo_exits.EXITS_KEY])


@pytest.mark.parametrize("name", NAMES)
def test_small_variant_has_two_exits_then_the_final_logits(name):
    model = zoo.build_small(name)
    onnx.checker.check_model(model, full_check=True)
    heads, num_classes = HEADS[name]
    assert [o.name for o in model.graph.output] == ["exit1", "exit2", "logits"]
    nodes = {n.name: n for n in model.graph.node}
    for head, trunk in heads.items():
        assert nodes[head].input[0] == trunk
    feeds = zoo_exits._feeds(model, zoo.ZooConfig(vocab_size=1000), np.random.default_rng(5))
    for out in session(model).run(None, feeds):
        assert out.shape == (1, num_classes) and np.isfinite(out).all()
    exits = exits_of(model)
    assert [e["output"] for e in exits] == ["exit1", "exit2"]
    rule = "softmax_max" if name == "resnet18_exits" else "entropy"
    assert all(e["rule"] == rule and e["threshold"] > 0 for e in exits)
    assert rule == "entropy" or all(e["threshold"] <= 1 for e in exits)


@pytest.mark.parametrize("name", NAMES)
def test_half_the_inputs_leave_at_the_first_exit_and_half_the_rest_at_the_second(name):
    model = zoo.build_small(name)
    cfg = zoo.ZooConfig(vocab_size=1000)
    sess = session(model)
    rng = np.random.default_rng([0, 0xE817])  # the inputs the thresholds were set on (seed 0)
    runs = [sess.run(["exit1", "exit2"], zoo_exits._feeds(model, cfg, rng)) for _ in range(16)]
    remaining = np.ones(16, dtype=bool)
    left = []
    for k, e in enumerate(exits_of(model)):
        values = confidence(e["rule"], np.concatenate([r[k] for r in runs]))
        passed = values >= e["threshold"] if e["rule"] == "softmax_max" else values <= e["threshold"]
        left.append(int((passed & remaining).sum()))
        remaining &= ~passed
    assert left == [8, 4]


def test_exit_layers_sit_at_a_third_and_two_thirds():
    assert zoo_exits.exit_layers(12) == (3, 7)
    assert zoo_exits.exit_layers(6) == (1, 3)
    assert zoo_exits.exit_layers(3) == (0, 1)


def test_full_size_adds_only_the_heads():
    plain, exits = zoo.summarize("resnet18"), zoo.summarize("resnet18_exits")
    assert exits.num_params - plain.num_params == (64 + 1) * 1000 + (256 + 1) * 1000
    assert [s.shape for s in exits.outputs] == [(1, 1000)] * 3
    bert, bert_exits = zoo.summarize("bert"), zoo.summarize("bert_exits")
    # Two heads (LayerNorm + 768 x 2 Gemm) and a 768 x 2 classifier on the pooler.
    assert bert_exits.num_params - bert.num_params == 2 * (2 * 768 + 769 * 2) + 769 * 2
    assert [s.shape for s in bert_exits.outputs] == [(1, 2)] * 3
    assert "early exits" in zoo.describe("bert_exits")


def test_the_depth_keeps_three_layers_for_two_exits():
    model = zoo.build("bert_exits", width=0.125, depth=0.1, resolution=8)
    layers = {n.name.split(".")[2] for n in model.graph.node if n.name.startswith("encoder.layer.")}
    assert layers == {"0", "1", "2"}


def test_cli_builds_it_with_its_exits(tmp_path, capsys):
    path = tmp_path / "r.onnx"
    assert main(["zoo", "build", "resnet18_exits", "--small", "-o", str(path)]) == 0
    assert "resnet18_exits (small)" in capsys.readouterr().out
    assert onnx.load(path).SerializeToString() == zoo.build_small("resnet18_exits").SerializeToString()
