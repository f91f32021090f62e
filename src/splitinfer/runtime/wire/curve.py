"""CurveZMQ: encrypted, mutually authenticated connections between the coordinator and workers.

With CURVE on (``curve:`` in cluster.yaml, ``--curve-secret-key`` on a worker),
every ZeroMQ connection that crosses a network is a CurveZMQ session (libzmq's
CURVE mechanism: Curve25519 key exchange, then XSalsa20-Poly1305 on every
frame), so tensors, models and headers are confidential and a changed or
injected byte is dropped by libzmq before splitinfer sees it. Who may connect
is decided by ZeroMQ's authentication protocol (ZAP), answered in each process
by :class:`Gate` (pyzmq's ``ThreadAuthenticator`` with our key lists):

- a worker accepts connections from the coordinator keys it trusts
  (``--curve-coordinator-keys``), which may send anything, and from its peers'
  keys (``--curve-peer-keys``), which may send only stage inputs (``infer``),
  ``echo`` and ``health``: a peer cannot deploy, undeploy or stop it;
- the coordinator's result socket accepts only the workers of its cluster.

A connecting socket names the public key of the server it expects
(``Curve.server_key``), so a worker that is not the one in cluster.yaml fails
the handshake: nothing is sent to it.

Keys are ZeroMQ certificate files, written by ``splitinfer keygen``:
``NAME.key`` (the public key, shared freely) and ``NAME.key_secret`` (the
pair, kept on its machine, mode 0600).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from splitinfer.errors import AuthError

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


@dataclass(frozen=True)
class KeyPair:
    """One CURVE key pair, Z85-encoded (40 characters each)."""

    public: bytes
    secret: bytes


@dataclass(frozen=True)
class Curve:
    """How one socket uses CURVE: its own key pair, and the server's public key when it connects
    (``None``: the socket is the server)."""

    keys: KeyPair
    server_key: bytes | None = None

    def apply(self, sock: zmq.Socket) -> None:
        """Set the socket's CURVE options (before it binds or connects)."""
        sock.curve_secretkey = self.keys.secret
        sock.curve_publickey = self.keys.public
        if self.server_key is None:
            sock.curve_server = True
        else:
            sock.curve_serverkey = self.server_key


def write_key_pair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` (mode 0600) into ``directory``; never overwrites."""
    folder = Path(directory)
    public, secret = folder / f"{name}{PUBLIC_SUFFIX}", folder / f"{name}{SECRET_SUFFIX}"
    for path in (public, secret):
        if path.exists():
            raise AuthError(f"{path} exists", "choose another name or directory, or delete the old key "
                            "pair (every peer that trusts it must then get the new public key)")
    old_umask = os.umask(0o077)  # the secret file is never readable by others, not even for a moment
    try:
        folder.mkdir(parents=True, exist_ok=True)
        made_public, made_secret = zmq.auth.create_certificates(str(folder), name)
        os.chmod(made_public, 0o644)
    except OSError as e:
        raise AuthError(f"cannot write keys into {folder}: {e.strerror}",
                        "give a directory you can write to") from None
    finally:
        os.umask(old_umask)
    return Path(made_public), Path(made_secret)


def read_key_pair(path: str | Path, what: str = "secret key") -> KeyPair:
    """The key pair in a ``.key_secret`` file; AuthError naming ``what`` and the path otherwise."""
    public, secret = _load(path, what)
    if not secret:
        raise AuthError(f"{what} {path} holds only a public key",
                        f"give the {SECRET_SUFFIX} file that `splitinfer keygen` wrote")
    return KeyPair(public, secret)


def read_public_keys(paths: str | Path | Iterable[str | Path], what: str = "public keys") -> frozenset[bytes]:
    """Public keys from files (``.key`` or ``.key_secret``) or directories of ``.key`` files."""
    if isinstance(paths, str | Path):
        paths = [paths]
    keys: set[bytes] = set()
    for path in paths:
        p = Path(path)
        files = sorted(p.glob(f"*{PUBLIC_SUFFIX}")) if p.is_dir() else [p]
        if not files:
            raise AuthError(f"{what}: directory {p} has no *{PUBLIC_SUFFIX} files",
                            "put the public keys there (`splitinfer keygen` writes them)")
        keys.update(_load(f, what)[0] for f in files)
    return frozenset(keys)


def _load(path: str | Path, what: str) -> tuple[bytes, bytes | None]:
    if not Path(path).is_file():
        raise AuthError(f"{what} {path} is not a file",
                        "check the path (`splitinfer keygen -o DIR` writes key pairs)")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except OSError as e:
        raise AuthError(f"cannot read {what} {path}: {e.strerror or e}",
                        "check the path (`splitinfer keygen -o DIR` writes key pairs)") from None
    except Exception as e:
        raise AuthError(f"{what} {path} is not a ZeroMQ key file: {e}",
                        "give a file that `splitinfer keygen` wrote") from None
    if public is None or len(public) != 40 or (secret is not None and len(secret) != 40):
        raise AuthError(f"{what} {path} is not a ZeroMQ key file",
                        "give a file that `splitinfer keygen` wrote")
    return public, secret


class Gate:
    """The ZAP handler of one ZeroMQ context: which client keys may connect to its CURVE servers.

    ``control`` keys may send any message kind; ``peer`` keys only what the receiver lets peers send
    (a worker: infer, echo, health). A message's key is its frames' ``User-Id`` property (pyzmq's
    authenticator sets it to the Z85 public key).
    """

    def __init__(self, context: zmq.Context, *, control: Iterable[bytes], peer: Iterable[bytes] = ()) -> None:
        self._control = frozenset(control)
        self._control_ids = frozenset(k.decode() for k in self._control)
        self._allowed = self._control | frozenset(peer)
        self._lock = threading.Lock()
        self._authenticator = ThreadAuthenticator(context, log=logging.getLogger("splitinfer.zap"))
        self._authenticator.start()
        self._authenticator.configure_curve_callback("*", credentials_provider=self)

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP: may the client with this public key connect?"""
        return key in self._allowed

    def may_control(self, user_id: str | None) -> bool:
        """True when the message came from a coordinator key (``user_id``: its frames' User-Id)."""
        return user_id in self._control_ids

    def stop(self) -> None:
        """Stop the ZAP thread (before the context is terminated)."""
        with self._lock:
            if self._authenticator is not None:
                self._authenticator.stop()
                self._authenticator = None




def open_gate(context: zmq.Context, secret_key: str, coordinator_keys: str,
              peer_keys: str = "") -> tuple[KeyPair, Gate]:
    """A worker's key pair and its gate, from its flags (key files or directories, comma-separated)."""
    keys = read_key_pair(secret_key, "--curve-secret-key")
    control = read_public_keys(_split(coordinator_keys), "--curve-coordinator-keys")
    peers = read_public_keys(_split(peer_keys), "--curve-peer-keys") if _split(peer_keys) else frozenset()
    return keys, Gate(context, control=control, peer=peers)


def _split(paths: str) -> list[str]:
    return [p for p in paths.split(",") if p]


def user_id(frame: object) -> str | None:
    """The ZAP user id (the client's Z85 public key) of a received frame, None without CURVE."""
    try:
        return frame.get("User-Id")  # type: ignore[attr-defined]
    except (AttributeError, zmq.ZMQError):
        return None


@dataclass(frozen=True)
class Keyring:
    """A coordinator's CURVE keys: its own pair, each device's public key, and the key files a
    locally launched worker is given."""

    own: KeyPair
    devices: dict[str, bytes]  # device name -> its worker's public key
    coordinator_file: str  # the coordinator's key file (its public half is what workers trust)
    public_files: dict[str, str]  # device name -> public key file
    keys_dir: str | None = None  # where NAME.key_secret of local devices are

    def client(self, device: str) -> Curve:
        """CURVE settings of a socket that connects to ``device``'s worker."""
        return Curve(self.own, self.devices[device])

    def server(self) -> Curve:
        """CURVE settings of the coordinator's result socket."""
        return Curve(self.own)

    def public(self, device: str) -> str:
        """``device``'s public key as text (for messages that tell a worker where to connect)."""
        return self.devices[device].decode()

    def worker_flags(self, device: str) -> list[str]:
        """The worker flags of a local device: its pair, the coordinator's key, its peers' keys."""
        if self.keys_dir is None:
            raise AuthError(f"no secret key for local device {device!r}",
                            "set curve: {keys: DIR} in cluster.yaml, with DIR/" + device + SECRET_SUFFIX)
        peers = ",".join(path for name, path in self.public_files.items() if name != device)
        flags = ["--curve-secret-key", str(Path(self.keys_dir) / f"{device}{SECRET_SUFFIX}"),
                 "--curve-coordinator-keys", self.coordinator_file]
        return [*flags, "--curve-peer-keys", peers] if peers else flags


def load_keyring(coordinator_key: str, public_files: dict[str, str], keys_dir: str | None) -> Keyring:
    """Read the coordinator's pair and every device's public key (AuthError naming a bad file)."""
    own = read_key_pair(coordinator_key, "the coordinator's secret key (curve.coordinator_key)")
    devices = {name: next(iter(read_public_keys(path, f"device {name!r} public_key")))
               for name, path in public_files.items()}
    return Keyring(own, devices, coordinator_key, dict(public_files), keys_dir)
