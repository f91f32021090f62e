"""A model whose weights stay on disk deploys with each stage's partition read in only while it is put on
its worker, one such stage at a time (coordinator/pipeline.LazyPart; issue 21)."""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
from helpers import deploy as helpers
from helpers.runtime_models import local_cluster

from splitinfer import zoo
from splitinfer.graph import load_model
from splitinfer.profile.blocks import cut_as_profiled
from splitinfer.runtime.coordinator import pipeline
from splitinfer.runtime.coordinator.deploy import build_stages, deploy
from splitinfer.runtime.coordinator.pipeline import LazyPart


def test_stages_of_a_model_on_disk_are_read_in_one_at_a_time_and_run_as_the_whole(tmp_path, monkeypatch):
    path = zoo.save("resnet18", tmp_path / "r18.onnx", width=0.25, resolution=32, external_data=True)
    assert (tmp_path / "r18.data").is_file()
    model = load_model(path, weights_on_disk=True)
    cluster = local_cluster(["a", "b", "c"])
    profile = helpers.fake_profile(path, cluster)
    last = len(profile.blocks) - 1
    plan = helpers.pinned_plan(profile, cluster, [(0, "a"), (last // 2, "b"), (last, "c")])
    stages = build_stages(plan, cut_as_profiled(model, profile))
    assert sum(isinstance(s.model_bytes, LazyPart) for s in stages) >= 2
    reading, most = [0], [0]
    guard = threading.Lock()
    real = pipeline.part_bytes

    def counted(part):
        data = real(part)
        if isinstance(part, LazyPart):
            with guard:
                reading[0] += 1
                most[0] = max(most[0], reading[0])
            threading.Event().wait(0.05)  # long enough for another stage's thread to overlap
            with guard:
                reading[0] -= 1
        return data
    monkeypatch.setattr(pipeline, "part_bytes", counted)
    feeds = model.make_feeds()
    with deploy(plan, cluster, model, profile=profile, timeout_s=20.0) as session:
        got = session.run(None, feeds)
    assert most[0] == 1  # never two stages' weights read in at once
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    for mine, theirs in zip(got, want, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4)
