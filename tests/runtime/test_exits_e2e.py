"""Early exits through real workers (issue 17, item 3): a confident request leaves at the stage that
makes its exit, later workers never see it, and every answer equals the whole model's output."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from helpers.runtime_models import local_cluster

from splitinfer import zoo
from splitinfer.graph import analyze, load_model, split
from splitinfer.graph.exit_cuts import exit_cuts
from splitinfer.graph.exits import is_confident, read_exits
from splitinfer.runtime import StageSpec, deploy_stages
from splitinfer.runtime.coordinator.options import SessionOptions
from splitinfer.runtime.coordinator.pipeline import StageExit


@pytest.fixture(scope="module")
def exits_model():
    proto = zoo.build_small("resnet18_exits")
    model = load_model(proto)
    exits = read_exits(model)
    analysis = analyze(model)
    parts = split(model, [c.position for c in exit_cuts(model, exits, analysis)], analysis)
    return proto, model, exits, parts


def _stages(parts, exits, devices, inner: bool):
    """One stage per partition (exit k evaluated at the end of stage k), or with ``inner`` the first two
    partitions as two parts of one stage (exit 1 evaluated inside it)."""
    rules = [StageExit(e.output, e.rule, e.threshold, 0) for e in exits]
    if not inner:
        return [StageSpec(k, dev, p.to_bytes(), p.inputs, p.outputs, exits=tuple(rules[k:k + 1]))
                for k, (p, dev) in enumerate(zip(parts, devices, strict=True))]
    first = StageSpec(0, devices[0], parts[0].to_bytes(), parts[0].inputs, parts[1].outputs,
                      exits=(rules[0], StageExit(exits[1].output, exits[1].rule, exits[1].threshold, 1)),
                      more_parts=(parts[1].to_bytes(),))
    return [first, StageSpec(1, devices[2], parts[2].to_bytes(), parts[2].inputs, parts[2].outputs)]


def _served(session, device):
    with session.worker_client(device) as client:
        return client.health()["num_served"]


@pytest.mark.parametrize("inner", [False, True])
def test_a_confident_request_leaves_early_and_later_workers_never_see_it(exits_model, inner):
    proto, model, exits, parts = exits_model
    whole = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    stages = _stages(parts, exits, ["a", "b", "c"], inner)
    feeds = [model.make_feeds(seed=s) for s in range(24)]
    expected = []
    for f in feeds:
        values = dict(zip(["exit1", "exit2", "logits"], whole.run(None, f), strict=True))
        leave = next((e.output for e in exits if is_confident(e, values[e.output]).all()), "")
        expected.append((leave, values))
    assert {leave for leave, _ in expected} == {"exit1", "exit2", ""}  # the zoo's thresholds mix them
    with deploy_stages(stages, local_cluster(["a", "b", "c"]), timeout_s=30) as session:
        for f, (leave, values) in zip(feeds, expected, strict=True):
            result = session.submit(f).result(timeout=30)
            assert result.exit == leave
            if leave:
                assert list(result.outputs) == [leave]
                np.testing.assert_allclose(result.outputs[leave], values[leave], atol=1e-5)
                assert session.run(None, f)[["exit1", "exit2", "logits"].index(leave)] is not None
            else:
                np.testing.assert_allclose(result.outputs["logits"], values["logits"], atol=1e-5)
        # the requests that left early (through submit, and again through run) never reached the last stage
        assert _served(session, stages[-1].device) == sum(1 for leave, _ in expected if not leave)


def test_full_depth_runs_every_request_to_the_end(exits_model):
    _, model, exits, parts = exits_model
    stages = _stages(parts, exits, ["a", "b", "c"], inner=False)
    options = SessionOptions(timeout_s=30, full_depth=True)
    with deploy_stages(stages, local_cluster(["a", "b", "c"]), options=options) as session:
        for seed in range(8):
            result = session.submit(model.make_feeds(seed=seed)).result(timeout=30)
            assert result.exit == "" and set(result.outputs) == {"exit1", "exit2", "logits"}
        assert _served(session, "c") == 8


def test_the_gateway_says_which_exit_answered(exits_model):
    import io

    from starlette.testclient import TestClient

    from splitinfer.runtime.gateway import make_app

    proto, model, exits, parts = exits_model
    whole = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    stages = _stages(parts, exits, ["a", "b", "c"], inner=False)
    answered = set()
    with deploy_stages(stages, local_cluster(["a", "b", "c"]), timeout_s=30) as session, \
            TestClient(make_app(session)) as client:
        for seed in range(12):
            image = model.make_feeds(seed=seed)["image"]
            buffer = io.BytesIO()
            np.save(buffer, image)
            reply = client.post("/v1/infer?format=json", content=buffer.getvalue(),
                                headers={"content-type": "application/x-npy"})
            assert reply.status_code == 200, reply.text
            doc = reply.json()
            name = doc.get("exit", "")
            answered.add(name)
            values = dict(zip(["exit1", "exit2", "logits"], whole.run(None, {"image": image}), strict=True))
            got = doc["outputs"][name or "logits"]
            np.testing.assert_allclose(np.asarray(got["data"], dtype=np.float32).reshape(got["shape"]),
                                       values[name or "logits"], atol=1e-5)
        npy = client.post("/v1/infer", content=buffer.getvalue(),
                          headers={"content-type": "application/x-npy"})
        assert npy.headers.get("x-splitinfer-exit", "") == name  # the last request's, as .npy
    assert len(answered) >= 2  # some early, some not


def test_a_plan_with_chosen_thresholds_deploys_them_and_an_exit_turned_off_is_not_evaluated():
    import msgspec

    from splitinfer.plan import solve
    from splitinfer.profile.blocks import cut_as_profiled
    from splitinfer.profile.device import profile_model
    from splitinfer.profile.problem import build_problem
    from splitinfer.runtime.coordinator._exits import stage_exits

    proto = zoo.build_small("resnet18_exits")
    profile = profile_model(proto, budget_s=0.3)
    (plan,) = solve(build_problem(profile), "latency")  # one device: one stage, split at both exits
    blocks = cut_as_profiled(proto, profile)
    ((cuts, rules),) = stage_exits(plan, blocks)
    assert [r.output for r in rules] == ["exit1", "exit2"] and len(cuts) == 2
    assert [r.threshold for r in rules] == [e.threshold for e in profile.exits]
    chosen = msgspec.structs.replace(plan, exit_thresholds={"exit1": None, "exit2": 0.5})
    ((cuts, rules),) = stage_exits(chosen, blocks)
    assert [(r.output, r.threshold, r.part) for r in rules] == [("exit2", 0.5, 0)] and len(cuts) == 1
