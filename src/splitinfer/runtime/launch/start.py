"""Starting a cluster's workers: one entry point for every backend.

``start_workers(cluster, token)`` returns the launcher that owns the started
workers (close it to stop them) and every device's address: ``backend: ray``
starts each device's worker as a Ray actor on its node (:mod:`.ray`); otherwise
``local`` devices get a process on this machine (:mod:`.local`, in network
namespaces with ``network: netns``, :mod:`.netns`) and the others are expected
to run ``splitinfer worker`` at their address already.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Protocol

from splitinfer.cluster import Cluster, Device
from splitinfer.runtime.launch.local import LocalLauncher
from splitinfer.runtime.launch.netns import NetnsNetwork
from splitinfer.runtime.wire.auth import read_token
from splitinfer.runtime.wire.curve import Keyring, load_keyring


class Launcher(Protocol):
    """Starts the workers of some devices and stops them again (local processes, Ray actors)."""

    def start(self, devices: Sequence[Device]) -> dict[str, str]:
        """Start one worker per device and wait until each answers; device name -> address."""
        ...

    def is_alive(self, device: str) -> bool:
        """False once the device's worker is known to be gone."""
        ...

    @property
    def pids(self) -> dict[str, int]:
        """Process id of each worker this launcher started (when on this machine)."""
        ...

    def close(self, timeout_s: float = 3.0) -> None:
        """Stop every worker this launcher started."""
        ...


def session_token(cluster: Cluster) -> bytes | None:
    """The shared secret for a cluster's workers: its ``token_file``, else a fresh random one
    (which only workers this process launches can know); None with CURVE and no ``token_file``
    (CURVE authenticates every byte, so workers started by hand need no token), unless
    ``mac_tensors`` asks for a MAC."""
    if cluster.token_file:
        return read_token(cluster.token_file)
    if cluster.curve is not None and not cluster.mac_tensors:
        return None
    return secrets.token_hex(32).encode()


def cluster_keyring(cluster: Cluster) -> Keyring | None:
    """The coordinator's CURVE keys for ``cluster`` (None when its ``curve:`` is off)."""
    if cluster.curve is None:
        return None
    return load_keyring(cluster.curve.coordinator_key or "",
                        {d.name: d.public_key or "" for d in cluster.devices}, cluster.curve.keys)


def start_workers(cluster: Cluster, token: bytes | None, *,
                  startup_timeout_s: float = 60.0) -> tuple[Launcher | None, dict[str, str]]:
    """Workers for every device of ``cluster``: (the launcher to close, or None; name -> address)."""
    launcher: Launcher | None = None
    addresses: dict[str, str] = {}
    if cluster.backend == "ray":
        from splitinfer.runtime.launch.ray import RayLauncher  # optional extra: imported only here

        launcher = RayLauncher(cluster, token, startup_timeout_s=startup_timeout_s)
        to_start = list(cluster.devices)
    else:
        to_start = [d for d in cluster.devices if d.is_local]
        if to_start:
            network = None
            if cluster.network == "netns":
                network = NetnsNetwork(cluster)
                network.setup(to_start)
            launcher = LocalLauncher(token, startup_timeout_s=startup_timeout_s, network=network,
                                     keyring=cluster_keyring(cluster), mac_tensors=cluster.mac_tensors)
    try:
        if launcher is not None:
            addresses.update(launcher.start(to_start))
    except BaseException:
        launcher.close()  # type: ignore[union-attr]
        raise
    started = {d.name for d in to_start}
    addresses.update({d.name: d.address for d in cluster.devices if d.name not in started})
    return launcher, addresses
