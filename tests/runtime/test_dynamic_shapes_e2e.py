"""Models split across tensors whose size depends on the input values, run on local workers: every
size reaches the next stage and the outputs equal the whole model's (issue 16, item 3)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from helpers.dynamic_models import boxes_with_kept, nms_model, nonzero_model, topk_model, x_with_positives
from helpers.runtime_models import local_cluster, make_model
from onnx import helper, numpy_helper

from splitinfer.graph import analyze, load_model, split
from splitinfer.runtime import StageSpec, deploy_stages
from splitinfer.runtime.device._execution import StageRunner, zeros_for
from splitinfer.types import TensorSpec

# model, inputs with a chosen count, the counts to send (each a different size of the varying tensors)
CASES = {
    "nonzero": (nonzero_model, x_with_positives, (0, 3, 8, 13)),
    "nms": (nms_model, boxes_with_kept, (0, 2, 5, 8)),
    "topk": (topk_model, x_with_positives, (1, 4, 9, 16)),
}


def _varying_cuts(model):
    """The first and the last candidate cut (of the analysis) that a varying tensor crosses."""
    analysis = analyze(model, max_blocks=0)
    crossing = [c for c in analysis.candidates if any(t.name in model.dynamic_dims for t in c.tensors)]
    assert crossing, "some candidate cut crosses a varying tensor"
    return analysis, list(dict.fromkeys([crossing[0].position, crossing[-1].position]))


@pytest.mark.parametrize("case", sorted(CASES))
def test_stages_on_workers_take_every_size_and_match_the_whole_model(case):
    build, make_feeds, counts = CASES[case]
    model = load_model(build())
    analysis, positions = _varying_cuts(model)
    parts = split(model, positions, analysis)
    assert len(parts) == len(positions) + 1 and any(s.varies for p in parts[1:] for s in p.inputs)
    devices = ["a", "b", "a"][:len(parts)]
    stages = [StageSpec(k, dev, p.to_bytes(), p.inputs, p.outputs)
              for k, (p, dev) in enumerate(zip(parts, devices, strict=True))]
    whole = ort.InferenceSession(build().SerializeToString(), providers=["CPUExecutionProvider"])
    varying = [s.name for s in parts[1].inputs if s.varies]
    probe = ort.InferenceSession(parts[0].to_bytes(), providers=["CPUExecutionProvider"])
    sizes, worst = [], 0.0
    with deploy_stages(stages, local_cluster(["a", "b"]), timeout_s=30) as session:
        for count in counts:
            feeds = make_feeds(count, seed=count)
            (want,) = whole.run(None, feeds)
            (got,) = session.run(None, feeds)
            assert got.shape == want.shape and got.dtype == want.dtype
            worst = max(worst, float(np.max(np.abs(got - want), initial=0.0)))
            cut = dict(zip([s.name for s in parts[0].outputs], probe.run(None, feeds), strict=True))
            sizes.append(tuple(cut[n].shape for n in varying))
    assert len(set(sizes)) >= 3, sizes  # the cut carried at least three different sizes
    assert worst <= 1e-5
    crossing = [[s.name for s in p.inputs] for p in parts[1:]]
    print(f"\n{case}: cuts at {positions} {crossing}, sizes at the first cut {sizes}, "
          f"max abs diff {worst:.3g}")


def test_warm_up_feeds_a_varying_dim_the_size_seen_else_one():
    specs = [TensorSpec("nz", "int64", (2, -1), seen=(2, 7)), TensorSpec("v", "float32", (-1,))]
    feeds = zeros_for(specs)
    assert feeds["nz"].shape == (2, 7) and feeds["v"].shape == (1,)


def _reshape_stage(shape: tuple[int, ...]) -> StageRunner:
    """v -> Reshape(v, [2, -1]), declared ``shape``: zeros of one element are no input it takes."""
    model = make_model([helper.make_node("Reshape", ["v", "two_rows"], ["y"])],
                       [TensorSpec("v", "float32", (-1,))], [TensorSpec("y", "float32", (2, -1))],
                       [numpy_helper.from_array(np.array([2, -1], np.int64), "two_rows")])
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the rejected warm-up is expected: not logged
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return StageRunner(session, (TensorSpec("v", "float32", shape),), (TensorSpec("y", "float32", (2, -1)),))


def test_warm_up_of_a_stage_whose_sizes_vary_gives_up_on_zeros_it_rejects():
    runner = _reshape_stage((-1,))  # a worker's spec: -1, no size seen: warmed on 1 element, rejected
    runner.warm_up(2)
    assert runner.last_busy_s == float("inf")  # not warmed: the first request does it
    outs, _, _ = runner.run({"v": np.arange(6, dtype=np.float32)})
    assert outs[0].shape == (2, 3)
    with pytest.raises(Exception, match="Reshape"):  # a static spec the partition rejects still fails
        _reshape_stage((1,)).warm_up(1)


