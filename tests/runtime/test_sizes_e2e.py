"""A model with a dynamic batch, profiled at batch 1 and 8 on three real workers, planned for each size,
and served at both by one deployment (issue 16, item 4)."""

from __future__ import annotations

import msgspec
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers.runtime_models import local_cluster
from helpers.sized_models import dynamic_batch

from splitinfer.graph import load_model
from splitinfer.plan import Constraints, solve
from splitinfer.profile.files import decode_profile, encode_profile
from splitinfer.profile.problem import build_problem
from splitinfer.profile.profiler import ProfileSettings
from splitinfer.profile.sizes import profile_at
from splitinfer.runtime.bench import _feed_maker
from splitinfer.runtime.coordinator.deploy import deploy
from splitinfer.runtime.profiling import profile_cluster

ONE, EIGHT = {"image": (1, 3, 32, 32)}, {"image": (8, 3, 32, 32)}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sized") / "dyn.onnx"
    onnx.save(dynamic_batch(), path)
    return path


def test_profiled_at_two_batches_and_served_at_both_by_one_deployment(model_file):
    cluster = local_cluster(["a", "b", "c"], slowdown={"a": 3.0})
    model = load_model(model_file, input_shapes=ONE, sizes=[EIGHT])
    profile = profile_cluster(model, cluster, settings=ProfileSettings(budget_s=0.5), progress=False,
                              max_blocks=6)
    profile = decode_profile(encode_profile(profile))  # what the file holds
    assert [o.model.input_shapes for o in profile.other_sizes] == [EIGHT]
    at_eight = profile_at(profile, EIGHT)
    assert at_eight.input_bytes == 8 * profile.input_bytes
    assert [b.nodes for b in at_eight.blocks] == [b.nodes for b in profile.blocks]
    whole = {d: sum(b.median_s for b in at_eight.devices[d].blocks) for d in "abc"}
    assert all(whole[d] > sum(b.median_s for b in profile.devices[d].blocks) for d in "abc")  # 8x work

    problem = build_problem(at_eight, cluster)
    (plan,) = solve(problem, "latency", Constraints(requires=("b", "c")))
    plan = msgspec.structs.replace(plan, provenance=msgspec.structs.replace(plan.provenance,
                                                                           input_shapes=EIGHT))
    assert len(plan.stages) >= 2
    reference = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    with deploy(plan, cluster, load_model(model_file, input_shapes=ONE, sizes=[EIGHT]), profile=profile,
                timeout_s=30) as session:
        for batch, seed in ((1, 1), (8, 2), (1, 3), (8, 4)):
            image = np.random.default_rng(seed).standard_normal((batch, 3, 32, 32)).astype(np.float32)
            feeds = {"image": image}
            (got,) = session.run(None, feeds)
            (want,) = reference.run(None, feeds)
            assert got.shape == (batch, 10)
            np.testing.assert_allclose(got, want, atol=1e-5)
        # bench sends the size the plan was made for
        assert _feed_maker(session, None, plan)(0)["image"].shape == (8, 3, 32, 32)
        assert _feed_maker(session, None, None)(0)["image"].shape == (1, 3, 32, 32)
