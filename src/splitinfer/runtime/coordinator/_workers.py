"""Reaching a session's workers: where they send results, and a client per device.

The session binds one PULL socket for results; workers must reach it, so its
advertised host is the IP on the route to the remote devices (loopback when all
are local), and for Ray or network namespaces the IP on the route to the first
started worker, known only once they run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import zmq

from splitinfer.cluster import Cluster
from splitinfer.errors import ClusterError, DeadlineError
from splitinfer.runtime.coordinator.pipeline import reachable_ip
from splitinfer.runtime.launch.start import Launcher
from splitinfer.runtime.wire.client import WorkerClient
from splitinfer.runtime.wire.curve import Gate, Keyring
from splitinfer.runtime.wire.sockets import open_socket


def host_known_late(cluster: Cluster) -> bool:
    """Ray places workers on nodes known only once they start, and netns workers reach us through
    a bridge made when they start: the advertised host is picked then."""
    return cluster.backend == "ray" or cluster.network == "netns"


def bind_result_socket(sock: zmq.Socket, cluster: Cluster, host: str | None) -> str:
    """Bind ``sock`` on a free port; the address workers are told to send results to."""
    remote = [d for d in cluster.devices if not d.is_local]
    if host is None:
        host = reachable_ip(remote[0].address) if remote else "127.0.0.1"
    bind_host = "0.0.0.0" if remote or host_known_late(cluster) else host
    port = sock.bind_to_random_port(f"tcp://{bind_host}")
    return f"tcp://{host}:{port}"


def readvertise(result_address: str, cluster: Cluster, addresses: dict[str, str],
                coordinator_host: str | None) -> str:
    """The result address once the workers run (changed only when the host was known late)."""
    if not host_known_late(cluster) or coordinator_host is not None or not addresses:
        return result_address
    port = result_address.rsplit(":", 1)[1]
    return f"tcp://{reachable_ip(next(iter(addresses.values())))}:{port}"


def open_result_socket(context: zmq.Context, keyring: Keyring | None) -> tuple[zmq.Socket, Gate | None]:
    """The PULL socket results arrive on (unbound); with CURVE, a server that admits only the
    cluster's workers (the returned gate, stopped before the context ends)."""
    if keyring is None:
        return open_socket(context, zmq.PULL), None
    gate = Gate(context, control=(), peer=keyring.devices.values())
    return open_socket(context, zmq.PULL, curve=keyring.server()), gate


def connect_clients(addresses: dict[str, str], token: bytes | None, context: zmq.Context, needed: set[str],
                    timeout_s: float, keyring: Keyring | None = None,
                    mac_tensors: bool = False) -> tuple[dict[str, WorkerClient], set[str]]:
    """A client per device, each worker checked by name: (clients, spares that do not answer).

    ClusterError when a device a stage needs does not answer or a worker has another name.
    """
    clients: dict[str, WorkerClient] = {}
    down: set[str] = set()
    try:
        for name, address in addresses.items():
            client = clients[name] = WorkerClient.to_device(address, token, name, keyring=keyring,
                                                            mac_tensors=mac_tensors, context=context)
            try:
                found = client.health(timeout_s=timeout_s)["name"]
            except DeadlineError:
                if name in needed:
                    port = address.rsplit(":", 1)[-1]
                    fix = (f"start one on that machine: splitinfer worker --name {name} "
                           f"--listen tcp://0.0.0.0:{port} --token-file TOKEN")
                    if keyring is not None:
                        fix = (f"check that a worker runs there with the key pair whose public key is "
                               f"cluster.yaml's for {name!r} and that it trusts the coordinator's key "
                               "(--curve-coordinator-keys): a CURVE handshake that fails sends nothing")
                    raise ClusterError(f"no worker answers for device {name!r} at {address}", fix) from None
                down.add(name)  # a spare that is down: re-plans will avoid it
                continue
            if found != name:
                raise ClusterError(f"the worker at {address} is named {found!r}, the cluster expects "
                                   f"{name!r}", "fix the address in cluster.yaml or the worker's --name")
    except BaseException:
        for client in clients.values():
            client.close()
        raise
    return clients, down


@dataclass
class SessionResources:
    """What a session must release even when nobody closes it: its finalizer holds this, not the session."""

    stop: threading.Event
    context: zmq.Context
    result_sock: zmq.Socket
    gate: Gate | None = None  # CURVE: who may connect to the result socket
    launcher: Launcher | None = None
    threads: list[threading.Thread] = field(default_factory=list)

    def has_exited(self, device: str) -> bool:
        """True once a worker this session launched is known to be gone."""
        launcher = self.launcher
        return launcher is not None and device in launcher.pids and not launcher.is_alive(device)

    def stop_threads(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=2.0)

    def release(self) -> None:
        self.stop_threads()
        if self.launcher is not None:
            self.launcher.close()
        self.result_sock.close(linger=0)
        if self.gate is not None:
            self.gate.stop()
        self.context.destroy(linger=0)
