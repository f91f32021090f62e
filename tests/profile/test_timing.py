"""The stopping rule and summary statistics of the timing loop; timing one partition."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from onnx import TensorProto, helper

from splitinfer.errors import ModelError, ShapeError, WorkerError
from splitinfer.profile.partition_timing import PartitionTiming
from splitinfer.profile.rounds import median_ci_rel
from splitinfer.profile.timing import measure, summarize, time_partition


def test_summary_matches_numpy_on_the_runs_the_outlier_rule_keeps():
    xs = [0.010, 0.012, 0.011, 0.013, 0.050, 0.011, 0.012, 0.010, 0.011, 0.012]
    kept = [x for x in xs if x != 0.050]  # Q3 + 3 IQR = 0.012 + 3 x 0.001: 0.050 is far out
    s = summarize(xs)
    assert s.median_s == pytest.approx(np.median(kept))
    assert s.p90_s == pytest.approx(np.percentile(kept, 90))
    assert s.n == 9 and s.outliers == 1 and s.mean_s == pytest.approx(np.mean(kept))
    assert summarize(kept).outliers == 0


def test_ci_shrinks_with_more_samples():
    rng = np.random.default_rng(0)
    few = rng.lognormal(-4, 0.2, 20)
    many = rng.lognormal(-4, 0.2, 2000)
    assert median_ci_rel(many) < median_ci_rel(few)
    assert median_ci_rel([1.0, 2.0]) == math.inf


class FakeClock:
    """A clock advanced by the workload itself: durations are exactly known."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = itertools.cycle(durations)

    def __call__(self):
        return self.now

    def work(self):
        self.now += next(self.durations)


def test_stops_early_when_stable():
    clock = FakeClock([0.01])
    times = measure(clock.work, min_runs=10, max_runs=500, clock=clock)
    assert len(times) == 10  # identical durations: CI is zero at the first check


def test_keeps_going_while_noisy_and_respects_budget():
    spread = np.random.default_rng(1).lognormal(-4, 1.0, 1000)  # CI needs ~4000 runs to tighten
    clock = FakeClock(spread.tolist())
    times = measure(clock.work, min_runs=5, max_runs=10_000, budget_s=3.0, clock=clock)
    assert 3.0 <= sum(times) < 3.2
    assert len(times) > 5


def test_warmup_runs_are_not_recorded():
    clock = FakeClock([1.0, 1.0, 0.5])
    times = measure(clock.work, num_warmup=2, min_runs=3, max_runs=3, clock=clock)
    assert times == [0.5, 1.0, 1.0]


def _relu_model() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_time_partition_gives_the_outputs_and_scales_by_the_slowdown():
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    timing = time_partition(_relu_model(), {"x": x}, num_threads=1, slowdown=3.0, num_warmup=2, min_runs=4,
                            max_runs=4)
    assert isinstance(timing, PartitionTiming) and timing.create_s > 0
    assert len(timing.compute_times_s) == 4 and all(t > 0 for t in timing.compute_times_s)
    assert timing.times_s == pytest.approx([3 * t for t in timing.compute_times_s])
    np.testing.assert_array_equal(timing.outputs["y"], np.maximum(x, 0))


def _reshape_model() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])
    shape = helper.make_tensor_value_info("shape", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    graph = helper.make_graph([node], "reshape", [x, shape], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_time_partition_words_each_failure():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ShapeError, match=r"the partition takes \['x'\], which the feeds lack"):
        time_partition(_relu_model(), {"z": x})
    with pytest.raises(ShapeError, match="the partition rejects its inputs"):
        time_partition(_relu_model(), {"x": np.ones((2, 3), np.float64)})
    with pytest.raises(WorkerError, match="timing the partition failed"):  # fails in the kernel
        time_partition(_reshape_model(), {"x": np.ones(6, np.float32), "shape": np.array([4, 4])})
    with pytest.raises(ModelError, match="ONNX Runtime cannot load the model"):
        time_partition(b"junk", {"x": x})
    with pytest.raises(WorkerError, match="NoSuchExecutionProvider not available"):
        time_partition(_relu_model(), {"x": x}, providers=["NoSuchExecutionProvider"])


def test_an_emulated_wait_ends_on_time_whatever_is_left():
    from splitinfer.profile.timing import SPIN_S, hold_busy

    for compute_s in (0.0, 1e-6, SPIN_S / 2, SPIN_S, 2 * SPIN_S):  # spun only, at the edge, slept and spun
        start = time.perf_counter()
        waited = hold_busy(start, compute_s, 3.0)
        assert waited >= 0 and time.perf_counter() - start >= 3.0 * compute_s
        assert time.perf_counter() - start < 3.0 * compute_s + 0.05  # not a sleep's overshoot of a block
    assert hold_busy(time.perf_counter(), 0.01, 1.0) == 0.0  # no slowdown: no wait
