"""StatefulRunner (device/_state.py): per-sequence state fed and kept, freed at the end, when idle, and
least recently used first over the budget; bad state pairs refused at deploy."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.stateful_models import WIDTH, cached_chain

from splitinfer.errors import ErrorCode, WorkerError, code_of
from splitinfer.graph import analyze, load_model, split
from splitinfer.graph.inference import create_inference_session
from splitinfer.runtime.device._execution import StageRunner
from splitinfer.runtime.device._state import StatefulRunner, with_state
from splitinfer.runtime.wire import messages

PREFILL = {"x": [1, 4, WIDTH], **{f"past_key_values.{i}.key": [1, 1, 0, WIDTH] for i in range(3)}}
DECODE = {"x": [1, 1, WIDTH], **{f"past_key_values.{i}.key": [1, 1, 4, WIDTH] for i in range(3)}}


@pytest.fixture(scope="module")
def first():
    model = load_model(cached_chain(), input_shapes=PREFILL, sizes=[DECODE])
    analysis = analyze(model)
    part = split(model, [list(analysis.order).index("l0.relu") + 1], analysis)[0]
    runner = StageRunner(create_inference_session(part.to_bytes()), part.inputs, part.outputs)
    return runner, [(p.past, p.present) for p in part.state]


def _x(n):
    return {"x": np.ones((1, n, WIDTH), np.float32)}


def test_the_cache_grows_per_sequence_and_is_never_returned(first):
    runner, pairs = first
    stateful = StatefulRunner(runner, pairs)
    assert [s.name for s in stateful.inputs] == ["x"] and "present.0.key" not in stateful.output_names
    stateful.run(_x(4), "s", True)
    outs, _, _ = stateful.run(_x(1), "s", False)
    assert len(outs) == len(stateful.output_names)
    assert stateful.held_bytes == 5 * WIDTH * 4  # 4 prompt keys and one more
    assert stateful.end(["s", "t"]) == 1 and stateful.held_bytes == 0


def test_over_the_budget_the_least_recently_stepped_goes_first(first):
    runner, pairs = first
    stateful = StatefulRunner(runner, pairs, budget_bytes=6 * WIDTH * 4)
    stateful.run(_x(4), "old", True)
    stateful.run(_x(4), "new", True)  # 8 keys held > 6: "old" goes
    assert stateful.sequences == ["new"]
    with pytest.raises(WorkerError) as e:
        stateful.run(_x(1), "old", False)
    assert code_of(e.value) == ErrorCode.STATE_LOST and "start the sequence again" in e.value.fix


def test_an_idle_sequence_is_freed(first):
    runner, pairs = first
    stateful = StatefulRunner(runner, pairs, idle_s=0.0)
    stateful.run(_x(4), "s", True)
    with pytest.raises(WorkerError):
        stateful.run(_x(1), "s", False)


@pytest.mark.parametrize("state", [[["x", "present.0.key"]], [["past_key_values.0.key"]],
                                   [["past_key_values.0.key", "nope"]]])
def test_a_deploy_naming_bad_state_pairs_is_refused(first, state):
    runner, _ = first
    header = messages.Deploy(deployment_id="d", stage=0, device="a", inputs=[], outputs=[],
                             route=messages.Route(), reply_to="tcp://127.0.0.1:1", state=state)
    if state == [["x", "present.0.key"]]:  # an input and an output: accepted as given
        assert isinstance(with_state(runner, header), StatefulRunner)
        return
    with pytest.raises(WorkerError, match="not \\[an input, an output\\]"):
        with_state(runner, header)


def test_no_more_sequences_than_the_cap_are_held(first, monkeypatch):
    from splitinfer.runtime.device import _state

    runner, pairs = first
    monkeypatch.setattr(_state, "MAX_SEQUENCES", 3)
    stateful = StatefulRunner(runner, pairs)
    for k in range(5):
        stateful.run(_x(1), f"s{k}", True)
    assert stateful.sequences == ["s2", "s3", "s4"]
