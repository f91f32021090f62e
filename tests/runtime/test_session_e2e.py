"""End to end on loopback: local workers, a chain of stages, results equal to the whole model."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
from helpers.runtime_models import (
    local_cluster,
    mixed_feeds,
    mixed_parts,
    mlp_parts,
    stages_on,
    whole_and_parts,
)

from splitinfer.errors import (
    ClusterError,
    DeadlineError,
    ModelError,
    ShapeError,
    SplitinferError,
    WorkerError,
)
from splitinfer.runtime import SessionOptions, deploy_stages

WIDTH, BATCH = 32, 4


@pytest.fixture(scope="module")
def chain():
    """4 stages on 3 local workers, stages 1 and 2 on the same device."""
    whole, parts = whole_and_parts(mlp_parts(4, width=WIDTH, batch=BATCH))
    cluster = local_cluster(["a", "b", "c"])
    with deploy_stages(stages_on(parts, ["a", "b", "b", "c"]), cluster, timeout_s=20) as session:
        yield session, ort.InferenceSession(whole, providers=["CPUExecutionProvider"])


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, WIDTH)).astype(np.float32)


def test_outputs_equal_the_whole_model(chain):
    session, whole = chain
    assert [s.name for s in session.inputs] == ["t0"] and [s.name for s in session.outputs] == ["t4"]
    x = _x(0)
    (expected,) = whole.run(None, {"t0": x})
    (got,) = session.run(None, {"t0": x})
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert np.max(np.abs(got - expected)) <= 1e-4
    assert session.run(["t4"], {"t0": x})[0].shape == (BATCH, WIDTH)


def test_timing_record_covers_every_stage_and_hop(chain):
    session, _ = chain
    session.run(None, {"t0": _x(1)})
    timing = session.last_timing
    assert [s.device for s in timing.stages] == ["a", "b", "b", "c"]
    assert all(s.compute_s > 0 and s.wait_s == 0 for s in timing.stages)
    # each stage's queue, compute and wait and each hop's transfer are disjoint spans of the request
    parts = sum(s.queue_s + s.busy_s for s in timing.stages) + sum(h.transfer_s for h in timing.hops)
    assert 0 < parts <= timing.latency_s
    route = [(h.src, h.dst) for h in timing.hops]
    assert route == [("a", "a"), ("a", "b"), ("b", "b"), ("b", "c"), ("c", "a")]
    assert all(h.num_bytes == BATCH * WIDTH * 4 for h in timing.hops)
    assert timing.hops[2].transfer_s < 0.05  # same device: handed over in memory
    assert 0 < sum(s.busy_s for s in timing.stages) < timing.latency_s
    assert timing.num_attempts == 1
    assert timing.to_dict()["stages"][0]["device"] == "a"


def test_200_requests_at_concurrency_8_each_match_their_own_input(chain):
    session, whole = chain
    inputs = [_x(100 + i) for i in range(200)]
    expected = [whole.run(None, {"t0": x})[0] for x in inputs]
    start = time.perf_counter()
    results = list(session.stream(({"t0": x} for x in inputs), max_in_flight=8))
    elapsed = time.perf_counter() - start
    assert len(results) == 200 and len({r.request_id for r in results}) == 200
    for got, want in zip(results, expected, strict=True):
        assert np.max(np.abs(got.outputs["t4"] - want)) <= 1e-4
    assert elapsed < 30


def test_concurrent_callers_from_8_threads(chain):
    session, whole = chain
    errors: list[BaseException] = []

    def caller(offset: int) -> None:
        try:
            for i in range(10):
                x = _x(1000 + offset * 10 + i)
                (got,) = session.run(None, {"t0": x})
                np.testing.assert_allclose(got, whole.run(None, {"t0": x})[0], atol=1e-4)
        except BaseException as e:  # collected and re-raised in the test thread
            errors.append(e)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]


def test_bad_feeds_and_output_names_are_refused_before_sending(chain):
    session, _ = chain
    with pytest.raises(ShapeError, match="dtype float64"):
        session.run(None, {"t0": _x(0).astype(np.float64)})
    with pytest.raises(ShapeError, match="shape"):
        session.run(None, {"t0": _x(0)[:1]})
    with pytest.raises(ShapeError, match="missing"):
        session.run(None, {"x": _x(0)})
    with pytest.raises(ModelError, match="not an output"):
        session.run(["nope"], {"t0": _x(0)})


def test_a_deadline_too_short_raises_in_time(chain):
    session, _ = chain
    start = time.perf_counter()
    with pytest.raises(DeadlineError):
        session.run(None, {"t0": _x(0)}, deadline_s=1e-4)
    assert time.perf_counter() - start < 1.0
    assert session.run(None, {"t0": _x(0)})[0].shape == (BATCH, WIDTH)  # still serving


@pytest.mark.parametrize("deadline_s", [float("nan"), float("inf"), 0.0, -1.0, 1e12, "5", True])
def test_a_deadline_out_of_range_is_refused_naming_deadline_s(chain, deadline_s):
    session, _ = chain
    for call in (lambda: session.submit({"t0": _x(0)}, deadline_s=deadline_s),
                 lambda: session.run(None, {"t0": _x(0)}, deadline_s=deadline_s),
                 lambda: next(session.stream([{"t0": _x(0)}], deadline_s=deadline_s))):
        with pytest.raises(SplitinferError) as e:
            call()
        assert e.value.problem.startswith("deadline_s is") and "finite number > 0" in e.value.fix
    with pytest.raises(SplitinferError, match="max_in_flight is 0"):
        next(session.stream([{"t0": _x(0)}], max_in_flight=0))
    assert session.run(None, {"t0": _x(0)}, deadline_s=5)[0].shape == (BATCH, WIDTH)  # nothing pending


@pytest.mark.parametrize("field", ["timeout_s", "heartbeat_interval_s", "dead_after_s", "deploy_timeout_s",
                                   "connect_timeout_s", "startup_timeout_s"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -5.0])
def test_session_options_out_of_range_are_refused_before_anything_starts(field, value):
    _, parts = whole_and_parts(mlp_parts(1, width=8, batch=2))
    with pytest.raises(SplitinferError) as e:
        SessionOptions(**{field: value})
    assert e.value.problem == f"SessionOptions.{field} is {value!r}" and "finite number > 0" in e.value.fix
    with pytest.raises(SplitinferError, match=field):  # as keyword overrides too, before any worker starts
        deploy_stages(stages_on(parts, ["a"]), local_cluster(["a"]), **{field: value})


def test_an_unknown_session_option_is_one_line_naming_it():
    _, parts = whole_and_parts(mlp_parts(1, width=8, batch=2))
    with pytest.raises(SplitinferError, match="unknown session option 'timeout'") as caught:
        deploy_stages(stages_on(parts, ["a"]), local_cluster(["a"]), timeout=5)
    assert "timeout_s" in caught.value.fix


def test_mixed_dtypes_several_inputs_and_outputs():
    whole, parts = whole_and_parts(mixed_parts())
    feeds = mixed_feeds()
    reference = ort.InferenceSession(whole).run(None, feeds)
    cluster = local_cluster(["a", "b"])
    with deploy_stages(stages_on(parts, ["a", "b"]), cluster) as session:
        got = session.run(None, feeds)
        future = session.submit(mixed_feeds(seed=5))
        result = future.result(timeout=20)
    assert [o.dtype for o in got] == [r.dtype for r in reference]
    for g, r in zip(got, reference, strict=True):
        assert g.shape == r.shape
        if g.dtype.kind == "f":
            assert np.max(np.abs(g - r)) <= 1e-4
        else:
            np.testing.assert_array_equal(g, r)
    assert set(result.outputs) == {"y", "ids_out", "mask_out", "empty_shape"}
    with pytest.raises(WorkerError, match="closed"):
        session.submit(feeds)


def test_chains_that_do_not_fit_are_refused_before_starting_anything():
    _, parts = whole_and_parts(mlp_parts(2, width=8, batch=2))
    cluster = local_cluster(["a", "b"])
    swapped = stages_on([parts[1], parts[0]], ["a", "b"])
    with pytest.raises(ClusterError, match="index"):
        deploy_stages([swapped[1], swapped[0]], cluster)
    from splitinfer.runtime import StageSpec
    broken = [StageSpec(0, "a", *parts[1]), StageSpec(1, "b", *parts[1])]
    with pytest.raises(ShapeError, match="outputs"):
        deploy_stages(broken, cluster)
    with pytest.raises(ClusterError, match="unknown device"):
        deploy_stages(stages_on(parts, ["a", "zz"]), cluster)
    apart = local_cluster(["a", "b"], connect_all=False)
    with pytest.raises(ClusterError, match="not connected"):
        deploy_stages(stages_on(parts, ["a", "b"]), apart)
