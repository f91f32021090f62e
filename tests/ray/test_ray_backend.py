"""backend: ray on a local multi-node Ray cluster: workers as actors on device nodes;
failover when a node is lost.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import onnxruntime as ort
import psutil
import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'splitinfer[ray]')")
from ray.cluster_utils import Cluster as RayCluster  # noqa: E402

from splitinfer import zoo  # noqa: E402
from splitinfer.cluster import parse_cluster  # noqa: E402
from splitinfer.errors import AuthError, ClusterError  # noqa: E402
from splitinfer.graph import analyze, extract_segment, load_model  # noqa: E402
from splitinfer.runtime import StageSpec, deploy_stages, start_workers  # noqa: E402
from splitinfer.runtime.launch.ray import device_resource, ray_start_line  # noqa: E402
from splitinfer.runtime.wire.client import WorkerClient  # noqa: E402

DEVICES = ("a", "b", "c")
TOKEN = b"ray-test-token"


@pytest.fixture(scope="module")
def ray_cluster():
    """Head (no device) + one node per device offering ``splitinfer:<device>``; torn down fully."""
    started = time.monotonic()
    cluster = RayCluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes = {name: cluster.add_node(num_cpus=1, resources={device_resource(name): 1}) for name in DEVICES}
    try:
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        cluster.wait_for_nodes()
        print(f"ray cluster up in {time.monotonic() - started:.1f} s")
        yield cluster, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()
        _assert_no_children()


def _assert_no_children(wait_s: float = 15.0) -> None:
    me = psutil.Process()
    deadline = time.monotonic() + wait_s
    while True:
        alive = [c for c in me.children(recursive=True)
                 if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not alive, f"processes left behind: {[c.pid for c in alive]}"


def _cluster_doc(address: str, devices=DEVICES) -> dict:
    links = [{"from": x, "to": y, "measure": True} for i, x in enumerate(devices) for y in devices[i + 1:]]
    return {"backend": "ray", "address": address, "source": devices[0], "sink": devices[0],
            "devices": [{"name": d, "num_threads": 1} for d in devices], "links": links}


@pytest.fixture(scope="module")
def model_and_segments():
    """A tiny ResNet cut into 3 segments of blocks, and its feeds and reference output."""
    model = load_model(zoo.build_small("resnet18"))
    analysis = analyze(model, max_blocks=6)
    num_blocks = len(analysis.blocks)
    assert num_blocks >= 3
    bounds = [(0, num_blocks // 3 - 1), (num_blocks // 3, 2 * num_blocks // 3 - 1),
              (2 * num_blocks // 3, num_blocks - 1)]
    segments = [extract_segment(model, analysis, first, last) for first, last in bounds]
    feeds = model.make_feeds(seed=1)
    reference = ort.InferenceSession(model.proto.SerializeToString()).run(None, feeds)
    return model, segments, feeds, reference


def _stages(segments, devices) -> list[StageSpec]:
    return [StageSpec(k, device, seg.to_bytes(), seg.inputs, seg.outputs)
            for k, (seg, device) in enumerate(zip(segments, devices, strict=True))]


def test_missing_device_resource_names_the_ray_start_line(ray_cluster):
    cluster, _ = ray_cluster
    doc = _cluster_doc(cluster.address, ("a", "nowhere"))
    with pytest.raises(ClusterError, match="nowhere") as info:
        start_workers(parse_cluster(doc), TOKEN)
    assert info.value.fix.endswith(ray_start_line("nowhere", cluster.address))
    assert ray.is_initialized()  # the launcher left the test's own Ray connection alone


def test_workers_run_on_their_device_nodes_and_answer_over_zeromq(ray_cluster):
    cluster, nodes = ray_cluster
    launcher, addresses = start_workers(parse_cluster(_cluster_doc(cluster.address)), TOKEN)
    try:
        assert set(addresses) == set(DEVICES) and len(set(addresses.values())) == 3
        node_of_pid = {}
        for name, node in nodes.items():
            raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
            node_of_pid.update({p.pid: name for p in raylet.children(recursive=True)})
        for name, address in addresses.items():
            assert node_of_pid[launcher.pids[name]] == name  # the actor lives under its device's raylet
            with WorkerClient(address, TOKEN, name=name) as client:
                assert client.health()["name"] == name
                client.echo(100_000)
            with WorkerClient(address, b"wrong", name=name) as client, \
                    pytest.raises(AuthError, match="token"):
                client.echo(10)
            assert launcher.is_alive(name)
        # A crashed worker process: Ray restarts the actor, but its stages would be gone, so the
        # launcher reports the worker it started as gone (the session then re-plans).
        os.kill(launcher.pids["c"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while launcher.is_alive("c") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not launcher.is_alive("c") and launcher.is_alive("a")
        assert "actor" in launcher.why_gone("c")
    finally:
        launcher.close()
    assert not any(launcher.is_alive(name) for name in DEVICES)


def test_plan_runs_on_ray_and_survives_a_node_removal(ray_cluster, model_and_segments):
    cluster, nodes = ray_cluster
    _, segments, feeds, reference = model_and_segments
    replans: list[frozenset[str]] = []

    def replan(excluded: frozenset[str]) -> list[StageSpec]:
        replans.append(excluded)
        alive = [d for d in DEVICES if d not in excluded]
        return _stages(segments, [alive[k % len(alive)] for k in range(len(segments))])

    spec = parse_cluster(_cluster_doc(cluster.address))
    with deploy_stages(_stages(segments, DEVICES), spec, token=TOKEN, replan=replan, timeout_s=20) as session:
        assert not session.result_address.startswith("tcp://0.0.0.0")
        for _ in range(3):
            outputs = session.run(None, feeds)
            for got, want in zip(outputs, reference, strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        assert [s.device for s in session.last_timing.stages] == list(DEVICES)

        cluster.remove_node(nodes.pop("b"), allow_graceful=False)
        removed_at = time.monotonic()
        results = []  # keep requests flowing: the ones in flight when b's worker dies move over
        while session.num_replans == 0 and time.monotonic() - removed_at < 20:
            futures = [session.submit(feeds) for _ in range(4)]
            results += [f.result(timeout=30) for f in futures]
        detected_s = time.monotonic() - removed_at
        print(f"node removal to re-planned pipeline: {detected_s:.2f} s, {len(results)} requests meanwhile")
        results += [f.result(timeout=30) for f in [session.submit(feeds) for _ in range(8)]]
        for result in results:
            for got, want in zip(result.as_list(), reference, strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        assert session.num_replans >= 1 and replans[0] == frozenset({"b"})
        assert "b" not in {s.device for s in session.stages}
        assert detected_s < 10
        outputs = session.run(None, feeds)
        np.testing.assert_allclose(outputs[0], reference[0], rtol=1e-4, atol=1e-5)
        assert session.dead_devices == {"b"}
        launcher = session.launcher  # the Ray side noticed too: the actor's node is gone
        deadline = time.monotonic() + 10
        while launcher.is_alive("b") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not launcher.is_alive("b") and launcher.is_alive("a") and launcher.is_alive("c")
