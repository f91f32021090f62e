"""The HTTP gateway on a real session of local workers: npy and JSON round trips, bad input, metrics."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import time

import httpx
import numpy as np
import pytest
from helpers import deploy as helpers
from helpers.gateway import metric, serving
from helpers.runtime_models import heavy_parts, local_cluster, mlp_parts, stages_on, whole_and_parts
from starlette.testclient import TestClient

from splitinfer.errors import ShapeError
from splitinfer.runtime import deploy_stages
from splitinfer.runtime.coordinator.deploy import deploy
from splitinfer.runtime.gateway import json_depth, make_app
from splitinfer.types import TensorSpec

NPY = {"content-type": "application/x-npy"}


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _tensor(a: np.ndarray) -> dict:
    return {"dtype": a.dtype.name, "shape": list(a.shape), "data": a.tolist()}


@pytest.fixture(scope="module")
def served():
    data = helpers.model_bytes("resnet18")
    cluster = local_cluster(["a", "b"])
    profile = helpers.fake_profile(data, cluster)
    plan = helpers.pinned_plan(profile, cluster, [(0, "a"), (len(profile.blocks) - 1, "b")])
    with (
        deploy(plan, cluster, data, profile=profile, timeout_s=10.0) as session,
        TestClient(make_app(session)) as client,
    ):
        yield client, session, helpers.reference(data)


def test_npy_and_json_round_trips_equal_the_whole_model(served):
    client, _, ref = served
    x = ref.model.make_feeds(seed=1)["image"]
    expected = ref.run({"image": x})[0]
    reply = client.post("/v1/infer", content=_npy(x), headers=NPY)
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/x-npy"
    np.testing.assert_allclose(np.load(io.BytesIO(reply.content)), expected, atol=1e-4, rtol=0)
    assert float(reply.headers["x-splitinfer-latency-s"]) > 0

    reply = client.post(
        "/v1/infer?format=json", content=_npy(x), headers={"content-type": "application/octet-stream"}
    )
    doc = reply.json()
    assert reply.status_code == 200 and doc["outputs"]["logits"]["shape"] == [1, 10]
    np.testing.assert_allclose(np.array(doc["outputs"]["logits"]["data"]), expected, atol=1e-4)

    reply = client.post("/v1/infer", json={"inputs": {"image": _tensor(x)}})
    doc = reply.json()
    assert reply.status_code == 200
    out = np.array(doc["outputs"]["logits"]["data"], dtype=doc["outputs"]["logits"]["dtype"])
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)
    timing = doc["timing"]
    assert timing["latency_s"] > 0 and [s["device"] for s in timing["stages"]] == ["a", "b"]
    assert len(timing["hops"]) == 3


JSON = {"content-type": "application/json"}


def _nested(depth: int) -> list:
    data: list = [1.0]
    for _ in range(depth - 1):
        data = [data]
    return data


def _npy_header(shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _doc(image: dict) -> bytes:
    return json.dumps({"inputs": {"image": image}}).encode()


BAD_BODIES = [
    ("garbage npy", b"\x93NUMPY garbage", NPY, "not a readable .npy"),
    (
        "pickled object npy",
        _npy(np.array([{"a": 1}], dtype=object), allow_pickle=True),
        NPY,
        "not a readable",
    ),
    ("wrong shape", _npy(np.zeros((1, 3, 8, 8), np.float32)), NPY, "has shape [1, 3, 8, 8]"),
    ("wrong dtype", _npy(np.zeros((1, 3, 32, 32), np.float64)), NPY, "dtype float64, expected float32"),
    ("malformed json", b"{", {"content-type": "application/json"}, "not valid JSON"),
    ("no inputs", b'{"x": 1}', {"content-type": "application/json"}, 'no "inputs" object'),
    (
        "bad dtype",
        json.dumps({"inputs": {"image": {"dtype": "object", "shape": [1], "data": [1]}}}).encode(),
        {"content-type": "application/json"},
        "has dtype 'object'",
    ),
    (
        "too few values",
        json.dumps(
            {"inputs": {"image": {"dtype": "float32", "shape": [1, 3, 32, 32], "data": [1.0]}}}
        ).encode(),
        {"content-type": "application/json"},
        "data does not fit",
    ),
    (
        "wrong name",
        json.dumps({"inputs": {"img": {"dtype": "float32", "shape": [1], "data": [1.0]}}}).encode(),
        {"content-type": "application/json"},
        "unexpected ['img']",
    ),
    ("content type", b"hello", {"content-type": "text/plain"}, "unsupported content type"),
    ("deep json", b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", JSON, "nests 100001 levels deep"),
    ("deep data", _doc({"dtype": "float32", "shape": [1], "data": _nested(40)}), JSON,
     "nests 43 levels deep"),
    ("shallow but wrong data", _doc({"dtype": "float32", "shape": [2], "data": _nested(25)}), JSON,
     "data does not fit"),
    ("absurd shape", _doc({"dtype": "float32", "shape": [2**62, 2**62, 10**30], "data": [1.0]}), JSON,
     "data does not fit"),
    ("bool shape", _doc({"dtype": "float32", "shape": [True], "data": [1.0]}), JSON, "has shape [True]"),
    ("negative npy shape", _npy_header((-1, 5)), NPY, "its header has shape (-1, 5)"),
    ("huge npy shape", _npy_header((9999, 10**6)) + b"1234", NPY,
     "shape [9999, 1000000] of float32 (39996000000 bytes), 4 bytes follow it"),
    ("truncated npy", _npy(np.zeros((1, 3, 32, 32), np.float32))[:-4], NPY, "12284 bytes follow it"),
    ("npy with more", _npy(np.zeros((1, 3, 32, 32), np.float32)) + b"more", NPY, "12292 bytes follow it"),
]


@pytest.mark.parametrize(("what", "body", "headers", "message"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies_get_400_with_one_line(served, what, body, headers, message):
    client, _, ref = served
    reply = client.post("/v1/infer", content=body, headers=headers)
    assert reply.status_code == 400, what
    error = reply.json()["error"]
    assert message in error and "\n" not in error
    x = ref.model.make_feeds(seed=2)["image"]  # the gateway still serves
    assert client.post("/v1/infer", content=_npy(x), headers=NPY).status_code == 200


def test_json_depth_counts_brackets_outside_strings_only():
    assert json_depth(b"") == 0 and json_depth(b"1") == 0 and json_depth(b"[[1], {}]") == 2
    assert json_depth(rb'{"a[[[": "[\"[[", "b": [[1]]}') == 3
    assert json_depth(rb'["\\", "[[[", ["x"]]') == 2  # an escaped backslash ends no string early
    assert json_depth(b"[" * 3_000_000 + b"]" * 3_000_000) == 3_000_000  # chunks carry the depth


def test_npy_in_other_layouts_is_read_as_sent(served):
    client, _, ref = served
    x = ref.model.make_feeds(seed=6)["image"]
    expected = ref.run({"image": x})[0]
    for variant in (x.astype(">f4"), np.asfortranarray(x)):
        reply = client.post("/v1/infer", content=_npy(variant), headers=NPY)
        assert reply.status_code == 200
        np.testing.assert_allclose(np.load(io.BytesIO(reply.content)), expected, atol=1e-4, rtol=0)


def test_metrics_count_requests_errors_and_stage_time(served):
    client, _, ref = served
    before = client.get("/metrics").text
    x = ref.model.make_feeds(seed=4)["image"]
    for _ in range(3):
        assert client.post("/v1/infer", content=_npy(x), headers=NPY).status_code == 200
    assert client.post("/v1/infer", content=b"nope", headers=NPY).status_code == 400
    reply = client.get("/metrics")
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    after = reply.text
    assert metric(after, "splitinfer_requests_total") == metric(before, "splitinfer_requests_total") + 4
    bad = ("splitinfer_request_errors_total", {"kind": "bad_input"})
    assert metric(after, bad[0], **bad[1]) == metric(before, bad[0], **bad[1]) + 1
    count = "splitinfer_request_latency_seconds_count"
    assert metric(after, count) == metric(before, count) + 3
    assert metric(after, "splitinfer_request_latency_seconds_bucket", le="+Inf") == metric(after, count)
    bucket = "splitinfer_request_latency_seconds_bucket"
    values = [float(line.rpartition(" ")[2]) for line in after.splitlines() if line.startswith(bucket)]
    assert len(values) == 14 and values == sorted(values)  # cumulative
    sum_s = "splitinfer_request_latency_seconds_sum"
    assert metric(after, sum_s) > metric(before, sum_s)
    stage0 = ("splitinfer_stage_compute_seconds_count", {"stage": "0", "device": "a"})
    assert metric(after, stage0[0], **stage0[1]) == metric(before, stage0[0], **stage0[1]) + 3
    assert metric(after, "splitinfer_stage_compute_seconds_sum", stage="1", device="b") > 0


def test_healthz_reports_ready_devices(served):
    client, _, _ = served
    reply = client.get("/healthz")
    assert reply.status_code == 200
    doc = reply.json()
    assert doc["status"] == "ok" and doc["devices"] == {"a": "up", "b": "up"}
    assert [s["device"] for s in doc["stages"]] == ["a", "b"]


def test_a_dead_worker_gives_503_and_a_missed_deadline_504():
    _, parts = whole_and_parts(mlp_parts(2, width=16, batch=4))
    x = np.zeros((4, 16), np.float32)
    with deploy_stages(stages_on(parts, ["a", "b"]), local_cluster(["a", "b"]), timeout_s=5.0) as session:
        client = TestClient(make_app(session))
        assert client.post("/v1/infer", content=_npy(x), headers=NPY).status_code == 200
        os.kill(session.worker_pids["b"], signal.SIGKILL)
        reply = client.post("/v1/infer", content=_npy(x), headers=NPY)
        assert reply.status_code == 503 and "'b'" in reply.json()["error"]
        assert client.get("/healthz").status_code == 503
        assert metric(client.get("/metrics").text, "splitinfer_request_errors_total", kind="worker") == 1

    _, parts = whole_and_parts(heavy_parts(1, size=256, repeats=1))
    cluster = local_cluster(["slow"], slowdown={"slow": 1000.0})  # about 0.5 to 1.5 s per request
    with deploy_stages(stages_on(parts, ["slow"]), cluster, timeout_s=0.1) as session:
        client = TestClient(make_app(session))
        start = time.monotonic()
        reply = client.post("/v1/infer", content=_npy(np.ones((256, 256), np.float32)), headers=NPY)
        assert reply.status_code == 504 and "got no result within its deadline" in reply.json()["error"]
        assert time.monotonic() - start < 3.0
    assert client.get("/healthz").status_code == 503  # closed


def test_uvicorn_serves_the_app_over_real_http(served):
    _, session, ref = served
    x = ref.model.make_feeds(seed=5)["image"]
    with serving(make_app(session)) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        reply = client.post("/v1/infer", content=_npy(x), headers=NPY)
        assert client.get("/healthz").json()["status"] == "ok"
    np.testing.assert_allclose(np.load(io.BytesIO(reply.content)), ref.run({"image": x})[0], atol=1e-4)


def test_a_stage_that_rejects_its_inputs_gives_shape_error_and_400():
    # The partitions take batch 1; stage 0 declares a dynamic batch, so the session lets a batch of 3
    # through and the worker's ONNX Runtime rejects it: a stage-side bad input.
    _, parts = whole_and_parts(mlp_parts(2, width=16, batch=1))
    stages = stages_on(parts, ["a", "b"])
    loose = tuple(TensorSpec(s.name, s.dtype, (-1, *s.shape[1:])) for s in stages[0].inputs)
    stages[0] = dataclasses.replace(stages[0], inputs=loose)
    x = np.zeros((3, 16), np.float32)
    with deploy_stages(stages, local_cluster(["a", "b"]), timeout_s=5.0) as session:
        with pytest.raises(ShapeError, match="rejects its inputs"):
            session.run(None, {loose[0].name: x})
        # The same class through one worker's client:
        with session.worker_client("a") as single, pytest.raises(ShapeError, match="rejects its inputs"):
            single.time_partition(stages[0].model_bytes, {loose[0].name: x}, min_runs=1, max_runs=1)
        client = TestClient(make_app(session))
        reply = client.post("/v1/infer", content=_npy(x), headers=NPY)
        assert reply.status_code == 400 and "rejects its inputs" in reply.json()["error"]
        errors = client.get("/metrics").text
        assert metric(errors, "splitinfer_request_errors_total", kind="bad_input") == 1
        ok = client.post("/v1/infer", content=_npy(np.zeros((1, 16), np.float32)), headers=NPY)
        assert ok.status_code == 200


def test_metrics_show_each_worker_resource_use(served):
    client, session, _ = served
    poller = client.app.state.resources  # started with the app (TestClient runs its lifespan)
    poller.poll()  # the first round of a worker starts its sampling and sets nothing
    time.sleep(0.35)
    poller.poll()
    text = client.get("/metrics").text
    for device in session.addresses:
        assert f'splitinfer_worker_cpu_percent{{device="{device}"}}' in text
        assert 0 <= metric(text, "splitinfer_worker_cpu_percent", device=device) <= 100 * os.cpu_count()
        assert metric(text, "splitinfer_worker_rss_bytes", device=device) > 10e6  # onnxruntime loaded
    assert "splitinfer_worker_gpu_util_percent{" not in text  # CPU workers: no GPU figures
