"""Large partitions timed from the worker's cache (issue 21, item 4): put there by hash once, named by hash
in time_partition, opened there (memory-mapped when large); a second profile sends none of their bytes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.runtime_models import mlp_parts, whole_and_parts

from splitinfer.errors import ErrorCode, TransportError, WorkerError, code_of
from splitinfer.profile.partition_timing import PartitionTiming
from splitinfer.runtime import WorkerClient
from splitinfer.runtime.wire import client as client_module
from splitinfer.runtime.wire import messages

TOKEN = b"by-hash-token-0123456789abc"


@pytest.fixture
def worker(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_bytes(TOKEN + b"\n")
    proc = subprocess.Popen([sys.executable, "-m", "splitinfer.runtime.device", "--name", "w", "--listen",
                             "tcp://127.0.0.1:*", "--num-threads", "1", "--token-file", str(token_file),
                             "--cache-dir", str(tmp_path / "cache")], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode().strip()
    assert line.startswith("READY "), line
    client = WorkerClient(line.split(" ", 1)[1], TOKEN, timeout_s=30, name="w")
    yield client, tmp_path / "cache"
    client.close()
    proc.terminate()
    proc.wait(5)
    proc.stdout.close()


def _parts():
    _, parts = whole_and_parts(mlp_parts(2, width=200, batch=2))
    feeds = {"t0": np.random.default_rng(0).standard_normal((2, 200)).astype(np.float32),
             "t1": np.random.default_rng(1).standard_normal((2, 200)).astype(np.float32)}
    return [p for p, _, _ in parts], feeds


def test_large_partitions_are_timed_from_the_cache_and_sent_once(worker, monkeypatch):
    client, cache = worker
    blobs, feeds = _parts()
    monkeypatch.setattr(client_module, "BY_HASH_MIN_BYTES", 1000)  # these count as large
    before = client.sent_bytes
    first = client.time_partitions(blobs, feeds, min_runs=2, max_runs=3, budget_s=0.1, num_warmup=1)
    sent_first = client.sent_bytes - before
    assert all(isinstance(t, PartitionTiming) for t in first)
    assert {p.name for p in cache.iterdir() if p.is_file()} >= {hashlib.sha256(b).hexdigest() for b in blobs}
    before = client.sent_bytes
    second = client.time_partitions(blobs, feeds, min_runs=2, max_runs=3, budget_s=0.1, num_warmup=1)
    assert all(isinstance(t, PartitionTiming) for t in second)
    assert sent_first > sum(len(b) for b in blobs)
    assert client.sent_bytes - before < 20_000  # hashes and the feeds, no partition


def test_small_partitions_still_travel_inline(worker):
    client, cache = worker
    blobs, feeds = _parts()
    client.time_partitions(blobs, feeds, min_runs=2, max_runs=3, budget_s=0.1, num_warmup=1)
    assert not [p for p in cache.iterdir() if p.is_file() and not p.name.startswith(".")]


def test_a_partition_named_twice_or_unknown_is_refused_with_a_code(worker):
    client, _ = worker
    blobs, feeds = _parts()
    sha = client.put_partition(blobs[0]).sha256
    twice = messages.TimePartition(min_runs=1, max_runs=2, parts_sha256=[sha, sha])
    with pytest.raises(TransportError) as e:
        client.request(twice, arrays=list(feeds.items()))
    assert code_of(e.value) == ErrorCode.MALFORMED and "each once" in e.value.fix
    unknown = messages.TimePartition(min_runs=1, max_runs=2, parts_sha256=["0" * 64])
    with pytest.raises(WorkerError) as e:
        client.request(unknown, arrays=list(feeds.items()))
    assert code_of(e.value) == ErrorCode.MISSING_PARTITION
    assert client.health()  # the worker is still there


def test_a_partition_evicted_before_it_is_timed_is_sent_inline(worker, monkeypatch):
    client, cache = worker
    blobs, feeds = _parts()
    monkeypatch.setattr(client_module, "BY_HASH_MIN_BYTES", 1000)
    real = client.put_partition

    def put_then_lose(part, timeout_s=None):
        upload = real(part, timeout_s=timeout_s)
        for path in Path(cache).iterdir():  # removed by hand behind the worker's back
            if path.is_file() and not path.name.startswith("."):
                path.unlink()
        return upload
    monkeypatch.setattr(client, "put_partition", put_then_lose)
    timings = client.time_partitions(blobs, feeds, min_runs=2, max_runs=3, budget_s=0.1, num_warmup=1)
    assert all(isinstance(t, PartitionTiming) for t in timings)


def test_the_worker_rests_before_each_timed_run_when_asked(worker):
    """Each of the 2 x 4 timed runs follows 0.1 s of idle on the worker (profile/rounds.py's rule Rest)."""
    client, _ = worker
    blobs, feeds = _parts()
    start = time.perf_counter()
    client.time_partitions(blobs, feeds, num_warmup=0, min_runs=4, max_runs=4, rest_s=0.1)
    assert time.perf_counter() - start >= 0.8
    for bad in (-1.0, 5.0):  # a malformed request: the reply names the field
        with pytest.raises(TransportError, match="rest_s"):
            client.time_partitions(blobs, feeds, rest_s=bad)
