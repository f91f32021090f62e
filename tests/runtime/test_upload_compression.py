"""A plan whose upload is compressed (the camera sends its input as int8): the coordinator compresses
the model input, the first stage's worker restores it; a raw upload sends the input as it is."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("skl2onnx")

from helpers.digits import digits
from helpers.runtime_models import local_cluster

from splitinfer.data import Dataset
from splitinfer.plan.plan import Hop, Plan, Stage
from splitinfer.profile.device import profile_model
from splitinfer.profile.profiler import prepare_model
from splitinfer.runtime.coordinator.deploy import deploy, plan_stages
from splitinfer.runtime.evaluate import evaluate, reference_runner, session_runner


@pytest.fixture(scope="module")
def model():
    return digits()


@pytest.fixture(scope="module")
def profile(model):
    prepared = prepare_model(model.model_bytes, batch=1, calibration=model.x[:1])
    return profile_model(None, prepared=prepared, budget_s=0.2, device_name="cam")


def _plan(num_blocks: int, upload: str) -> Plan:
    stages = (Stage("edge", 0, num_blocks - 1, 0.001),)
    hops = (Hop("cam", "edge", 100, 0.001, "upload", upload), Hop("edge", "cam", 40, 0.001, "return"))
    return Plan("latency", stages, hops, 0.003, 0.001, 1000.0, 140, 100)


@pytest.mark.parametrize("upload", ["int8", "none"])
def test_the_first_stage_gets_the_input_as_the_upload_carries_it(model, profile, upload):
    plan = _plan(len(profile.blocks), upload)
    cluster = local_cluster(["cam", "edge"])
    (stage,) = plan_stages(plan, cluster, model.model_bytes, profile=profile)
    assert stage.compression == ("" if upload == "none" else "int8")
    data = Dataset(model.x[:60], model.y[:60])
    with deploy(plan, cluster, model.model_bytes, profile=profile, timeout_s=20) as session:
        result = evaluate(reference_runner(model.model_bytes, num_threads=1), session_runner(session), data)
    agreement = result.agreement["probabilities"]
    # int8 moves the pixels a little (the outputs differ), raw is the reference bit for bit
    assert math.isinf(agreement.snr_db) == (upload == "none")
    assert agreement.snr_db > 20 and agreement.top1_agreement >= 0.98
