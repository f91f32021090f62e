"""Workers started by hand (``splitinfer worker``) and named by address in the cluster, beside local ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from helpers.runtime_models import mlp_parts, stages_on, whole_and_parts

from splitinfer.cluster import parse_cluster
from splitinfer.errors import AuthError, ClusterError
from splitinfer.runtime import deploy_stages

TOKEN = "remote-token-abcdef"


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    """A worker named 'edge' with a token file, as a user would start it on another machine."""
    tmp = tmp_path_factory.mktemp("edge")
    token_file = tmp / "token.txt"
    token_file.write_text(TOKEN + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "splitinfer.runtime.device", "--name", "edge", "--listen",
                             "tcp://127.0.0.1:*", "--num-threads", "1", "--token-file", str(token_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode().strip()
    assert line.startswith("READY ")
    yield line.split(" ", 1)[1], token_file
    proc.terminate()
    proc.wait(5)
    proc.stdout.close()


def _cluster(address: str, token_file: Path | None, name: str = "edge"):
    doc = {"backend": "workers", "source": "camera",
           "devices": [{"name": "camera", "num_threads": 1}, {"name": name, "address": address}],
           "links": [{"from": "camera", "to": name, "bandwidth": "1Gbit/s", "latency": "1ms"}]}
    if token_file is not None:
        doc["token_file"] = str(token_file)
    return parse_cluster(doc)


def test_local_and_remote_workers_share_a_pipeline(edge):
    address, token_file = edge
    whole, parts = whole_and_parts(mlp_parts(2, width=16, batch=4))
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    with deploy_stages(stages_on(parts, ["camera", "edge"]), _cluster(address, token_file)) as session:
        (got,) = session.run(None, {"t0": x})
        assert set(session.worker_pids) == {"camera"}  # the remote worker is not ours to start
        hops = session.last_timing.hops
        route = [(h.src, h.dst) for h in hops]
        assert route == [("camera", "camera"), ("camera", "edge"), ("edge", "camera")]
        assert all(h.transfer_s >= 0.001 for h in hops[1:])  # the declared 1 ms latency
    np.testing.assert_allclose(got, ort.InferenceSession(whole).run(None, {"t0": x})[0], atol=1e-4)


def test_a_coordinator_with_another_token_is_refused(edge):
    address, _ = edge
    _, parts = whole_and_parts(mlp_parts(2, width=16, batch=4))
    with pytest.raises(AuthError, match="token"):
        deploy_stages(stages_on(parts, ["camera", "edge"]), _cluster(address, None), token=b"not-the-token")


def test_a_worker_with_another_name_or_no_worker_at_all_is_a_cluster_error(edge):
    address, token_file = edge
    _, parts = whole_and_parts(mlp_parts(2, width=16, batch=4))
    with pytest.raises(ClusterError, match="named 'edge'"):
        deploy_stages(stages_on(parts, ["camera", "cloud"]), _cluster(address, token_file, name="cloud"))
    with pytest.raises(ClusterError, match="no worker answers"):
        deploy_stages(stages_on(parts, ["camera", "edge"]), _cluster("tcp://127.0.0.1:9", token_file),
                      connect_timeout_s=0.3)
