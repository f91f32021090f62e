"""CurveZMQ with real processes: pipelines and probes over CURVE, who a worker answers and obeys,
and what a man in the middle (a TCP proxy between the coordinator and a worker) sees and can change
with a token, with a token and mac_tensors, and with CURVE.

Key files, cluster.yaml and the gates in one process: test_curve.py.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import onnxruntime as ort
import psutil
import pytest
from helpers.runtime_models import make_model, mlp_parts, stages_on, whole_and_parts
from onnx import helper, numpy_helper

from splitinfer.cluster import parse_cluster
from splitinfer.errors import AuthError, ClusterError, DeadlineError, SplitinferError, WorkerError
from splitinfer.runtime import StageSpec, WorkerClient, deploy_stages
from splitinfer.runtime.wire import curve, link, messages
from splitinfer.runtime.wire.curve import Curve
from splitinfer.types import TensorSpec

TOKEN = "curve-wire-token-0123456789"
MARKER = b"SPLITINFERMARKER"  # 16 bytes: 4 finite float32 values
TAPPED = "tapped-q7"  # the device behind the proxy; its name must not leak either
NAMES = ("coordinator", "a", "b", "c", "camera", "edge", "peer", "stranger", TAPPED)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Key pairs for every name (as `splitinfer keygen` writes them) and a token file."""
    folder = tmp_path_factory.mktemp("curve_keys")
    for name in NAMES:
        curve.write_key_pair(folder, name)
    (folder / "token.txt").write_text(TOKEN + "\n")
    return folder


def _pair(keys, name: str) -> curve.KeyPair:
    return curve.read_key_pair(keys / f"{name}.key_secret")


def _start(name: str, *flags: str) -> tuple[subprocess.Popen, str]:
    """A worker started by hand, as on another machine; (process, address)."""
    proc = subprocess.Popen([sys.executable, "-m", "splitinfer.runtime.device", "--name", name, "--listen",
                             "tcp://127.0.0.1:*", "--num-threads", "1", "--parent-pid", str(os.getpid()),
                             *flags], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode().strip()
    assert line.startswith("READY "), line
    return proc, line.split(" ", 1)[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
    proc.wait(5)
    proc.stdout.close()


def _curve_flags(keys, name: str, peers: str = "", token: bool = True) -> list[str]:
    flags = ["--curve-secret-key", str(keys / f"{name}.key_secret"),
             "--curve-coordinator-keys", str(keys / "coordinator.key")]
    flags += ["--curve-peer-keys", peers] if peers else []
    return flags + (["--token-file", str(keys / "token.txt")] if token else [])


@pytest.fixture(scope="module")
def edge(keys):
    """'edge' with CURVE and the token; it trusts the coordinator key, and peer and camera as peers."""
    proc, address = _start("edge", *_curve_flags(keys, "edge", f"{keys / 'peer.key'},{keys / 'camera.key'}"))
    yield proc, address
    _stop(proc)


def _client(keys, address: str, name: str | None, server: str = "edge", **kw) -> WorkerClient:
    """A client with ``name``'s key pair (None: plain TCP), expecting ``server``'s public key."""
    pair = None if name is None else Curve(_pair(keys, name), _pair(keys, server).public)
    return WorkerClient(address, TOKEN.encode(), curve=pair, **kw)


def _refused_quickly(client: WorkerClient, timeout_s: float = 1.0) -> DeadlineError:
    start = time.monotonic()
    with client, pytest.raises(DeadlineError) as info:
        client.health(timeout_s=timeout_s)
    assert time.monotonic() - start < timeout_s + 1.5
    return info.value


# ---- pipelines and probes over CURVE ------------------------------------------------------------


def test_a_curve_cluster_of_three_local_workers_matches_onnx_runtime(keys):
    whole, parts = whole_and_parts(mlp_parts(3, width=16, batch=4))
    cluster = parse_cluster({"curve": {"keys": str(keys)},
                             "devices": [{"name": n, "num_threads": 1} for n in "abc"],
                             "links": [{"from": p, "to": q, "measure": True} for p, q in ("ab", "bc", "ca")]})
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    with deploy_stages(stages_on(parts, ["a", "b", "c"]), cluster) as session:
        (got,) = session.run(None, {"t0": x}, deadline_s=10)
        for name, pid in session.worker_pids.items():  # each local worker was given its own pair
            cmd = psutil.Process(pid).cmdline()
            assert cmd[cmd.index("--curve-secret-key") + 1] == str(keys / f"{name}.key_secret")
        _refused_quickly(WorkerClient(session.addresses["b"]), timeout_s=0.5)  # they are CURVE servers
        with session.worker_client("a") as a:
            b_key = _pair(keys, "b").public.decode()
            rtts = a.probe(session.addresses["b"], [100, 20_000], num_repeats=2, server_key=b_key)
            assert [len(r) for r in rtts] == [2, 2] and all(t > 0 for r in rtts for t in r)
            with pytest.raises(AuthError, match="given no public key"):
                a.probe(session.addresses["b"], [100], num_repeats=1)  # never falls back to plain TCP
            start = time.monotonic()
            with pytest.raises(WorkerError, match="did not answer"):  # b is not the worker with c's key
                a.probe(session.addresses["b"], [100], num_repeats=1, timeout_s=0.5,
                        server_key=_pair(keys, "c").public.decode())
            assert time.monotonic() - start < 3
    np.testing.assert_allclose(got, ort.InferenceSession(whole).run(None, {"t0": x})[0], atol=1e-4)


def test_tensors_larger_than_a_part_cross_curve_links_in_parts_and_arrive_whole(keys):
    # 1 MB cut tensors: the uplink, the hop a -> b and the result each travel in parts
    # (link.CURVE_PART_BYTES), joined by the receiver; the outputs equal ONNX Runtime's whole model.
    whole, parts = whole_and_parts(mlp_parts(2, width=256, batch=1024, layers_per_part=1))
    cluster = parse_cluster({"curve": {"keys": str(keys)},
                             "devices": [{"name": n, "num_threads": 1} for n in "ab"],
                             "links": [{"from": "a", "to": "b", "bandwidth": "10Gbit/s", "latency": "0ms"}]})
    x = np.random.default_rng(2).standard_normal((1024, 256)).astype(np.float32)
    assert x.nbytes > 2 * link.CURVE_PART_BYTES
    with deploy_stages(stages_on(parts, ["a", "b"]), cluster) as session:
        got = [session.run(None, {"t0": x}, deadline_s=20)[0] for _ in range(3)]
        assert [h.num_bytes for h in session.last_timing.hops] == [x.nbytes] * 3
    want = ort.InferenceSession(whole).run(None, {"t0": x})[0]
    for y in got:
        np.testing.assert_allclose(y, want, atol=1e-4)


def _edge_cluster(keys, address: str, *, camera: bool = True, **edge_fields) -> dict:
    """edge at ``address``, with a local camera before it unless ``camera`` is False."""
    doc = {"backend": "workers", "token_file": str(keys / "token.txt"), "curve": {"keys": str(keys)},
           "devices": [{"name": "edge", "address": address, **edge_fields}], "links": []}
    if camera:
        doc.update(source="camera", devices=[{"name": "camera", "num_threads": 1}, *doc["devices"]],
                   links=[{"from": "camera", "to": "edge", "bandwidth": "1Gbit/s", "latency": "1ms"}])
    return doc


def _edge_stage() -> list[StageSpec]:
    """One stage on edge alone (no local worker to start)."""
    _, parts = whole_and_parts(mlp_parts(1, width=16, batch=4))
    return stages_on(parts, ["edge"])


def test_a_hand_started_curve_worker_takes_inputs_from_a_local_peer(keys, edge):
    whole, parts = whole_and_parts(mlp_parts(2, width=16, batch=4))
    x = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    cluster = parse_cluster(_edge_cluster(keys, edge[1]))
    with deploy_stages(stages_on(parts, ["camera", "edge"]), cluster) as s:
        (got,) = s.run(None, {"t0": x}, deadline_s=10)  # camera -> edge as a peer, edge -> result socket
    np.testing.assert_allclose(got, ort.InferenceSession(whole).run(None, {"t0": x})[0], atol=1e-4)


# ---- who a CURVE worker answers, and what it obeys ----------------------------------------------


def test_without_a_trusted_key_a_worker_answers_nothing(keys, edge):
    address = edge[1]
    _refused_quickly(WorkerClient(address, TOKEN.encode()), 0.5)  # plain TCP
    err = _refused_quickly(_client(keys, address, "stranger"), 0.5)  # a key the worker does not trust
    assert "public key" in err.fix
    _refused_quickly(_client(keys, address, "coordinator", server="stranger"), 0.5)  # expects another worker
    with _client(keys, address, "coordinator") as ok:
        assert ok.health()["name"] == "edge"


def test_a_peer_key_may_send_health_echo_and_inputs_but_never_control(keys, edge):
    proc, address = edge
    meta = messages.TensorMeta("t0", "float32", (4, 16))
    control = [messages.Deploy(deployment_id="d", stage=0, device="edge", inputs=[meta], outputs=[meta],
                               route=messages.Route(None), reply_to="tcp://127.0.0.1:9"),
               messages.Undeploy(), messages.Shutdown(), messages.Info(), messages.TimePartition(),
               messages.Probe(address=address, sizes_bytes=[1])]
    with _client(keys, address, "peer") as peer:
        assert peer.health()["name"] == "edge"
        reply = peer.request(messages.Echo(), blobs=[b"peer says hi"])
        assert bytes(reply.blobs[0]) == b"peer says hi"
        for header in control:
            with pytest.raises(AuthError, match="only from the coordinator keys it trusts"):
                peer.request(header, blobs=[b"model"] if isinstance(header, messages.Deploy) else [])
        with pytest.raises(SplitinferError) as info:  # inputs pass the gate: refused for the stage alone
            peer.request(messages.Infer(deployment_id="none", stage=0, deadline_unix_s=time.time() + 5),
                         arrays=[("t0", np.zeros((4, 16), np.float32))])
        assert "coordinator keys" not in str(info.value) and "no stage" in str(info.value).lower()
    assert proc.poll() is None
    with _client(keys, address, "coordinator") as coordinator:
        assert coordinator.health()["name"] == "edge"


def test_the_coordinator_key_may_do_everything_and_stop_the_worker(keys):
    proc, address = _start("edge", *_curve_flags(keys, "edge", str(keys / "peer.key")))
    try:
        with _client(keys, address, "peer") as peer, pytest.raises(AuthError):
            peer.shutdown()
        with _client(keys, address, "coordinator") as coordinator:
            assert coordinator.info()["name"] == "edge"
            assert coordinator.echo(1000) > 0 and coordinator.undeploy() == 0
            assert proc.poll() is None
            coordinator.shutdown()
        assert proc.wait(5) == 0
    finally:
        _stop(proc)


def test_a_worker_with_a_bad_key_file_stops_at_start_with_one_line(keys):
    coordinator = str(keys / "coordinator.key")
    for flags, said in (  # (the flag combinations: WorkerConfig in test_curve.py)
            (["--curve-secret-key", str(keys / "edge.key"), "--curve-coordinator-keys", coordinator],
             f"--curve-secret-key {keys / 'edge.key'} holds only a public key"),
            (["--curve-secret-key", str(keys / "edge.key_secret"), "--curve-coordinator-keys",
              f"{coordinator},{keys / 'missing.key'}"], f"--curve-coordinator-keys {keys / 'missing.key'}")):
        done = subprocess.run([sys.executable, "-m", "splitinfer.runtime.device", "--name", "w", "--listen",
                               "tcp://127.0.0.1:*", *flags], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and not done.stdout, done.stdout
        lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1 and said in lines[0], done.stderr


def test_a_cluster_naming_another_key_for_a_worker_fails_in_bounded_time(keys, edge):
    stranger = {"keys": str(keys), "coordinator_key": str(keys / "stranger.key_secret")}
    for cluster in (_edge_cluster(keys, edge[1], camera=False, public_key=str(keys / "stranger.key")),
                    {**_edge_cluster(keys, edge[1], camera=False), "curve": stranger}):  # not trusted by edge
        start = time.monotonic()
        with pytest.raises(ClusterError, match="no worker answers for device 'edge'"):
            deploy_stages(_edge_stage(), parse_cluster(cluster), connect_timeout_s=1)
        assert time.monotonic() - start < 5  # the 1 s wait for an answer: never a hang


def test_a_worker_behind_another_key_is_named_as_a_key_problem(keys, edge):
    doc = _edge_cluster(keys, edge[1], camera=False, public_key=str(keys / "stranger.key"))
    with pytest.raises(ClusterError, match="public key"):
        deploy_stages(_edge_stage(), parse_cluster(doc), connect_timeout_s=1)


def test_a_token_is_optional_with_curve(keys):
    proc, address = _start("edge", *_curve_flags(keys, "edge", token=False))
    try:
        doc = _edge_cluster(keys, address, camera=False)
        del doc["token_file"]
        with deploy_stages(_edge_stage(), parse_cluster(doc)) as session:
            session.run(None, {"t0": np.ones((4, 16), np.float32)}, deadline_s=5)
    finally:
        _stop(proc)


# ---- a man in the middle ------------------------------------------------------------------------


class Tap:
    """A TCP proxy in front of a worker that records both directions and, once armed, flips one bit of
    the next large coordinator-to-worker chunk: in the marker if it shows, else in the middle."""

    def __init__(self, target: str) -> None:
        self._port = int(target.rsplit(":", 1)[1])
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self._listener.getsockname()[1]}"
        self.up, self.down = bytearray(), bytearray()
        self.armed, self.tampered = threading.Event(), threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def captured(self) -> tuple[bytes, bytes]:
        with self._lock:
            return bytes(self.up), bytes(self.down)

    def arm(self) -> None:
        self.tampered.clear()
        self.armed.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(("127.0.0.1", self._port))
            except OSError:
                return
            with self._lock:
                self._sockets += [client, server]
            for args in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        while True:
            with contextlib.suppress(OSError):
                data = src.recv(1 << 16)
                if data and up and self.armed.is_set() and len(data) >= 4096:
                    self.armed.clear()
                    data = bytearray(data)
                    at = data.find(MARKER)
                    data[at + 1 if at >= 0 else len(data) // 2] ^= 0x01
                    self.tampered.set()
                if data:
                    with self._lock:
                        (self.up if up else self.down).extend(data)
                    dst.sendall(data)
                    continue
            for sock in (src, dst):  # one side closed (libzmq drops a connection it cannot decrypt)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            return

    def close(self) -> None:
        with self._lock:
            for sock in self._sockets:
                sock.close()


def _marker_model() -> tuple[bytes, TensorSpec, TensorSpec]:
    """y = x + zeros, with names that must not show on an encrypted wire."""
    x, y = TensorSpec("x", "float32", (128, 128)), TensorSpec("y", "float32", (128, 128))
    zeros = numpy_helper.from_array(np.zeros((1, 128), np.float32), "confidential_weight_q7")
    node = helper.make_node("Add", ["x", "confidential_weight_q7"], ["y"], name="confidential_node_q7")
    return make_model([node], [x], [y], [zeros], name="confidential_graph_q7"), x, y


@pytest.mark.parametrize("mode", ["token", "mac_tensors", "curve"])
def test_what_a_man_in_the_middle_sees_and_can_change(keys, mode, tmp_path):
    flags = {"token": ["--token-file", str(keys / "token.txt")],
             "mac_tensors": ["--token-file", str(keys / "token.txt"), "--mac-tensors"],
             "curve": _curve_flags(keys, TAPPED)}[mode]
    # A cache of its own: a partition another mode's worker cached would not cross the wire at all.
    proc, address = _start(TAPPED, *flags, "--cache-dir", str(tmp_path / "cache"))
    tap = Tap(address)
    doc = {"backend": "workers", "token_file": str(keys / "token.txt"), "links": [],
           "devices": [{"name": TAPPED, "address": tap.address}]}
    doc.update({"mac_tensors": {"mac_tensors": True}, "curve": {"curve": {"keys": str(keys)}}}.get(mode, {}))
    model, x_spec, y_spec = _marker_model()
    x = np.frombuffer(MARKER * (128 * 128 * 4 // len(MARKER)), np.float32).reshape(128, 128)
    assert np.isfinite(x).all() and x.nbytes >= 64 * 1024  # a framed tensor, not one in the head
    try:
        stages = [StageSpec(0, TAPPED, model, (x_spec,), (y_spec,))]
        with deploy_stages(stages, parse_cluster(doc)) as session:
            np.testing.assert_array_equal(session.run(None, {"x": x}, deadline_s=10)[0], x)
            up, down = tap.captured()
            leaks = [MARKER in up, b"confidential_graph_q7" in up, b"confidential_weight_q7" in up,
                     b"confidential_node_q7" in up, TAPPED.encode() in down, TOKEN.encode() in up + down]
            # Confidentiality: the tensor, the model and the worker's name are readable without CURVE
            # (the token never travels), and nothing is with it.
            assert leaks == ([False] * 6 if mode == "curve" else [True] * 5 + [False])

            tap.arm()  # integrity: one bit of the next request's tensor flipped on the way
            start = time.monotonic()
            if mode == "token":
                (y,) = session.run(None, {"x": x}, deadline_s=5)
                assert np.count_nonzero(y != x) == 1  # a wrong answer, and nothing noticed it
            else:
                with pytest.raises((DeadlineError, AuthError)):  # refused or dropped: never a wrong answer
                    session.run(None, {"x": x}, deadline_s=1.5)
                assert time.monotonic() - start < 5
            assert tap.tampered.is_set()
            np.testing.assert_array_equal(session.run(None, {"x": x}, deadline_s=10)[0], x)  # still serves

            with session.worker_client(TAPPED, timeout_s=1.0) as client:  # the same with a blob, one hop
                tap.arm()
                blob = MARKER * 4096
                if mode == "token":
                    echoed = bytes(client.request(messages.Echo(), blobs=[blob]).blobs[0])
                    assert echoed != blob and len(echoed) == len(blob)
                elif mode == "mac_tensors":
                    with pytest.raises(AuthError, match="without a valid token MAC"):  # the worker says why
                        client.request(messages.Echo(), blobs=[blob])
                    with WorkerClient(tap.address, TOKEN.encode()) as head_only, \
                            pytest.raises(AuthError, match="requires MACs over tensor bytes"):
                        head_only.request(messages.Echo(), blobs=[b"unsigned"])  # MAC on the head only
                else:
                    with pytest.raises(DeadlineError):  # libzmq drops what does not decrypt
                        client.request(messages.Echo(), blobs=[blob])
                assert tap.tampered.is_set()
    finally:
        tap.close()
        _stop(proc)
