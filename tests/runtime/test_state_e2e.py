"""A model with a cache split over three real workers: each stage keeps its layers' cache per sequence
(device/_state.py), the cache never travels, and every step equals the whole model (issue 20, item 2)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from helpers.runtime_models import local_cluster
from helpers.stateful_models import WIDTH, cached_chain, empty_past

from splitinfer.errors import ErrorCode, SplitinferError, WorkerError, code_of
from splitinfer.graph import analyze, load_model, split
from splitinfer.runtime import StageSpec, deploy_stages

LAYERS = 3
PREFILL = {"x": [1, 4, WIDTH], **{f"past_key_values.{i}.key": [1, 1, 0, WIDTH] for i in range(LAYERS)}}
DECODE = {"x": [1, 1, WIDTH], **{f"past_key_values.{i}.key": [1, 1, 4, WIDTH] for i in range(LAYERS)}}


@pytest.fixture(scope="module")
def stages():
    model = load_model(cached_chain(), input_shapes=PREFILL, sizes=[DECODE])
    analysis = analyze(model)
    order = list(analysis.order)
    parts = split(model, [order.index(f"l{i}.relu") + 1 for i in range(LAYERS - 1)], analysis)
    return [StageSpec(k, device, part.to_bytes(), part.inputs, part.outputs,
                      state=tuple((p.past, p.present) for p in part.state))
            for k, (device, part) in enumerate(zip("abc", parts, strict=True))]


def _whole_steps(xs):
    """The whole model stepped with its cache fed back: each step's logits."""
    session = ort.InferenceSession(cached_chain().SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    past, out = empty_past(LAYERS), []
    for x in xs:
        values = dict(zip(names, session.run(None, {"x": x, **past}), strict=True))
        out.append(values["logits"])
        past = {f"past_key_values.{i}.key": values[f"present.{i}.key"] for i in range(LAYERS)}
    return out


def test_two_sequences_interleaved_each_keep_their_cache_on_the_stages(stages):
    rng = np.random.default_rng(2)
    steps = {s: [rng.standard_normal((1, 4, WIDTH)).astype(np.float32),
                 *(rng.standard_normal((1, 1, WIDTH)).astype(np.float32) for _ in range(3))] for s in "pq"}
    with deploy_stages(stages, local_cluster(["a", "b", "c"]), timeout_s=30) as session:
        assert [s.name for s in session.inputs] == ["x"] and [s.name for s in session.outputs] == ["logits"]
        got = {s: [] for s in steps}
        for k in range(4):  # p and q in turn: each stage holds both caches at once
            for seq, xs in steps.items():
                (logits,) = session.run(None, {"x": xs[k]}, sequence=seq, sequence_start=k == 0)
                got[seq].append(logits)
        for seq, xs in steps.items():
            for mine, theirs in zip(got[seq], _whole_steps(xs), strict=True):
                np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
        # the cache never crossed a hop: each stage's uplink carried the hidden state only
        timing = session.last_timing
        assert timing is not None and all(h.num_bytes <= 4 * WIDTH * 4 for h in timing.hops)
        assert session.end_sequences(["p", "nope"]) == 3  # p's cache on each of the three stages
        with pytest.raises(WorkerError) as e:  # p's cache is gone: its next step is refused
            session.run(None, {"x": steps["p"][1]}, sequence="p", deadline_s=10)
        assert code_of(e.value) == ErrorCode.STATE_LOST and "sequence 'p'" in e.value.problem
        (logits,) = session.run(None, {"x": steps["q"][1]}, sequence="q")  # q is untouched
        assert logits.shape == (1, 1, WIDTH)


def test_a_step_without_a_sequence_is_refused_with_a_code(stages):
    with deploy_stages(stages, local_cluster(["a", "b", "c"]), timeout_s=30) as session:
        with pytest.raises(SplitinferError) as e:
            session.run(None, {"x": np.zeros((1, 2, WIDTH), np.float32)}, deadline_s=10)
        assert code_of(e.value) == ErrorCode.MALFORMED and "sequence id" in e.value.fix
