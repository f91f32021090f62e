"""A real worker process (started with the CLI) against a raw ZeroMQ socket: bad messages, auth, control."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import msgspec
import numpy as np
import onnxruntime as ort
import pytest
import zmq
from helpers.runtime_models import make_model, mlp_parts, whole_and_parts
from onnx import helper

from splitinfer.errors import AuthError, ErrorCode, ModelError, SplitinferError, TransportError, WorkerError
from splitinfer.profile.partition_timing import PartitionFailure
from splitinfer.runtime import PartitionTiming, WorkerClient
from splitinfer.runtime.wire import codec, messages
from splitinfer.types import TensorSpec

TOKEN = b"test-token-0123456789"
MAX_FRAME = 1 << 20


def _start_worker(tmp: Path, name: str, *extra: str) -> tuple[subprocess.Popen, str]:
    token_file = tmp / f"{name}.token"
    token_file.write_bytes(TOKEN + b"\n")
    exe = Path(sys.executable).parent / "splitinfer"
    proc = subprocess.Popen([str(exe), "worker", "--name", name, "--listen", "tcp://127.0.0.1:*",
                             "--num-threads", "1", "--token-file", str(token_file), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode().strip()
    assert line.startswith("READY "), line
    return proc, line.split(" ", 1)[1]


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    procs = [_start_worker(tmp, "w", "--max-frame-bytes", "1MiB"), _start_worker(tmp, "peer")]
    yield [address for _, address in procs]
    for proc, _ in procs:
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()


class Peer:
    """A raw DEALER to the worker plus a PULL socket standing in for the coordinator."""

    def __init__(self, address: str) -> None:
        self.context = zmq.Context()
        self.dealer = self.context.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(address)
        self.coordinator = self.context.socket(zmq.PULL)
        self.coordinator.setsockopt(zmq.LINGER, 0)
        port = self.coordinator.bind_to_random_port("tcp://127.0.0.1")
        self.coordinator_address = f"tcp://127.0.0.1:{port}"

    def reply(self, timeout_s: float = 10.0) -> messages.Message:
        assert self.dealer.poll(int(timeout_s * 1000)), "no reply from the worker"
        return codec.decode(self.dealer.recv_multipart(), TOKEN)

    def at_coordinator(self, timeout_s: float = 10.0) -> messages.Message:
        assert self.coordinator.poll(int(timeout_s * 1000)), "nothing reached the coordinator"
        return codec.decode(self.coordinator.recv_multipart(), TOKEN)

    def drain_coordinator(self) -> None:
        while self.coordinator.poll(50):
            self.coordinator.recv_multipart()

    def close(self) -> None:
        self.context.destroy(linger=0)


@pytest.fixture(scope="module")
def deployed(workers):
    """One stage deployed on worker 'w'; its results go to the Peer's coordinator socket."""
    whole, parts = whole_and_parts(mlp_parts(1, width=16, batch=2))
    model, inputs, outputs = parts[0]
    peer = Peer(workers[0])
    with WorkerClient(workers[0], TOKEN) as client:
        client.request(messages.Deploy(
            deployment_id="dep", stage=0, device="w", inputs=[messages.TensorMeta(s.name, s.dtype, s.shape)
                                                              for s in inputs],
            outputs=[messages.TensorMeta(s.name, s.dtype, s.shape) for s in outputs],
            route=messages.Route(peer.coordinator_address, True), reply_to=peer.coordinator_address),
            blobs=[model])
    yield peer, whole, model
    peer.close()


def _infer(**kw) -> messages.Infer:
    return messages.Infer(**{"request_id": 1, "deployment_id": "dep", "stage": 0,
                          "deadline_unix_s": time.time() + 30, **kw})


def _x(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 16)).astype(np.float32)


def _assert_serves(peer: Peer, whole: bytes, seed: int) -> None:
    x = _x(seed)
    peer.dealer.send_multipart(codec.encode(_infer(request_id=1000 + seed), TOKEN, arrays=[("t0", x)]),
                               copy=False)
    msg = peer.at_coordinator()
    assert isinstance(msg.header, messages.Outputs) and msg.header.request_id == 1000 + seed
    assert msg.authenticated
    (expected,) = ort.InferenceSession(whole).run(None, {"t0": x})
    np.testing.assert_allclose(msg.arrays["t1"], expected, atol=1e-5)


def _raw_header(obj) -> bytes:
    return msgspec.msgpack.encode(obj)


def _signed(header_bytes: bytes, *frames) -> list:
    return [codec.pack_head(TOKEN, header_bytes), *frames]


def _with_tensor(meta: list, *frames: bytes) -> list:
    """A signed infer whose header declares ``meta`` for one tensor, followed by ``frames``."""
    return _signed(_raw_header({**msgspec.to_builtins(_infer()), "tensors": [meta]}), *frames)


def _bad_messages(model: bytes) -> list[tuple[str, list, str]]:
    """(what, frames, expected error code) for every kind of malformed input."""
    x = _x()
    good = codec.encode(_infer(), TOKEN, arrays=[("t0", x)])
    meta = messages.TensorMeta("t0", "float32", (2, 16))
    deploy = messages.Deploy(deployment_id="dep2", stage=0, device="w", inputs=[meta], outputs=[meta],
                          route=messages.Route("tcp://127.0.0.1:9", True), reply_to="tcp://127.0.0.1:9")
    chunk = messages.PartitionChunk(sha256="a" * 64, size_bytes=3, offset=0, chunk_sha256="b" * 64)
    return [
        ("one empty frame", [b""], "malformed"),
        ("one garbage frame", [b"\x00garbage"], "malformed"),
        ("garbage header", _signed(b"\xc1\xc1\xc1"), "malformed"),
        ("header length past the frame", [codec.pack_head(TOKEN, b"\x80")[:-1]], "malformed"),
        ("header is a number", _signed(_raw_header(42)), "malformed"),
        ("header without kind", _signed(_raw_header({"request_id": 1})), "malformed"),
        ("unknown kind", _signed(_raw_header({"kind": "explode", "request_id": 1})), "malformed"),
        ("wrong field type", _signed(_raw_header({"kind": "infer", "deployment_id": 5, "stage": "0",
                                                  "deadline_unix_s": 1.0})), "malformed"),
        ("missing required fields", _signed(_raw_header({"kind": "infer"})), "malformed"),
        ("tensor frame missing", _with_tensor(["t0", "float32", [2, 16]]), "malformed"),
        ("extra frame", [*good, b"extra"], "malformed"),
        ("frame shorter than shape", _with_tensor(["t0", "float32", [2, 16]], b"\x00" * 12), "shape"),
        ("inline tensor past the first frame", _with_tensor(["t0", "float32", [2, 16], True]), "shape"),
        ("bytes after the inline tensors", [good[0] + b"tail"], "malformed"),
        ("dtype not allowed", _with_tensor(["t0", "object", [1]], b"12345678"), "dtype"),
        ("negative dimension", _with_tensor(["t0", "float32", [-2, 16]], b""), "shape"),
        ("too many dimensions", _with_tensor(["t0", "uint8", [1] * 40], b"\x00"), "shape"),
        ("duplicate tensor names", codec.encode(_infer(), TOKEN, arrays=[("t0", x), ("t0", x)]), "malformed"),
        ("blob length lies", _signed(_raw_header({"kind": "echo", "request_id": 1, "blobs": [10]}), b"abc"),
         "malformed"),
        ("oversized frame", codec.encode(messages.Echo(), TOKEN, blobs=[bytes(MAX_FRAME + 1)]), "oversized"),
        ("oversized header", [bytes(codec.HEAD_PREFIX_BYTES - 4)
                              + (codec.MAX_HEADER_BYTES + 1).to_bytes(4, "little")], "oversized"),
        ("deploy without token", codec.encode(deploy, None, blobs=[model]), "auth"),
        ("deploy with a wrong token", codec.encode(deploy, b"wrong", blobs=[model]), "auth"),
        ("infer without token", codec.encode(_infer(), None, arrays=[("t0", x)]), "auth"),
        ("infer with a wrong token", codec.encode(_infer(), b"wrong", arrays=[("t0", x)]), "auth"),
        ("info without token", codec.encode(messages.Info(), None), "auth"),
        ("signed an hour ago (a replay)", [codec.pack_head(TOKEN, _raw_header(msgspec.to_builtins(
            messages.Info())), sent_unix_s=time.time() - 3600)], "replay"),
        ("unknown stage", codec.encode(_infer(stage=5), TOKEN, arrays=[("t0", x)]), "unknown_stage"),
        ("unknown deployment", codec.encode(_infer(deployment_id="nope"), TOKEN, arrays=[("t0", x)]),
         "unknown_stage"),
        ("wrong dtype for the stage", codec.encode(_infer(), TOKEN, arrays=[("t0", x.astype(np.float64))]),
         "input"),
        ("wrong shape for the stage", codec.encode(_infer(), TOKEN, arrays=[("t0", x[:1])]), "input"),
        ("wrong tensor name", codec.encode(_infer(), TOKEN, arrays=[("zz", x)]), "input"),
        ("extra tensor", codec.encode(_infer(), TOKEN, arrays=[("t0", x), ("t9", x)]), "input"),
        ("past its deadline", codec.encode(_infer(deadline_unix_s=1.0), TOKEN, arrays=[("t0", x)]),
         "deadline"),
        ("deploy of garbage bytes", codec.encode(deploy, TOKEN, blobs=[b"not an onnx model"]), "model"),
        ("deploy without model", codec.encode(deploy, TOKEN), "malformed"),
        ("deploy with mismatched specs", codec.encode(
            msgspec.structs.replace(deploy, inputs=[messages.TensorMeta("other", "float32", (2, 16))]), TOKEN,
            blobs=[model]), "model"),
        ("deploy with slowdown < 1", codec.encode(msgspec.structs.replace(deploy, slowdown=0.5), TOKEN,
                                                  blobs=[model]), "malformed"),
        ("outputs sent to a worker", codec.encode(messages.Outputs(deployment_id="d"), TOKEN), "unexpected"),
        ("profile of garbage bytes", codec.encode(messages.TimePartition(), TOKEN, blobs=[b"junk"]), "model"),
        ("profile with wrong feeds", codec.encode(messages.TimePartition(), TOKEN, blobs=[model],
                                                  arrays=[("nope", x)]), "input"),
        ("probe of a bad address", codec.encode(messages.Probe(address="http://x", sizes_bytes=[1]), TOKEN),
         "malformed"),
        ("partition chunk unlike its hash", codec.encode(chunk, TOKEN, blobs=[b"abc"]), "integrity"),
    ]


def test_every_malformed_message_gets_an_error_reply_and_the_worker_keeps_serving(deployed):
    peer, whole, model = deployed
    cases = _bad_messages(model)
    # the cases earn every code a bad message can but "failed" (the worker's own failure), "unknown_kind" (the
    # decoder rejects a kind it does not know as malformed), "missing_partition" (test_partition_deploy.py)
    # and "state_lost" (test_state_e2e.py, test_state_runner.py)
    assert {code for *_, code in cases} == {c.value for c in ErrorCode} - {"failed", "unknown_kind",
                                                                           "missing_partition", "state_lost"}
    _assert_serves(peer, whole, 0)
    for k, (what, frames, code) in enumerate(cases, start=1):
        peer.dealer.send_multipart(frames)
        reply = peer.reply()
        assert isinstance(reply.header, messages.ErrorReply), what
        assert reply.header.code == code, (what, reply.header)
        assert reply.header.problem, what
        peer.drain_coordinator()  # stage errors are copied to the coordinator too
        _assert_serves(peer, whole, k)


def test_stage_errors_also_reach_the_coordinator(deployed):
    peer, _, _ = deployed
    peer.drain_coordinator()
    peer.dealer.send_multipart(codec.encode(_infer(request_id=77), TOKEN, arrays=[("t0", _x()[:1])]))
    assert peer.reply().header.code == "input"
    copy = peer.at_coordinator().header
    assert isinstance(copy, messages.ErrorReply) and copy.request_id == 77 and copy.stage == 0


def test_health_needs_no_token_but_everything_else_does(workers):
    with WorkerClient(workers[0], None) as anonymous:
        assert anonymous.health()["name"] == "w"
        with pytest.raises(AuthError, match="token"):
            anonymous.info()
    with WorkerClient(workers[0], b"wrong") as wrong, pytest.raises(AuthError):
        wrong.undeploy("dep")


def test_info_echo_profile_and_probe(workers):
    whole, parts = whole_and_parts(mlp_parts(1, width=16, batch=2))
    with WorkerClient(workers[0], TOKEN) as client:
        info = client.info()
        assert info["name"] == "w" and info["num_cpus"] >= 1 and info["memory_total_bytes"] > 0
        assert info["num_threads"] == 1 and info["num_physical_cpus"] >= 1 and "hostname" in info
        assert "CPUExecutionProvider" in info["available_providers"]
        assert info["versions"]["onnxruntime"] == ort.__version__
        assert 0 < client.echo(100_000) < 5
        x = _x()
        result = client.time_partition(parts[0][0], {"t0": x}, min_runs=7, max_runs=7, slowdown=2.0,
                                return_outputs=True)
        assert isinstance(result, PartitionTiming)  # the same record as timing in process gives
        assert len(result.compute_times_s) == 7 and all(t > 0 for t in result.compute_times_s)
        assert result.times_s == pytest.approx([2 * t for t in result.compute_times_s])
        (expected,) = ort.InferenceSession(whole).run(None, {"t0": x})
        np.testing.assert_allclose(result.outputs["t1"], expected, atol=1e-5)
        rtts = client.probe(workers[1], [1_000, 200_000], num_repeats=3)
        assert [len(r) for r in rtts] == [3, 3] and all(0 < t < 5 for r in rtts for t in r)
        with pytest.raises(WorkerError, match="did not answer"):
            client.probe("tcp://127.0.0.1:9", [10], num_repeats=1, timeout_s=0.3)
        with pytest.raises(ModelError):
            client.time_partition(b"junk", {"t0": x})
        assert client.health()["name"] == "w"


def test_partitions_timed_together_each_with_its_result_or_failure_and_memory(workers):
    """One request times a model's partitions in rounds: one that cannot run fails alone; each session
    reports the memory it added (weights of 256 x 256 floats: about 0.5 MB per partition)."""
    _, parts = whole_and_parts(mlp_parts(2, width=256, batch=2))
    rng = np.random.default_rng(0)
    feeds = {f"t{k}": rng.standard_normal((2, 256)).astype(np.float32) for k in range(2)}
    with WorkerClient(workers[1], TOKEN) as client:
        first, junk, second = client.time_partitions([parts[0][0], b"junk", parts[1][0]], feeds,
                                                     min_runs=5, max_runs=5, slowdown=3.0)
        assert isinstance(junk, PartitionFailure) and isinstance(junk.error, ModelError)
        for timing in (first, second):
            assert isinstance(timing, PartitionTiming) and len(timing.compute_times_s) >= 5
            assert timing.times_s == pytest.approx([3 * t for t in timing.compute_times_s])
            assert timing.weight_bytes is not None and timing.weight_bytes >= 256 * 256 * 4
            assert timing.activation_bytes is not None and timing.activation_bytes >= 0
        with pytest.raises(TransportError, match=r"at most 60000 runs in all"):  # malformed
            client.time_partitions([parts[0][0]] * 2, feeds, max_runs=40_000)
        with pytest.raises(TransportError, match="outputs with one partition only"):
            client.time_partitions([parts[0][0]] * 2, feeds, return_outputs=True)
        assert client.health()["name"] == "peer"


def test_a_stage_with_several_dtypes_deploys_and_checks_its_signature(workers):
    meta = [messages.TensorMeta("ids", "int64", (3,)), messages.TensorMeta("mask", "bool", (3,))]
    model = make_model([helper.make_node("Identity", ["ids"], ["ids_o"]),
                        helper.make_node("Not", ["mask"], ["mask_o"])],
                       [TensorSpec("ids", "int64", (3,)), TensorSpec("mask", "bool", (3,))],
                       [TensorSpec("ids_o", "int64", (3,)), TensorSpec("mask_o", "bool", (3,))])
    with WorkerClient(workers[1], TOKEN) as client:
        outs = [messages.TensorMeta("ids_o", "int64", (3,)), messages.TensorMeta("mask_o", "bool", (3,))]
        deploy = messages.Deploy(deployment_id="mixed", stage=0, device="peer", inputs=meta, outputs=outs,
                              route=messages.Route("tcp://127.0.0.1:9", True), reply_to="tcp://127.0.0.1:9")
        assert client.request(deploy, blobs=[model]).header.data["create_s"] > 0
        mask = messages.TensorMeta("mask_o", "int64", (3,))
        wrong = msgspec.structs.replace(deploy, outputs=[outs[0], mask])
        with pytest.raises(ModelError, match="outputs"):
            client.request(wrong, blobs=[model])
        assert client.undeploy("mixed") == 1


NAN, INF = float("nan"), float("inf")


def _out_of_range() -> list[tuple[str, object, str]]:
    """(what, header, field the reply must name): every number or address a control request carries."""
    meta = messages.TensorMeta("t0", "float32", (2, 16))
    deploy = messages.Deploy(deployment_id="bad", stage=0, device="w", inputs=[meta], outputs=[meta],
                             route=messages.Route("tcp://127.0.0.1:9", True), reply_to="tcp://127.0.0.1:9")
    route = deploy.route
    d, tp, probe = msgspec.structs.replace, messages.TimePartition(), messages.Probe(
        address="tcp://127.0.0.1:9", sizes_bytes=[10])
    return [
        ("deploy slowdown nan", d(deploy, slowdown=NAN), "slowdown"),
        ("deploy slowdown inf", d(deploy, slowdown=INF), "slowdown"),
        ("deploy slowdown absurd", d(deploy, slowdown=1e12), "slowdown"),
        ("deploy stage negative", d(deploy, stage=-1), "stage"),
        ("deploy num_warmup absurd", d(deploy, num_warmup=10**9), "num_warmup"),
        ("deploy num_warmup negative", d(deploy, num_warmup=-1), "num_warmup"),
        ("deploy reply_to garbage", d(deploy, reply_to="garbage"), "reply_to"),
        ("deploy reply_to port 0", d(deploy, reply_to="tcp://127.0.0.1:0"), "reply_to"),
        ("deploy reply_to in-process", d(deploy, reply_to="inproc://wake"), "reply_to"),
        ("deploy route garbage", d(deploy, route=d(route, address="garbage")), "route.address"),
        ("deploy last stage without address", d(deploy, route=d(route, address=None)), "route address"),
        ("deploy bandwidth nan", d(deploy, route=d(route, bandwidth_bps=NAN)), "bandwidth_bps"),
        ("deploy bandwidth zero", d(deploy, route=d(route, bandwidth_bps=0.0)), "bandwidth_bps"),
        ("deploy latency inf", d(deploy, route=d(route, latency_s=INF)), "latency_s"),
        ("deploy latency negative", d(deploy, route=d(route, latency_s=-1.0)), "latency_s"),
        ("deploy unknown compression", d(deploy, route=d(route, compression="gzip")), "route.compression"),
        ("deploy compression bad setting", d(deploy, route=d(route, compression="zstd:level=99")),
         "route.compression"),
        ("deploy server key too short", d(deploy, route=d(route, server_key="abc")), "route.server_key"),
        ("deploy reply key too long", d(deploy, reply_key="x" * 41), "reply_key"),
        ("time_partition slowdown nan", d(tp, slowdown=NAN), "slowdown"),
        ("time_partition budget nan", d(tp, budget_s=NAN), "budget_s"),
        ("time_partition budget inf", d(tp, budget_s=INF), "budget_s"),
        ("time_partition budget negative", d(tp, budget_s=-1.0), "budget_s"),
        ("time_partition min_runs zero", d(tp, min_runs=0), "min_runs"),
        ("time_partition max_runs absurd", d(tp, max_runs=10**9), "max_runs"),
        ("time_partition num_warmup absurd", d(tp, num_warmup=10**9), "num_warmup"),
        ("time_partition rel_precision nan", d(tp, rel_precision=NAN), "rel_precision"),
        ("probe address garbage", d(probe, address="garbage"), "address"),
        ("probe address in-process", d(probe, address="inproc://wake"), "address"),
        ("probe address port too big", d(probe, address="tcp://127.0.0.1:70000"), "address"),
        ("probe size negative", d(probe, sizes_bytes=[-1]), "size"),
        ("probe size over the frame limit", d(probe, sizes_bytes=[MAX_FRAME + 1]), "size"),
        ("probe without sizes", d(probe, sizes_bytes=[]), "sizes"),
        ("probe with too many sizes", d(probe, sizes_bytes=[1] * 1000), "sizes"),
        ("probe num_repeats zero", d(probe, num_repeats=0), "num_repeats"),
        ("probe num_repeats absurd", d(probe, num_repeats=10**7), "num_repeats"),
        ("probe timeout nan", d(probe, timeout_s=NAN), "timeout_s"),
        ("probe timeout inf", d(probe, timeout_s=INF), "timeout_s"),
        ("probe timeout zero", d(probe, timeout_s=0.0), "timeout_s"),
        ("probe server key too short", d(probe, server_key="abc"), "server_key"),
    ]


@pytest.mark.parametrize(("what", "header", "field"), _out_of_range(), ids=[c[0] for c in _out_of_range()])
def test_control_numbers_out_of_range_get_a_malformed_reply_naming_the_field_and_the_fix(
        deployed, what, header, field):
    peer, whole, model = deployed
    blobs = [] if isinstance(header, messages.Probe) else [model]
    arrays = [("t0", _x())] if isinstance(header, messages.TimePartition) else []
    peer.dealer.send_multipart(codec.encode(header, TOKEN, blobs=blobs, arrays=arrays))
    reply = peer.reply().header
    assert isinstance(reply, messages.ErrorReply), what
    assert reply.code == ErrorCode.MALFORMED, (what, reply)
    assert field in reply.problem and reply.fix.startswith(("use ", "give ")), (what, reply)
    assert "\n" not in reply.problem + reply.fix
    _assert_serves(peer, whole, 500)


def test_a_request_with_a_nan_deadline_has_expired(deployed):
    peer, _, _ = deployed
    peer.drain_coordinator()
    peer.dealer.send_multipart(codec.encode(_infer(request_id=88, deadline_unix_s=NAN), TOKEN,
                                            arrays=[("t0", _x())]))
    assert peer.reply().header.code == "deadline"
    assert peer.at_coordinator().header.code == "deadline"  # never an Outputs


def test_worker_config_and_client_refuse_numbers_out_of_range_naming_the_argument():
    from splitinfer.runtime.device.config import WorkerConfig

    for fields, name in (({"num_threads": 10**6}, "num_threads is 1000000"),
                         ({"num_threads": -1}, "num_threads"),
                         ({"max_frame_bytes": 0}, "max_frame_bytes is 0"),
                         ({"max_frame_bytes": 1 << 60}, "max_frame_bytes is")):
        with pytest.raises(SplitinferError) as e:
            WorkerConfig(name="w", **fields)
        assert e.value.problem.startswith(name) and "--" not in str(e.value)
    for timeout_s in (NAN, INF, 0.0, -1.0):
        with pytest.raises(SplitinferError, match="timeout_s is"):
            WorkerClient("tcp://127.0.0.1:9", TOKEN, timeout_s=timeout_s)
    with WorkerClient("tcp://127.0.0.1:9", TOKEN) as client:
        with pytest.raises(SplitinferError, match="timeout_s is nan"):
            client.health(timeout_s=NAN)
        with pytest.raises(SplitinferError, match="timeout_s is nan"):
            client.probe("tcp://127.0.0.1:9", [1], timeout_s=NAN)
    with pytest.raises(TransportError, match="cannot connect to 'garbage'") as e:
        WorkerClient("garbage", TOKEN)
    assert "tcp://HOST:PORT" in e.value.fix
