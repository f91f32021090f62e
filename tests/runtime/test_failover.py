"""Workers that die or stop answering: requests move to a new pipeline or fail in time, never hang."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import numpy as np
import onnxruntime as ort
import pytest
from helpers.runtime_models import local_cluster, mlp_parts, stages_on, whole_and_parts

from splitinfer.errors import InfeasibleError, SplitinferError, WorkerError
from splitinfer.runtime import deploy_stages

DEVICES = ["a", "b", "c"]
DEADLINE_S = 10.0


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((4, 16)).astype(np.float32)


def _settle(futures: list[tuple[float, np.ndarray, Future]], margin_s: float = 1.0):
    """Wait for every future; each must finish by its deadline (+ margin). Returns (ok, failed)."""
    ok, failed = [], []
    for i, (submitted, x, future) in enumerate(futures):
        try:
            result = future.result(timeout=max(0.0, submitted + DEADLINE_S + margin_s - time.monotonic()))
            ok.append((x, result))
        except SplitinferError as e:  # DeadlineError included: the session gave up in time
            failed.append(e)
        except FutureTimeout:
            pytest.fail(f"request {i} is still pending {DEADLINE_S + margin_s:g} s after it was sent")
    return ok, failed


def test_killed_worker_mid_stream_requests_finish_on_a_new_pipeline():
    whole, parts = whole_and_parts(mlp_parts(3, width=16, batch=4))
    reference = ort.InferenceSession(whole)
    calls: list[frozenset[str]] = []

    def replan(excluded: frozenset[str]):
        calls.append(excluded)
        alive = [d for d in DEVICES if d not in excluded]
        return stages_on(parts, [alive[k % len(alive)] for k in range(len(parts))])

    cluster = local_cluster(DEVICES)
    with deploy_stages(stages_on(parts, DEVICES), cluster, replan=replan, timeout_s=DEADLINE_S) as session:
        futures = []
        for i in range(150):
            x = _x(i)
            futures.append((time.monotonic(), x, session.submit({"t0": x})))
            if i == 50:
                os.kill(session.worker_pids["b"], signal.SIGKILL)
            time.sleep(0.004)
        ok, failed = _settle(futures)
        assert calls == [frozenset({"b"})]
        assert session.num_replans == 1 and "b" not in {s.device for s in session.stages}
        assert session.dead_devices == {"b"}
        assert len(ok) + len(failed) == 150
        assert not failed, failed[:3]  # a replan was possible: nothing had to fail
        for x, result in ok:
            np.testing.assert_allclose(result.outputs["t3"], reference.run(None, {"t0": x})[0], atol=1e-4)
        # requests sent between the kill and its detection went out again on the new pipeline
        assert sum(result.timing.num_attempts > 1 for _, result in ok) >= 1
        (after,) = session.run(None, {"t0": _x(999)})
        np.testing.assert_allclose(after, reference.run(None, {"t0": _x(999)})[0], atol=1e-4)


def test_without_replan_requests_fail_fast_with_a_clear_error():
    _, parts = whole_and_parts(mlp_parts(3, width=16, batch=4))
    with deploy_stages(stages_on(parts, DEVICES), local_cluster(DEVICES), timeout_s=DEADLINE_S) as session:
        assert session.run(None, {"t0": _x(0)})[0].shape == (4, 16)
        futures = []
        killed_at = 0.0
        for i in range(60):
            futures.append((time.monotonic(), _x(i), session.submit({"t0": _x(i)})))
            if i == 20:
                os.kill(session.worker_pids["c"], signal.SIGKILL)
                killed_at = time.monotonic()
            time.sleep(0.003)
        ok, failed = _settle(futures)
        assert len(ok) + len(failed) == 60 and failed
        assert all(isinstance(e, WorkerError) and "'c'" in e.problem for e in failed)
        assert "replan" in failed[0].fix
        assert time.monotonic() - killed_at < DEADLINE_S  # failed on detection, not at the deadline
        with pytest.raises(WorkerError, match="'c'"):
            session.run(None, {"t0": _x(0)})


def test_a_worker_that_stops_answering_is_noticed_within_2_s():
    _, parts = whole_and_parts(mlp_parts(2, width=16, batch=4))
    cluster = local_cluster(["a", "b"])
    with deploy_stages(stages_on(parts, ["a", "b"]), cluster, timeout_s=DEADLINE_S) as session:
        pid = session.worker_pids["b"]
        os.kill(pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            future = session.submit({"t0": _x(0)})
            with pytest.raises(WorkerError, match=r"missed heartbeats|answered no health probe"):
                future.result(timeout=DEADLINE_S)
            assert time.monotonic() - start < 2.5
        finally:
            os.kill(pid, signal.SIGCONT)


def test_when_no_plan_remains_requests_fail_with_the_planners_reason():
    _, parts = whole_and_parts(mlp_parts(2, width=16, batch=4))

    def replan(excluded: frozenset[str]):
        raise InfeasibleError(f"no device left after excluding {sorted(excluded)}", "add devices")

    with deploy_stages(stages_on(parts, ["a", "b"]), local_cluster(["a", "b"]), replan=replan,
                       timeout_s=DEADLINE_S) as session:
        os.kill(session.worker_pids["b"], signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(InfeasibleError, match="no plan remains"):
            session.run(None, {"t0": _x(0)})
        assert time.monotonic() - start < 3.0
