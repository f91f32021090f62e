"""CurveZMQ in one process: key files, cluster.yaml's curve: section, the keyring, and the ZAP gates.

Processes and the wire (a real worker, a man in the middle): test_curve_wire.py.
"""

from __future__ import annotations

import dataclasses
import re
import stat

import pytest
import zmq
from helpers.runtime_models import local_cluster

from splitinfer.cluster import dump_cluster, load_cluster, parse_cluster
from splitinfer.errors import AuthError, ClusterError, SplitinferError
from splitinfer.runtime.coordinator._workers import open_result_socket
from splitinfer.runtime.device._control import DeviceContext
from splitinfer.runtime.device.config import WorkerConfig
from splitinfer.runtime.launch.start import cluster_keyring
from splitinfer.runtime.wire import curve
from splitinfer.runtime.wire.curve import Curve, Gate, KeyPair

NAMES = ("coordinator", "a", "b", "stranger")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """A keys directory as `splitinfer keygen -o DIR --cluster` writes it (plus a stranger's pair)."""
    folder = tmp_path_factory.mktemp("keys")
    for name in NAMES:
        curve.write_key_pair(folder, name)
    return folder


def _pair(keys, name: str) -> KeyPair:
    return curve.read_key_pair(keys / f"{name}.key_secret")


# ---- key files ----------------------------------------------------------------------------------


def test_a_key_pair_round_trips_and_only_its_owner_may_read_the_secret(tmp_path):
    public, secret = curve.write_key_pair(tmp_path / "made" / "here", "w1")
    assert (public.name, secret.name) == ("w1.key", "w1.key_secret")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    pair = curve.read_key_pair(secret)
    assert len(pair.public) == len(pair.secret) == 40 and pair.public != pair.secret
    assert curve.read_public_keys(public) == {pair.public} == curve.read_public_keys(secret)
    assert zmq.curve_public(pair.secret) == pair.public  # the files hold a real Curve25519 pair
    assert pair.secret not in public.read_bytes()  # the shareable half holds no secret
    other = curve.read_key_pair(curve.write_key_pair(tmp_path, "w2")[1])
    assert other.public != pair.public and other.secret != pair.secret


def test_a_key_pair_is_never_overwritten(tmp_path):
    public, secret = curve.write_key_pair(tmp_path, "w")
    before = (public.read_bytes(), secret.read_bytes())
    with pytest.raises(AuthError, match=r"w\.key exists"):
        curve.write_key_pair(tmp_path, "w")
    assert (public.read_bytes(), secret.read_bytes()) == before
    public.unlink()  # half a pair left: still refused, the secret is kept
    with pytest.raises(AuthError, match=r"w\.key_secret exists"):
        curve.write_key_pair(tmp_path, "w")
    assert secret.read_bytes() == before[1] and not public.exists()


def test_bad_or_missing_key_files_are_auth_errors_naming_the_file(tmp_path, keys):
    missing = tmp_path / "nope.key_secret"
    with pytest.raises(AuthError, match=re.escape(f"--curve-secret-key {missing}")) as info:
        curve.read_key_pair(missing, "--curve-secret-key")
    assert info.value.fix
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a certificate at all\n")
    with pytest.raises(AuthError, match=re.escape(f"{garbage} is not a ZeroMQ key file")):
        curve.read_public_keys(garbage)
    short = tmp_path / "short.key"
    short.write_text('metadata\ncurve\n    public-key = "tooshort"\n')
    with pytest.raises(AuthError, match=re.escape(f"{short} is not a ZeroMQ key file")):
        curve.read_public_keys(short)
    with pytest.raises(AuthError, match=re.escape(f"{keys / 'a.key'} holds only a public key")):
        curve.read_key_pair(keys / "a.key")  # a public key where a secret one is needed
    with pytest.raises(AuthError, match=str(garbage)):
        curve.read_public_keys([keys / "a.key", garbage])  # one bad file in a list


def test_public_keys_from_a_directory_or_several_paths(tmp_path, keys):
    every = {_pair(keys, n).public for n in NAMES}
    assert curve.read_public_keys(keys) == every  # *.key only: the secrets' public halves add nothing
    assert curve.read_public_keys([keys / "a.key", str(keys / "b.key")]) == {_pair(keys, "a").public,
                                                                            _pair(keys, "b").public}
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.key_secret").write_text("")  # secrets are not public keys
    with pytest.raises(AuthError, match=re.escape(f"directory {tmp_path / 'empty'} has no *.key files")):
        curve.read_public_keys(tmp_path / "empty", "--curve-peer-keys")


def test_worker_flags_need_secret_and_coordinator_keys_together():
    with pytest.raises(SplitinferError, match="CURVE needs"):
        WorkerConfig("w", curve_secret_key="a.key_secret")
    with pytest.raises(SplitinferError, match="CURVE needs"):
        WorkerConfig("w", curve_coordinator_keys="coordinator.key")
    with pytest.raises(SplitinferError, match="curve_peer_keys"):
        WorkerConfig("w", curve_peer_keys="peers")
    with pytest.raises(SplitinferError, match="mac_tensors needs a token"):
        WorkerConfig("w", mac_tensors=True)
    WorkerConfig("w", curve_secret_key="a", curve_coordinator_keys="c", curve_peer_keys="p",
                 mac_tensors=True, token_file="t")


def test_a_worker_connects_over_curve_only_with_a_key_on_both_sides(keys):
    plain = DeviceContext("w", "tcp://127.0.0.1:1", ("CPUExecutionProvider",), 1, None, None, None)
    assert plain.curve_to("", "tcp://x:1") is None  # plain TCP both ways
    with pytest.raises(AuthError, match="has no key pair"):
        plain.curve_to(_pair(keys, "b").public.decode(), "tcp://x:1")
    device = dataclasses.replace(plain, keys=_pair(keys, "a"))
    with pytest.raises(AuthError, match="was given no public key for tcp://x:1"):
        device.curve_to("", "tcp://x:1")  # never falls back to plain TCP
    assert device.curve_to(_pair(keys, "b").public.decode(), "tcp://x:1") == Curve(_pair(keys, "a"),
                                                                                  _pair(keys, "b").public)


# ---- cluster.yaml -------------------------------------------------------------------------------


def _doc(**extra) -> dict:
    doc = {"devices": [{"name": "a", "num_threads": 1}, {"name": "b", "num_threads": 1}],
           "links": [{"from": "a", "to": "b", "measure": True}]}
    return {**doc, **extra}


def _with_devices(doc: dict, **fields) -> dict:
    return {**doc, "devices": [{**d, **fields} for d in doc["devices"]]}


@pytest.mark.parametrize(("doc", "match"), [
    (_with_devices(_doc(), public_key="a.key"), "has a public_key but the cluster has no curve"),
    (_doc(curve={}), "names no keys directory"),
    (_doc(curve={"coordinator_key": "c.key_secret"}), "names no keys directory"),  # devices' keys unknown
    (_with_devices(_doc(curve={"coordinator_key": "c.key_secret"}), public_key="p.key"),
     "local workers need their secret keys"),
    (_doc(curve={"keys": "k"}, backend="ray", address="auto"), "not available with backend: ray"),
    (_doc(curve={"keys": "k", "bogus": 1}), "invalid cluster"),
])
def test_curve_section_errors_are_cluster_errors(doc, match):
    with pytest.raises(ClusterError, match=match) as info:
        parse_cluster(doc)
    assert info.value.fix


def test_local_devices_without_a_keys_directory_are_refused_with_backend_workers_too():
    doc = _with_devices(_doc(curve={"coordinator_key": "c.key_secret"}, backend="workers"),
                        public_key="p.key")
    with pytest.raises(ClusterError, match="local workers need their secret keys"):
        parse_cluster(doc)


def test_remote_devices_may_name_every_key_file_without_a_directory():
    doc = _doc(backend="workers", curve={"coordinator_key": "c.key_secret"})
    doc = _with_devices(doc, address="tcp://10.0.0.2:5555")
    doc["devices"][1]["public_key"] = "keys/b.key"
    with pytest.raises(ClusterError, match="names no keys directory"):
        parse_cluster(doc)  # a's key is not named
    doc["devices"][0]["public_key"] = "elsewhere/a.pub"
    cluster = parse_cluster(doc)
    assert cluster.curve.coordinator_key == "c.key_secret" and cluster.curve.keys is None
    assert [d.public_key for d in cluster.devices] == ["elsewhere/a.pub", "keys/b.key"]


def test_curve_keys_directory_names_every_key_file_unless_given():
    doc = _doc(curve={"keys": "/k"}, mac_tensors=True)
    doc["devices"][1]["public_key"] = "/other/b-public.key"
    cluster = parse_cluster(doc)
    assert cluster.curve.keys == "/k" and cluster.curve.coordinator_key == "/k/coordinator.key_secret"
    assert [d.public_key for d in cluster.devices] == ["/k/a.key", "/other/b-public.key"]
    assert cluster.mac_tensors
    explicit = parse_cluster(_doc(curve={"keys": "/k", "coordinator_key": "/c/me.key_secret"}))
    assert explicit.curve.coordinator_key == "/c/me.key_secret"
    plain = parse_cluster(_doc())
    assert plain.curve is None and not plain.mac_tensors and plain.devices[0].public_key is None


def test_dump_and_load_keep_curve_and_mac_tensors(tmp_path):
    doc = _doc(curve={"keys": "/k"}, mac_tensors=True, token_file="/t/token")
    doc["devices"][1]["public_key"] = "/other/b.key"
    cluster = parse_cluster(doc)
    path = tmp_path / "cluster.yaml"
    path.write_text(dump_cluster(cluster))
    again = load_cluster(path)
    assert again == cluster
    assert again.curve == cluster.curve and again.mac_tensors
    assert [d.public_key for d in again.devices] == ["/k/a.key", "/other/b.key"]
    plain = parse_cluster(_doc())
    path.write_text(dump_cluster(plain))
    assert "curve" not in path.read_text() and load_cluster(path) == plain


# ---- the keyring --------------------------------------------------------------------------------


def test_the_keyring_holds_the_coordinator_pair_and_each_devices_public_key(keys):
    assert cluster_keyring(local_cluster(["a", "b"])) is None
    ring = cluster_keyring(parse_cluster(_doc(curve={"keys": str(keys)})))
    assert ring.own == _pair(keys, "coordinator")
    assert ring.devices == {"a": _pair(keys, "a").public, "b": _pair(keys, "b").public}
    assert ring.client("b") == Curve(_pair(keys, "coordinator"), _pair(keys, "b").public)
    assert ring.server() == Curve(_pair(keys, "coordinator"))
    assert ring.public("a") == _pair(keys, "a").public.decode()
    flags = ring.worker_flags("a")
    assert flags == ["--curve-secret-key", str(keys / "a.key_secret"),
                     "--curve-coordinator-keys", str(keys / "coordinator.key_secret"),
                     "--curve-peer-keys", str(keys / "b.key")]  # its peers, not itself
    lonely = cluster_keyring(parse_cluster({"devices": [{"name": "a"}], "curve": {"keys": str(keys)}}))
    assert "--curve-peer-keys" not in lonely.worker_flags("a")


def test_a_keyring_with_a_missing_key_names_the_file_and_the_device(tmp_path, keys):
    doc = _doc(curve={"keys": str(keys)})
    doc["devices"][1]["public_key"] = str(tmp_path / "missing.key")
    with pytest.raises(AuthError, match=re.escape(f"device 'b' public_key {tmp_path / 'missing.key'}")):
        cluster_keyring(parse_cluster(doc))
    with pytest.raises(AuthError, match="coordinator's secret key"):
        cluster_keyring(parse_cluster(_doc(curve={"keys": str(tmp_path)})))
    coordinator = str(keys / "coordinator.key_secret")
    remote = _with_devices(_doc(backend="workers", curve={"coordinator_key": coordinator}),
                           address="tcp://10.0.0.2:5555", public_key=str(keys / "a.key"))
    with pytest.raises(AuthError, match="no secret key for local device 'a'"):
        cluster_keyring(parse_cluster(remote)).worker_flags("a")


# ---- gates: who may connect, and as what ---------------------------------------------------------


def _received(sock: zmq.Socket, timeout_ms: int = 400) -> list | None:
    return sock.recv_multipart(copy=False) if sock.poll(timeout_ms) else None


def test_a_gate_admits_control_and_peer_keys_and_tells_them_apart(keys):
    context = zmq.Context()
    coordinator, peer, stranger, worker = (_pair(keys, n) for n in ("coordinator", "a", "stranger", "b"))
    gate = Gate(context, control=[coordinator.public], peer=[peer.public])
    try:
        assert gate.callback("*", coordinator.public) and gate.callback("*", peer.public)
        assert not gate.callback("*", stranger.public)
        server = context.socket(zmq.ROUTER)
        Curve(worker).apply(server)
        server.bind("tcp://127.0.0.1:*")
        address = server.getsockopt(zmq.LAST_ENDPOINT).decode()
        seen = {}
        for name, pair in (("coordinator", coordinator), ("peer", peer), ("stranger", stranger),
                           ("wrong-server", KeyPair(coordinator.public, coordinator.secret))):
            client = context.socket(zmq.DEALER)
            Curve(pair, stranger.public if name == "wrong-server" else worker.public).apply(client)
            client.connect(address)
            client.send(name.encode())
            frames = _received(server)
            seen[name] = None if frames is None else (bytes(frames[1]), curve.user_id(frames[1]))
            client.close(linger=0)
        plain = context.socket(zmq.DEALER)
        plain.connect(address)
        plain.send(b"plain")
        seen["plain"] = _received(server)
        plain.close(linger=0)
        assert seen["coordinator"] == (b"coordinator", coordinator.public.decode())
        assert seen["peer"] == (b"peer", peer.public.decode())
        assert seen["stranger"] is None and seen["wrong-server"] is None and seen["plain"] is None
        assert gate.may_control(coordinator.public.decode()) and not gate.may_control(peer.public.decode())
        assert not gate.may_control(None) and curve.user_id(b"bytes") is None
        server.close(linger=0)
    finally:
        gate.stop()
        gate.stop()  # twice is harmless
        context.destroy(linger=0)


def test_the_result_socket_admits_only_the_clusters_workers(keys):
    ring = cluster_keyring(parse_cluster(_doc(curve={"keys": str(keys)})))
    context = zmq.Context()
    sock, gate = open_result_socket(context, ring)
    try:
        sock.bind("tcp://127.0.0.1:*")
        address = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        got = {}
        for name in ("a", "stranger", "coordinator", "plain"):
            push = context.socket(zmq.PUSH)
            if name != "plain":
                Curve(_pair(keys, name), ring.own.public).apply(push)
            push.connect(address)
            push.send(name.encode())
            frames = _received(sock)
            got[name] = None if frames is None else bytes(frames[0])
            push.close(linger=0)
        # a device's worker gets through; a stranger, plain TCP and even the coordinator's own key do not
        assert got == {"a": b"a", "stranger": None, "coordinator": None, "plain": None}
    finally:
        sock.close(linger=0)
        gate.stop()
        context.destroy(linger=0)
    plain_sock, no_gate = open_result_socket(zmq.Context.instance(), None)
    assert no_gate is None and not plain_sock.curve_server
    plain_sock.close(linger=0)


def test_a_worker_gate_from_its_flags(keys):
    context = zmq.Context()
    pair, gate = curve.open_gate(context, str(keys / "b.key_secret"),
                                 f"{keys / 'coordinator.key'},", f"{keys / 'a.key'},{keys / 'stranger.key'}")
    try:
        assert pair == _pair(keys, "b")
        for name, admitted, control in (("coordinator", True, True), ("a", True, False),
                                        ("stranger", True, False), ("b", False, False)):
            public = _pair(keys, name).public
            assert gate.callback("*", public) is admitted
            assert gate.may_control(public.decode()) is control
    finally:
        gate.stop()
        context.destroy(linger=0)
    with pytest.raises(AuthError, match="--curve-coordinator-keys"):
        curve.open_gate(zmq.Context.instance(), str(keys / "b.key_secret"), str(keys / "none.key"))

