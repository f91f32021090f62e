"""No file descriptors or memory left behind on failure paths: failed deploys, refused messages,
probes of bad addresses, client timeouts and clients of bad addresses."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import numpy as np
import psutil
import pytest
import zmq
from helpers.runtime_models import Part, mlp_parts, stages_on, whole_and_parts
from onnx import helper

from splitinfer.cluster import Device, parse_cluster
from splitinfer.errors import SplitinferError, TransportError
from splitinfer.host import peak_resident_bytes, reset_peak_resident
from splitinfer.runtime import WorkerClient, deploy_stages
from splitinfer.runtime.launch.local import launch_local_workers
from splitinfer.runtime.wire import codec, messages
from splitinfer.types import TensorSpec

TOKEN = b"hygiene-token-0123456789"
SLACK_FDS = 4  # the worker's own sockets may come and go (a reconnect, the reaper's wake-up pipe)


def _start_worker(folder: Path) -> Iterator[tuple[psutil.Process, str]]:
    token_file = folder / "token"
    token_file.write_bytes(TOKEN + b"\n")
    exe = Path(sys.executable).parent / "splitinfer"
    proc = subprocess.Popen([str(exe), "worker", "--name", "w", "--listen", "tcp://127.0.0.1:*",
                             "--num-threads", "1", "--token-file", str(token_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode().strip()
    assert line.startswith("READY "), line
    yield psutil.Process(proc.pid), line.split(" ", 1)[1]
    proc.terminate()
    proc.wait(5)
    proc.stdout.close()


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    yield from _start_worker(tmp_path_factory.mktemp("hygiene"))


@pytest.fixture()
def fresh_worker(tmp_path):
    yield from _start_worker(tmp_path)


def _settled_fds(process: psutil.Process, target: int, timeout_s: float = 5.0) -> int:
    """The process's fd count, once it is back within the slack of ``target`` (ZeroMQ's reaper
    closes sockets asynchronously), or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    count = process.num_fds()
    while count > target + SLACK_FDS and time.monotonic() < deadline:
        time.sleep(0.05)
        count = process.num_fds()
    return count


def _failing_deploys(model: bytes, inputs, outputs) -> list[tuple[messages.Deploy, list[bytes]]]:
    """One deploy for each way a deploy fails: checks, ONNX Runtime, links that cannot open."""
    metas = [messages.TensorMeta(s.name, s.dtype, s.shape) for s in inputs]
    outs = [messages.TensorMeta(s.name, s.dtype, s.shape) for s in outputs]
    good = messages.Deploy(deployment_id="x", stage=0, device="w", inputs=metas, outputs=outs,
                           route=messages.Route("tcp://127.0.0.1:9", True), reply_to="tcp://127.0.0.1:9")
    replace = msgspec.structs.replace
    return [
        (replace(good, reply_to="garbage"), [model]),  # the security test's case
        (replace(good, reply_to="tcp://_x:5"), [model]),  # passes the check, ZeroMQ refuses to connect
        (replace(good, route=replace(good.route, address="tcp://_x:5")), [model]),
        (replace(good, slowdown=float("nan")), [model]),
        (good, [b"not a model"]),
        (replace(good, inputs=[messages.TensorMeta("other", "float32", (2, 16))]), [model]),
        (good, []),
    ]


def test_500_failing_deploys_leave_the_workers_fds_and_memory_where_they_were(worker):
    process, address = worker
    _, parts = whole_and_parts(mlp_parts(1, width=16, batch=2))
    cases = _failing_deploys(*parts[0])
    with WorkerClient(address, TOKEN) as client:
        def fail_all(rounds: int) -> None:
            for k in range(rounds):
                header, blobs = cases[k % len(cases)]
                with pytest.raises(SplitinferError) as e:
                    client.request(replace_id(header, k), blobs=blobs)
                assert e.value.fix, e.value  # every failure says what to do

        fail_all(2 * len(cases))  # ONNX Runtime's and ZeroMQ's one-time allocations
        start_fds, start_rss = _settled_fds(process, 0, 0), process.memory_info().rss
        fail_all(500)
        after_fds = _settled_fds(process, start_fds)
        after_rss = process.memory_info().rss
        assert client.health()["num_stages"] == 0
    print(f"worker fds: {start_fds} at start, {after_fds} after 500 failing deploys; "
          f"rss {start_rss >> 20} -> {after_rss >> 20} MiB")
    assert after_fds - start_fds <= SLACK_FDS  # fewer is no leak: a socket of earlier work closed
    assert after_rss - start_rss < 64 << 20


def test_an_undeployed_stage_gives_its_memory_back_to_the_system(fresh_worker):
    # A stage of 33.5 MB of weights: without the trim after an undeploy all of it stayed resident (141 MiB
    # after against 108 before, here), and the next stage's growth showed less than it needs. With it,
    # none in most runs, 16 MB in a few (a fresh worker each time: which is not known).
    process, address = fresh_worker
    _, parts = whole_and_parts(mlp_parts(1, width=2048, batch=2, layers_per_part=2))
    model, inputs, outputs = parts[0]
    deploy = messages.Deploy(
        deployment_id="", stage=0, device="w", inputs=[messages.TensorMeta(s.name, s.dtype, s.shape)
                                                        for s in inputs],
        outputs=[messages.TensorMeta(s.name, s.dtype, s.shape) for s in outputs],
        route=messages.Route("tcp://127.0.0.1:9", True), reply_to="tcp://127.0.0.1:9")
    with WorkerClient(address, TOKEN) as client:
        # ONNX Runtime's one-time allocations first, on the same graph with small weights (the same
        # weights would leave as much freed memory behind for the second deploy to reuse)
        small_model, small_inputs, small_outputs = whole_and_parts(mlp_parts(1, width=64, batch=2))[1][0]
        warm_up = msgspec.structs.replace(
            deploy, inputs=[messages.TensorMeta(s.name, s.dtype, s.shape) for s in small_inputs],
            outputs=[messages.TensorMeta(s.name, s.dtype, s.shape) for s in small_outputs])
        client.request(msgspec.structs.replace(warm_up, deployment_id="memory-warm-up"), blobs=[small_model])
        client.request(messages.Undeploy(deployment_id="memory-warm-up"))
        before = process.memory_info().rss
        client.request(msgspec.structs.replace(deploy, deployment_id="memory"), blobs=[model])
        deployed = process.memory_info().rss
        assert client.request(messages.Undeploy(deployment_id="memory")).header.data == {"num_removed": 1}
        after = process.memory_info().rss
    print(f"worker rss {before >> 20} MiB, {deployed >> 20} deployed, {after >> 20} undeployed")
    assert deployed - before > 24 << 20  # the stage's weights were resident
    assert after - before < 24 << 20


@pytest.mark.parametrize("devices", [["a"], ["a", "b"]], ids=["one stage", "two stages on a shaped link"])
def test_a_stage_holds_the_tensors_of_the_request_it_runs_and_no_earlier_ones(devices):
    # A Relu of 8.4 MB in and out per stage: a deployed stage needs its input and its output
    # (plan/memory.py). The worker kept the last request's frames until the next message arrived, and so
    # did an emulated link's sending thread (wire/link.py): each held 3.1x, not 2x.
    size = 1 << 21
    spec = [TensorSpec(f"x{k}", "float32", (1, size)) for k in range(len(devices) + 1)]
    chain = [Part((helper.make_node("Relu", [f"x{k}"], [f"x{k + 1}"]),), (spec[k],), (spec[k + 1],), ())
             for k in range(len(devices))]
    _, parts = whole_and_parts(chain)
    x = np.random.default_rng(0).standard_normal((1, size)).astype(np.float32)
    with launch_local_workers([Device(n, num_threads=1) for n in devices], TOKEN) as launcher:
        workers = launcher.workers
        cluster = parse_cluster({
            "devices": [{"name": n, "num_threads": 1, "address": workers[n].address} for n in devices],
            "links": [{"from": "a", "to": "b", "bandwidth": "1Gbit/s", "latency": "1ms"}][:len(devices) - 1]})
        before = {n: psutil.Process(pid).memory_info().rss for n, pid in launcher.pids.items()}
        assert all(reset_peak_resident(pid) for pid in launcher.pids.values())
        with deploy_stages(stages_on(parts, devices), cluster, token=TOKEN) as session:
            for _ in range(5):
                np.testing.assert_array_equal(session.run(None, {"x0": x})[0], np.maximum(x, 0))
            grown = {n: (peak_resident_bytes(pid) - before[n]) / x.nbytes for n, pid in launcher.pids.items()}
    print("each stage of", x.nbytes >> 20, "MiB in and out grew its worker by", grown, "x that")
    assert max(grown.values()) < 2.5


def replace_id(header: messages.Deploy, k: int) -> messages.Deploy:
    """The deploy with its own id and, where the case has good ones, addresses no other deploy uses (a
    link shared by every attempt would hide a leak: links are reference-counted by address)."""
    good, own = "tcp://127.0.0.1:9", f"tcp://127.0.0.1:{20_000 + k}"
    route = header.route
    if route.address == good:
        route = msgspec.structs.replace(route, address=own)
    return msgspec.structs.replace(header, deployment_id=f"fail-{k}", route=route,
                                   reply_to=own if header.reply_to == good else header.reply_to)


def test_refused_messages_and_probes_of_bad_addresses_leave_no_fds_behind(worker):
    process, address = worker
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(address)
    refused = [codec.encode(messages.Info(), None), codec.encode(messages.Info(), b"wrong"), [b"garbage"],
               codec.encode(messages.Infer(deployment_id="none", stage=0, deadline_unix_s=time.time() + 9),
                            TOKEN),
               codec.encode(messages.Probe(address="tcp://_x:5", sizes_bytes=[1]), TOKEN),
               codec.encode(messages.Probe(address="tcp://127.0.0.1:9", sizes_bytes=[1], num_repeats=1,
                                           timeout_s=0.01), TOKEN),
               codec.encode(messages.Probe(address="garbage", sizes_bytes=[1]), TOKEN)]
    try:
        def send_all(rounds: int) -> None:
            for k in range(rounds):
                dealer.send_multipart(refused[k % len(refused)])
                assert dealer.poll(10_000), "no reply"
                reply = codec.decode(dealer.recv_multipart(), TOKEN).header
                assert isinstance(reply, messages.ErrorReply) and reply.problem

        send_all(2 * len(refused))
        start = _settled_fds(process, 0, 0)
        send_all(500)
        after = _settled_fds(process, start)
    finally:
        context.destroy(linger=0)
    print(f"worker fds: {start} at start, {after} after 500 refused messages and probes")
    assert after - start <= SLACK_FDS


def _my_fds_after(rounds: int, attempt: Callable[[], None]) -> tuple[int, int]:
    me = psutil.Process()
    attempt()
    start = _settled_fds(me, 0, 0)
    for _ in range(rounds):
        attempt()
    return start, _settled_fds(me, start)


def test_client_timeouts_and_clients_of_bad_addresses_leave_no_fds_behind():
    context = zmq.Context()
    silent = context.socket(zmq.ROUTER)  # takes requests, never answers
    silent.setsockopt(zmq.LINGER, 0)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    client = WorkerClient(f"tcp://127.0.0.1:{port}", TOKEN, context=context, timeout_s=0.005)

    def time_out() -> None:
        with pytest.raises(SplitinferError, match="did not answer"):
            client.info()

    def bad_address() -> None:
        with pytest.raises(TransportError, match="cannot connect") as e:
            WorkerClient("tcp://_x:5", TOKEN, context=context)
        assert e.value.fix

    try:
        for attempt in (time_out, bad_address):
            start, after = _my_fds_after(300, attempt)
            print(f"{attempt.__name__}: this process's fds {start} at start, {after} after 300")
            assert after - start <= SLACK_FDS, attempt.__name__  # fewer: earlier tests closing theirs
    finally:
        client.close()
        context.destroy(linger=0)
