"""What a hop costs the runtime (runtime/messaging.py): a decoder's measured as its generation steps run."""

from __future__ import annotations

import contextlib
import time
from types import SimpleNamespace

import numpy as np
import pytest

from splitinfer import zoo
from splitinfer.cluster import Device, parse_cluster
from splitinfer.graph.inference import create_inference_session
from splitinfer.profile.profiler import ProfileSettings
from splitinfer.runtime import messaging
from splitinfer.runtime.device._execution import StageRunner
from splitinfer.runtime.device._state import StatefulRunner
from splitinfer.runtime.launch.local import launch_local_workers
from splitinfer.runtime.profiling import profile_cluster
from splitinfer.types import TensorSpec


def test_the_stateful_trivial_stage_keeps_its_state_from_step_to_step():
    stage = messaging._stage("a", 3, stateful=True)
    assert stage.state == ((messaging.PAST, messaging.PRESENT),)
    session = create_inference_session(stage.model_bytes, num_threads=1)
    runner = StatefulRunner(StageRunner(session, stage.inputs, stage.outputs), stage.state)
    x = np.arange(3, dtype=np.float32)
    for step in range(3):
        (y,), _, _ = runner.run({messaging.TRIVIAL_INPUT: x}, "s", start=step == 0)
        np.testing.assert_array_equal(y, x)  # only y travels on; the present stays
    (past,) = runner._states["s"][1].values()
    assert past.shape == (1, 1, 3, 1)  # one step more each time: fed back, not made afresh


class _Session:
    """A session whose calls take 5 ms beyond the 1 ms each request reports (submit to result)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.last_timing = SimpleNamespace(latency_s=0.001, stages=[SimpleNamespace(busy_s=0.0)])

    def run(self, output_names, feeds, **kwargs):
        self.calls.append(kwargs)
        time.sleep(0.005)

    def end_sequences(self, sequences):
        self.ended = list(sequences)


def test_a_decoder_step_counts_from_call_to_return_as_one_sequence(monkeypatch):
    # The fake stands in for deploy_stages' session; the real twin is the worker-backed test below.
    sessions = []

    @contextlib.contextmanager
    def fake_deploy(stages, cluster, token=None):
        sessions.append(_Session())
        yield sessions[-1]

    monkeypatch.setattr(messaging, "deploy_stages", fake_deploy)
    plain = messaging._overheads(None, "a", None, 1)
    steps = messaging._overheads(None, "a", None, 1, stateful=True)
    assert plain == [pytest.approx(0.001)] * messaging.NUM_REQUESTS  # a request: submit to result
    assert min(steps) >= 0.005  # a step: all of the call
    stateless, stateful = sessions
    assert stateless.calls == [{}] * len(stateless.calls)
    assert [c["sequence_start"] for c in stateful.calls] == [True] + [False] * (len(stateful.calls) - 1)
    assert {c["sequence"] for c in stateful.calls} == {messaging.SEQUENCE}
    assert stateful.ended == [messaging.SEQUENCE]


def test_a_decoder_is_profiled_with_its_hops_measured_statefully(tmp_path, monkeypatch):
    seen = []
    real = messaging.measure_messaging

    def spy(*args, **kwargs):
        seen.append(kwargs.get("stateful"))
        return real(*args, **kwargs)

    monkeypatch.setattr("splitinfer.runtime.profiling.measure_messaging", spy)
    path = zoo.save("gpt2", tmp_path / "gpt2.onnx", small=True)
    cluster = parse_cluster({"devices": [{"name": "a", "num_threads": 1}]})
    profile = profile_cluster(path, cluster, progress=False, max_blocks=3,
                              settings=ProfileSettings(budget_s=0.1, num_warmup=1, min_runs=3, max_runs=10))
    assert seen and all(seen), seen  # every size's hops, through the worker's stateful stage
    for size in (profile, *profile.other_sizes):
        m = size.devices["a"].messaging
        assert m is not None and 1e-6 < m.fixed_s < 0.05, m


def test_stateful_hops_are_measured_through_a_real_worker():
    token = b"m" * 32
    with launch_local_workers([Device("a", num_threads=1)], token) as launcher:
        address = launcher.workers["a"].address
        cluster = parse_cluster({"devices": [{"name": "a", "num_threads": 1, "address": address}]})
        cost = messaging.measure_messaging(cluster, "a", {"a": address}, token, stateful=True)
    assert cost.n == 2 * messaging.NUM_REQUESTS
    assert 1e-6 < cost.fixed_s < 0.05 and 0 <= cost.s_per_byte < 1e-6, cost


def test_the_trivial_specs_name_the_state_pair_open_along_the_past():
    stage = messaging._stage("a", 2, stateful=True)
    assert stage.inputs[1] == TensorSpec(messaging.PAST, "float32", (1, 1, -1, 1))
    assert messaging._stage("a", 2, stateful=False).state == ()
