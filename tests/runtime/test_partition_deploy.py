"""Shipping partitions to real workers: a transfer resumed after the client and the worker went away, a
second deploy of a plan sending only hashes (measured), parts deployed by hash, a large one from its
weights mapped from disk (its peak measured), --model-dir, a cache that is off, a part evicted before its
deploy, and a cache folder that cannot be used (device/_partitions.py, device/_partition_layout.py,
wire/partitions.py, coordinator/pipeline.deploy_by_hash)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from helpers.runtime_models import local_cluster, mlp_parts, stages_on, whole_and_parts

from splitinfer.cluster import parse_cluster
from splitinfer.errors import ErrorCode, TransportError, WorkerError
from splitinfer.host import peak_resident_bytes
from splitinfer.runtime import StageSpec, WorkerClient, deploy_stages
from splitinfer.runtime.coordinator.pipeline import deploy_by_hash, undeploy_pipeline
from splitinfer.runtime.device._partition_layout import MAPPED_MIN_BYTES, Mapped
from splitinfer.runtime.wire import messages

TOKEN = b"partition-token-0123456789"
MiB = 1 << 20


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _start(tmp: Path, name: str, *extra: str) -> tuple[subprocess.Popen, str]:
    token_file = tmp / "token"
    token_file.write_bytes(TOKEN + b"\n")
    proc = subprocess.Popen([sys.executable, "-m", "splitinfer.runtime.device", "--name", name, "--listen",
                             "tcp://127.0.0.1:*", "--num-threads", "1", "--token-file", str(token_file),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode().strip()
    assert line.startswith("READY "), line
    return proc, line.split(" ", 1)[1]


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(5)
    proc.stdout.close()


def _big_partition(width: int = 800) -> tuple[bytes, list]:
    """A partition of about 2 x width^2 x 4 bytes (5 MB at 800): weights large enough to count."""
    whole, parts = whole_and_parts(mlp_parts(1, width=width, batch=2))
    return whole, parts


def _deploy_header(parts: list, reply_to: str, **kw) -> messages.Deploy:
    _, ins, outs = parts[0]
    return messages.Deploy(deployment_id="dep", stage=0, device="w",
                           inputs=[messages.TensorMeta(s.name, s.dtype, s.shape) for s in ins],
                           outputs=[messages.TensorMeta(s.name, s.dtype, s.shape) for s in outs],
                           route=messages.Route(reply_to, True), reply_to=reply_to, **kw)


def test_a_transfer_broken_off_resumes_where_the_worker_left_it(tmp_path):
    _, parts = _big_partition()
    model = parts[0][0]
    sha, cache = _sha(model), tmp_path / "cache"
    assert len(model) > 4 * MiB
    proc, address = _start(tmp_path, "w", "--cache-dir", str(cache))
    try:
        with WorkerClient(address, TOKEN) as client:  # two chunks of 1 MiB, then the client is gone
            for offset in (0, MiB):
                piece = model[offset:offset + MiB]
                client.request(messages.PartitionChunk(sha256=sha, size_bytes=len(model), offset=offset,
                                                       chunk_sha256=_sha(piece)), blobs=[piece])
        _stop(proc)  # ... and the worker too: the pending file outlives it
        assert (cache / "pending" / f"{sha}-{len(model)}.part").stat().st_size == 2 * MiB
        proc, address = _start(tmp_path, "w", "--cache-dir", str(cache))
        with WorkerClient(address, TOKEN) as client:
            with pytest.raises(WorkerError) as e:  # a part pending is not held: a deploy of it is refused
                client.request(_deploy_header(parts, "tcp://127.0.0.1:9", parts_sha256=[sha]))
            assert e.value.code == ErrorCode.MISSING_PARTITION and sha in e.value.problem
            upload = client.put_partition(model)
            assert upload is not None and upload.sha256 == sha
            assert (upload.resumed_from, upload.sent_bytes) == (2 * MiB, len(model) - 2 * MiB)
            assert client.sent_bytes < len(model) - 2 * MiB + 64 * 1024
            # installed (kept as external data: over the worker's MAPPED_MIN_BYTES), nothing left pending
            assert Mapped(cache, sha).exists() and Mapped(cache, sha).check() == ""
            assert not list((cache / "pending").iterdir())
            reply = client.request(_deploy_header(parts, "tcp://127.0.0.1:9", parts_sha256=[sha]))
            assert reply.header.data["create_s"] >= 0
            assert client.undeploy("dep") == 1
            again = client.put_partition(model)  # held now: nothing sent
            assert again is not None and (again.sent_bytes, again.source) == (0, "cache")
    finally:
        _stop(proc)


def test_a_second_deploy_of_the_same_plan_sends_only_hashes():
    whole, parts = whole_and_parts(mlp_parts(2, width=800, batch=2))
    size = sum(len(p[0]) for p in parts)
    stages = stages_on(parts, ["a", "b"])
    x = np.random.default_rng(0).standard_normal((2, 800)).astype(np.float32)
    with deploy_stages(stages, local_cluster(["a", "b"]), timeout_s=30) as session:
        clients = session._clients
        first = sum(c.sent_bytes for c in clients.values())
        pipeline = session.deploy(stages)
        second = sum(c.sent_bytes for c in clients.values()) - first
        undeploy_pipeline(pipeline.deployment_id, pipeline.devices, clients)
        pipeline.uplink.close()
        (got,) = session.run(None, {"t0": x}, deadline_s=20)
    print(f"\npartitions {size} bytes; first deploy {first} bytes on the wire, second {second}")
    assert size > 8 * MiB and first > size and second < 1e6
    np.testing.assert_allclose(got, ort.InferenceSession(whole).run(None, {"t0": x})[0], rtol=1e-4, atol=1e-4)


def test_a_stage_in_parts_is_deployed_by_hash_part_by_part():
    whole, parts = whole_and_parts(mlp_parts(3, width=16, batch=2))
    (p0, ins, _), (p1, _, outs), (p2, ins2, outs2) = parts
    stages = [StageSpec(0, "a", p0, ins, outs, more_parts=(p1,)), StageSpec(1, "b", p2, ins2, outs2)]
    x = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    with deploy_stages(stages, local_cluster(["a", "b"]), timeout_s=30) as session:
        (got,) = session.run(None, {"t0": x}, deadline_s=20)
        cache = session.launcher.workers["a"].log_path.parent / "partitions" / "a"
        held = {p.name for p in cache.iterdir() if len(p.name) == 64}
    assert held == {_sha(p0), _sha(p1)}
    np.testing.assert_allclose(got, ort.InferenceSession(whole).run(None, {"t0": x})[0], rtol=1e-4, atol=1e-4)


def _edge_cluster(tmp_path: Path, address: str) -> dict:
    """A local camera (the source) and the worker at ``address`` as the edge."""
    return {"backend": "workers", "token_file": str(tmp_path / "token"), "source": "camera",
            "devices": [{"name": "camera", "num_threads": 1}, {"name": "edge", "address": address}],
            "links": [{"from": "camera", "to": "edge", "bandwidth": "1Gbit/s", "latency": "1ms"}]}


def test_a_large_partition_is_deployed_by_hash_from_its_weights_mapped_from_disk(tmp_path):
    """A partition of at least 64 MiB is kept as external data once it arrives: the worker deploys it from
    the graph file (ONNX Runtime maps the weights) with the outputs it gives inline, and its memory grows
    by about the partition and one layer, where a deploy of its bytes grew by three times the partition."""
    whole, parts = whole_and_parts(mlp_parts(1, width=2100, batch=2, layers_per_part=4))
    model = parts[0][0]
    sha, cache = _sha(model), tmp_path / "cache"
    assert len(model) >= MAPPED_MIN_BYTES
    proc, address = _start(tmp_path, "edge", "--cache-dir", str(cache))
    x = np.random.default_rng(0).standard_normal((2, 2100)).astype(np.float32)
    try:
        idle = peak_resident_bytes(proc.pid)
        with deploy_stages(stages_on(parts, ["edge"]), parse_cluster(_edge_cluster(tmp_path, address)),
                           timeout_s=60) as session:
            (got,) = session.run(None, {"t0": x}, deadline_s=30)
            peak = peak_resident_bytes(proc.pid)
        assert sorted(p.name for p in cache.iterdir() if p.name.startswith(sha)) == \
            [f"{sha}.data", f"{sha}.json", f"{sha}.onnx"]
    finally:
        _stop(proc)
    np.testing.assert_allclose(got, ort.InferenceSession(whole).run(None, {"t0": x})[0], rtol=1e-5, atol=1e-6)
    if idle is not None and peak is not None:  # Linux
        print(f"\npartition {len(model) / 1e6:.0f} MB; the worker's peak grew {(peak - idle) / 1e6:.0f} MB")
        assert peak - idle < 2 * len(model)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator and /proc: Linux only")
def test_a_worker_keeps_nothing_of_a_transfer_but_the_file(tmp_path):
    """A 10 MiB partition in 4 MiB chunks: each chunk arrives, is written and let go, and what it took goes
    back to the system (host.returning_freed_memory); with glibc's own thresholds a worker kept a chunk's
    4 MiB resident for good, counted against the first stage it deployed."""
    import psutil

    proc, address = _start(tmp_path, "edge", "--cache-dir", str(tmp_path / "cache"))
    data = np.random.default_rng(0).integers(0, 256, 10 * MiB, dtype=np.uint8).tobytes()
    try:
        worker = psutil.Process(proc.pid)
        before = worker.memory_info().rss
        with WorkerClient(address, TOKEN) as client:
            upload = client.put_partition(data)
        assert upload is not None and upload.sent_bytes == len(data)
        kept = worker.memory_info().rss - before
    finally:
        _stop(proc)
    assert kept < 1.5 * MiB, f"the worker kept {kept / MiB:.1f} MiB of a transfer"




def test_a_timing_request_hands_back_what_it_freed_once_done(monkeypatch):
    """A profile set's sessions run in the worker's keeping mode (a deployed stage's speed), so their runs'
    buffers stay with glibc when the sessions close; the request's scope hands them back when it is done
    (mobilenetv2's blocks timed in one process: 46-79 MB held, 1 MB after), else a worker that profiled
    held them until its next deploy, and a plan deployed after profiling grew it by less than its stage."""
    from splitinfer.runtime.device import _control

    trims = []
    monkeypatch.setattr(_control, "release_freed_memory", lambda: trims.append("trim"))
    for header in (messages.TimePartition(request_id=1), messages.TimeCompression(request_id=1)):
        with _control.memory_scope(header):
            assert trims == []  # its runs keep their buffers while it times them
        assert trims == ["trim"]
        trims.clear()
    with _control.memory_scope(messages.Info(request_id=1)):
        pass
    assert trims == []

def test_a_model_dir_serves_its_partitions_with_no_transfer(tmp_path):
    whole, parts = whole_and_parts(mlp_parts(2, width=64, batch=2))
    models = tmp_path / "models"
    models.mkdir()
    (models / "edge.onnx").write_bytes(parts[1][0])
    (models / "notes.txt").write_bytes(parts[0][0])  # not an .onnx file: not served
    proc, address = _start(tmp_path, "edge", "--cache-dir", str(tmp_path / "cache"), "--model-dir",
                           str(models))
    doc = _edge_cluster(tmp_path, address)
    x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    try:
        with WorkerClient(address, TOKEN) as client:
            upload = client.put_partition(parts[1][0])
            assert upload is not None and (upload.source, upload.sent_bytes) == ("model_dir", 0)
            assert client.sent_bytes < 1024
            assert client.put_partition(parts[0][0]).source == "cache"  # .txt: uploaded
            # A file added while the worker runs is found when asked for.
            (models / "late.onnx").write_bytes(whole)
            late = client.put_partition(whole)
            assert late is not None and (late.source, late.sent_bytes) == ("model_dir", 0)
        with deploy_stages(stages_on(parts, ["camera", "edge"]), parse_cluster(doc), timeout_s=30) as session:
            sent = session._clients["edge"].sent_bytes
            (got,) = session.run(None, {"t0": x}, deadline_s=20)
        assert sent < len(parts[1][0])  # the edge's partition did not travel
        assert not (tmp_path / "cache" / _sha(parts[1][0])).exists()
    finally:
        _stop(proc)
    np.testing.assert_allclose(got, ort.InferenceSession(whole).run(None, {"t0": x})[0], rtol=1e-4, atol=1e-4)


def test_a_worker_whose_cache_is_off_is_deployed_inline(tmp_path):
    _, parts = whole_and_parts(mlp_parts(1, width=16, batch=2))
    proc, address = _start(tmp_path, "w", "--cache-dir", str(tmp_path / "cache"), "--cache-max-bytes", "0")
    try:
        with WorkerClient(address, TOKEN) as client:
            assert client.put_partition(parts[0][0]) is None
            with pytest.raises(TransportError, match="more than this worker's cache holds") as e:
                model = parts[0][0]
                client.request(messages.PartitionChunk(sha256=_sha(model), size_bytes=len(model), offset=0,
                                                       chunk_sha256=_sha(model)), blobs=[model])
            assert e.value.code == ErrorCode.OVERSIZED
            deploy_by_hash(client, _deploy_header(parts, "tcp://127.0.0.1:9"), [model], [], 30.0)  # inline
            assert client.undeploy("dep") == 1
    finally:
        _stop(proc)


class _EvictingClient:
    """A worker's client that, before the first deploy by hash, puts another partition on the worker: one
    its small cache can hold only instead of the stage's (as another stage's upload may)."""

    def __init__(self, client: WorkerClient, other: bytes) -> None:
        self.client, self.other, self.num_puts = client, other, 0

    def put_partition(self, data: bytes, timeout_s: float | None = None):
        self.num_puts += 1
        return self.client.put_partition(data, timeout_s=timeout_s)

    def request(self, header, **kw):
        if isinstance(header, messages.Deploy) and header.parts_sha256 and self.other:
            self.client.put_partition(self.other)
            self.other = b""
        return self.client.request(header, **kw)


def test_a_part_evicted_before_its_deploy_is_put_there_again(tmp_path):
    _, parts = whole_and_parts(mlp_parts(2, width=64, batch=2))
    (model, _, _), (other, _, _) = parts
    proc, address = _start(tmp_path, "w", "--cache-dir", str(tmp_path / "cache"), "--cache-max-bytes",
                           str(max(len(model), len(other)) + 100))
    try:
        with WorkerClient(address, TOKEN) as client:
            evicting = _EvictingClient(client, other)
            deploy_by_hash(evicting, _deploy_header(parts, "tcp://127.0.0.1:9"), [model], [], 30.0)
            assert evicting.num_puts == 2 and client.undeploy("dep") == 1
    finally:
        _stop(proc)


def _worker_error(tmp_path: Path, *flags: str, cli: bool = True) -> tuple[int, str]:
    token_file = tmp_path / "token"
    token_file.write_bytes(TOKEN + b"\n")
    start = [str(Path(sys.executable).parent / "splitinfer"), "worker"] if cli else \
        [sys.executable, "-m", "splitinfer.runtime.device"]
    done = subprocess.run([*start, "--name", "w", "--listen", "tcp://127.0.0.1:*", "--token-file",
                           str(token_file), *flags], capture_output=True, text=True, timeout=60)
    return done.returncode, done.stderr.strip()


def test_a_cache_dir_that_cannot_be_used_stops_the_worker_with_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    code, err = _worker_error(tmp_path, "--cache-dir", str(tmp_path / "file" / "cache"))
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "--cache-dir" in err and "cannot be used" in err and "Traceback" not in err
    proc, _ = _start(tmp_path, "w", "--cache-dir", str(tmp_path / "held"))
    try:  # a folder another worker holds
        code, err = _worker_error(tmp_path, "--cache-dir", str(tmp_path / "held"), cli=False)
        assert code == 2 and len(err.splitlines()) == 1 and "another worker uses it" in err, err
    finally:
        _stop(proc)


