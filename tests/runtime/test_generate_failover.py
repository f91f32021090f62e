"""A stage lost mid-generation (its worker killed): the session re-plans without it, the sequence's cache
is rebuilt on the new stages by running its tokens again, and greedy decoding continues token for token as
an uninterrupted run (issue 20, item 5)."""

from __future__ import annotations

import os
import signal

from helpers import deploy as helpers
from helpers.runtime_models import local_cluster

from splitinfer import zoo
from splitinfer.generation.reference import whole_model_step
from splitinfer.generation.sampling import Sampling
from splitinfer.generation.sampling import generate as reference_generate
from splitinfer.graph import load_model
from splitinfer.runtime.coordinator.deploy import deploy
from splitinfer.runtime.generate import generate

PROMPT = [5, 17, 42, 7, 99, 3]
FAST = {"timeout_s": 10.0, "heartbeat_interval_s": 0.25, "dead_after_s": 1.0, "deploy_timeout_s": 20.0}


def test_a_worker_killed_mid_generation_changes_no_token(tmp_path):
    path = zoo.save("gpt2", tmp_path / "gpt2.onnx", small=True)
    model = load_model(path)  # a decoder: at its prefill and a decode step
    cluster = local_cluster(["a", "b", "c"])
    profile = helpers.fake_profile(path, cluster)
    last = len(profile.blocks) - 1
    plan = helpers.pinned_plan(profile, cluster, [(0, "a"), (last // 2, "b"), (last, "c")])
    sampling = Sampling(max_new_tokens=40)
    want = [t for t, _ in reference_generate(whole_model_step(zoo.build_small("gpt2")), PROMPT, sampling)]
    got = []
    with deploy(plan, cluster, model, profile=profile, **FAST) as session:
        assert {s.device for s in session.stages} == {"a", "b", "c"}
        for token in generate(session, PROMPT, sampling):
            got.append(token.id)
            if len(got) == 12:
                os.kill(session.worker_pids["b"], signal.SIGKILL)
        assert "b" in session.dead_devices and "b" not in {s.device for s in session.stages}
    assert got == want
