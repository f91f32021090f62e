"""A worker's ``time_compression`` request, against a real worker process: the timings the client and
``WorkerRunner`` get, malformed and abusive requests (a coded error reply, and the worker keeps
serving), and a peer key refused."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest
import zmq

from splitinfer.compression import COMPRESSIONS
from splitinfer.errors import AuthError, DeadlineError, ErrorCode, SplitinferError, TransportError
from splitinfer.profile.partition_timing import CompressionTiming
from splitinfer.profile.timing import time_compression
from splitinfer.runtime import WorkerClient
from splitinfer.runtime.cluster_workers import WorkerRunner
from splitinfer.runtime.wire import codec, curve, messages
from splitinfer.runtime.wire.curve import Curve

TOKEN = b"time-compression-token-0123"
NAN, INF = float("nan"), float("inf")


def _start(tmp: Path, name: str, *flags: str) -> tuple[subprocess.Popen, str]:
    token_file = tmp / f"{name}.token"
    token_file.write_bytes(TOKEN + b"\n")
    proc = subprocess.Popen([sys.executable, "-m", "splitinfer.runtime.device", "--name", name, "--listen",
                             "tcp://127.0.0.1:*", "--num-threads", "1", "--parent-pid", str(os.getpid()),
                             "--token-file", str(token_file), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode().strip()
    assert line.startswith("READY "), line
    return proc, line.split(" ", 1)[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
    proc.wait(5)
    proc.stdout.close()


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    proc, address = _start(tmp_path_factory.mktemp("tc"), "w")
    yield proc, address
    _stop(proc)


def _cut(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 64, 56, 56)).astype(np.float32)


def test_the_worker_times_every_compression_as_this_process_does(worker):
    _, address = worker
    arrays = {"x": np.maximum(_cut(), 0), "ids": np.arange(1000, dtype=np.int64)}
    names = [*COMPRESSIONS, "int8:per_channel:axis=1"]
    with WorkerClient(address, TOKEN) as client:
        got = client.time_compression(arrays, names, budget_s=0.2, slowdown=2.0)
        here = time_compression(arrays, names, budget_s=0.05)
        assert list(got) == names
        for name in names:
            t = got[name]
            assert isinstance(t, CompressionTiming)
            assert math.isfinite(t.compress_s) and t.compress_s > 0, name
            assert math.isfinite(t.decompress_s) and t.decompress_s > 0, name
            assert (t.wire_bytes, t.raw_bytes) == (here[name].wire_bytes, here[name].raw_bytes), name
        raw_x = arrays["x"].nbytes
        assert got["int8"].wire_bytes < raw_x / 4 + arrays["ids"].nbytes + 100  # ids travel raw
        runner = WorkerRunner(client)
        timed = runner.time_compression({"x": _cut()}, ["fp16"], budget_s=0.05, slowdown=1.0)
        assert set(timed) == {"fp16"} and timed["fp16"].wire_bytes < _cut().nbytes / 2 + 100
        assert client.time_compression({"x": _cut()}, [], budget_s=0.05, slowdown=1.0) == {}


def _bad_requests() -> list[tuple[str, messages.TimeCompression, str]]:
    d, tc = msgspec.structs.replace, messages.TimeCompression(compressions=["int8"], budget_s=0.05)
    return [
        ("budget nan", d(tc, budget_s=NAN), "budget_s"),
        ("budget inf", d(tc, budget_s=INF), "budget_s"),
        ("budget negative", d(tc, budget_s=-1.0), "budget_s"),
        ("budget absurd", d(tc, budget_s=1e9), "budget_s"),
        ("slowdown nan", d(tc, slowdown=NAN), "slowdown"),
        ("slowdown below one", d(tc, slowdown=0.5), "slowdown"),
        ("min_runs zero", d(tc, min_runs=0), "min_runs"),
        ("max_runs absurd", d(tc, max_runs=10**9), "max_runs"),
        ("num_warmup absurd", d(tc, num_warmup=10**9), "num_warmup"),
        ("num_warmup negative", d(tc, num_warmup=-1), "num_warmup"),
        ("rel_precision nan", d(tc, rel_precision=NAN), "rel_precision"),
        ("1000 compressions", d(tc, compressions=["none"] * 1000), "compressions"),
        ("unknown compression", d(tc, compressions=["lz4", "gzip"]), "gzip"),
        ("bad setting", d(tc, compressions=["zstd:level=99"]), "level"),
        ("unknown setting", d(tc, compressions=["fp16:fast"]), "setting"),
        ("empty compression", d(tc, compressions=[""]), "compression"),
        ("huge compression name", d(tc, compressions=["int8" + ":a" * 100_000]), "characters"),
    ]


@pytest.mark.parametrize(("what", "header", "field"), _bad_requests(), ids=[c[0] for c in _bad_requests()])
def test_a_bad_request_gets_a_malformed_reply_naming_it_and_the_worker_keeps_serving(worker, what, header,
                                                                                    field):
    proc, address = worker
    context = zmq.Context()
    try:
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(address)
        dealer.send_multipart(codec.encode(header, TOKEN, arrays=[("x", _cut())]))
        assert dealer.poll(10_000), what
        reply = codec.decode(dealer.recv_multipart(), TOKEN).header
    finally:
        context.destroy(linger=0)
    assert isinstance(reply, messages.ErrorReply), what
    assert reply.code == ErrorCode.MALFORMED, (what, reply)
    assert field in reply.problem and reply.fix, (what, reply)
    assert "\n" not in reply.problem + reply.fix and len(reply.problem) < 500
    assert proc.poll() is None
    with WorkerClient(address, TOKEN) as client:
        assert set(client.time_compression({"x": _cut()}, ["lz4"], budget_s=0.02, slowdown=1.0)) == {"lz4"}


def test_blobs_and_values_a_compression_cannot_carry_are_refused_without_harm(worker):
    proc, address = worker
    with WorkerClient(address, TOKEN) as client:
        with pytest.raises(TransportError, match="blobs"):
            client.request(messages.TimeCompression(compressions=["none"]), blobs=[b"model"])
        with pytest.raises(SplitinferError, match="65504"):
            client.time_compression({"x": np.full(8, 1e6, np.float32)}, ["fp16"], budget_s=0.02, slowdown=1.0)
        with pytest.raises(SplitinferError, match="axis"):
            client.time_compression({"x": np.ones(8, np.float32)}, ["int8:per_channel:axis=3"], budget_s=0.02,
                                    slowdown=1.0)
        assert client.health()["name"] == "w"
    assert proc.poll() is None


def test_the_client_refuses_too_many_compressions_before_sending():
    with WorkerClient("tcp://127.0.0.1:9", TOKEN, timeout_s=0.5) as client:  # nobody listens there
        with pytest.raises(SplitinferError, match="number of compressions") as info:
            client.time_compression({"x": _cut()}, ["none"] * 17, budget_s=0.02, slowdown=1.0)
        assert not isinstance(info.value, DeadlineError)


def test_a_peer_key_may_not_ask_for_it(tmp_path):
    for name in ("w", "coordinator", "peer"):
        curve.write_key_pair(tmp_path, name)
    proc, address = _start(tmp_path, "w", "--curve-secret-key", str(tmp_path / "w.key_secret"),
                           "--curve-coordinator-keys", str(tmp_path / "coordinator.key"),
                           "--curve-peer-keys", str(tmp_path / "peer.key"))
    server = curve.read_key_pair(tmp_path / "w.key_secret").public
    try:
        def client(name: str) -> WorkerClient:
            pair = curve.read_key_pair(tmp_path / f"{name}.key_secret")
            return WorkerClient(address, TOKEN, curve=Curve(pair, server))
        with client("peer") as peer, pytest.raises(AuthError, match="only from the coordinator keys"):
            peer.time_compression({"x": _cut()}, ["int8"], budget_s=0.02, slowdown=1.0)
        with client("coordinator") as coordinator:
            assert set(coordinator.time_compression({"x": _cut()}, ["int8"], budget_s=0.02,
                                                    slowdown=1.0)) == {"int8"}
    finally:
        _stop(proc)
