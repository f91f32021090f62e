"""Emulated links in the kernel: each local device in its own network namespace, rates set by ``tc``.

With ``network: netns`` in cluster.yaml (root on Linux), the launcher puts every
``local`` device's worker into a network namespace joined to a bridge in the
root namespace by a veth pair. The coordinator (standing in for the source and
sink devices) talks to the workers through the bridge address. Link bandwidth
is then enforced by the kernel: an HTB qdisc on each namespace's interface has
one class per destination at that link's rate (a ``u32`` filter on the
destination address), and the host side of each veth limits what the
coordinator uploads. Latency stays emulated in software by the sender
(``tc netem`` is missing from many kernels), and the software token bucket is
switched off for bandwidth, so nothing is counted twice.

Layout, for a session id ``ab12`` and devices 0..n-1::

    root ns:  bridge sib-ab12 10.213.K.1/24, host veths sih-ab12-0 ... (enslaved)
    ns si-ab12-i: eth0 10.213.K.(i+2)/24, default route via 10.213.K.1

Everything is removed by :meth:`NetnsNetwork.close` (also at interpreter exit).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import weakref
from collections.abc import Sequence

from splitinfer.cluster import Cluster, Device
from splitinfer.errors import ClusterError

_RATE_UNLIMITED = "10gbit"


def netns_unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"the `{tool}` tool (iproute2) is not installed"
    probe = f"si-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(*cmd: str) -> None:
    done = subprocess.run(list(cmd), capture_output=True, text=True)
    if done.returncode != 0:
        raise ClusterError(f"`{' '.join(cmd)}` failed: {done.stderr.strip() or done.returncode}",
                           "run as root on Linux with iproute2, or use network: software")


class NetnsNetwork:
    """Namespaces, veth pairs, a bridge and HTB rate limits for the local devices of a cluster."""

    def __init__(self, cluster: Cluster) -> None:
        reason = netns_unavailable_reason()
        if reason is not None:
            raise ClusterError(f"network: netns is not possible here: {reason}",
                               "run as root on Linux, or set network: software in cluster.yaml")
        self.cluster = cluster
        self.id = secrets.token_hex(2)
        self.subnet = 16 + int(self.id, 16) % 224  # 10.213.16-239.0/24, unlikely to collide
        self.bridge = f"sib-{self.id}"
        self.coordinator_ip = f"10.213.{self.subnet}.1"
        self.namespaces: dict[str, str] = {}
        self.ips: dict[str, str] = {}
        self._host_veths: dict[str, str] = {}
        # Deleted on close(), or at interpreter exit at the latest (the finalizer holds the names only).
        self._finalizer = weakref.finalize(self, _delete, self.namespaces, self._host_veths, self.bridge)

    def exec_prefix(self, device: str) -> list[str]:
        """The command prefix that runs a program inside the device's namespace."""
        return ["ip", "netns", "exec", self.namespaces[device]]

    def setup(self, devices: Sequence[Device]) -> None:
        """Create the bridge, one namespace per device, and the rate limits of every declared link."""
        try:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.coordinator_ip}/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            for i, device in enumerate(devices):
                self._add_device(i, device.name)
            for device in devices:
                self._shape(device.name)
        except BaseException:
            self.close()
            raise

    def _add_device(self, i: int, name: str) -> None:
        ns, host, peer = f"si-{self.id}-{i}", f"sih-{self.id}-{i}", f"sip-{self.id}-{i}"
        ip = f"10.213.{self.subnet}.{i + 2}"
        _run("ip", "netns", "add", ns)
        self.namespaces[name] = ns
        _run("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
        self._host_veths[name] = host
        _run("ip", "link", "set", peer, "netns", ns)
        _run("ip", "link", "set", host, "master", self.bridge)
        _run("ip", "link", "set", host, "up")
        inside = ["ip", "netns", "exec", ns]
        _run(*inside, "ip", "link", "set", peer, "name", "eth0")
        _run(*inside, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        _run(*inside, "ip", "link", "set", "eth0", "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run(*inside, "ip", "route", "add", "default", "via", self.coordinator_ip)
        self.ips[name] = ip

    def _shape(self, name: str) -> None:
        """HTB on the device's eth0 (what it sends) and on its host veth (what the coordinator uploads)."""
        cluster = self.cluster
        # what the device sends: to other devices' workers, and results to the coordinator (sink)
        limits = []
        for other, ip in self.ips.items():
            link = cluster.link(name, other) if other != name else None
            if link is not None and link.bandwidth_bps:
                limits.append(("dst", ip, link.bandwidth_bps))
        if cluster.sink is not None and cluster.sink != name:
            link = cluster.link(name, cluster.sink)
            if link is not None and link.bandwidth_bps:
                limits.append(("dst", self.coordinator_ip, link.bandwidth_bps))
        self._htb(self.exec_prefix(name), "eth0", limits)
        # what the coordinator (the source device) uploads to this device
        upload = []
        if cluster.source != name:
            link = cluster.link(cluster.source, name)
            if link is not None and link.bandwidth_bps:
                upload.append(("src", self.coordinator_ip, link.bandwidth_bps))
        self._htb([], self._host_veths[name], upload)

    @staticmethod
    def _htb(prefix: list[str], dev: str, limits: list[tuple[str, str, float]]) -> None:
        if not limits:
            return
        _run(*prefix, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "99")
        _run(*prefix, "tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:99", "htb",
             "rate", _RATE_UNLIMITED)
        for k, (direction, ip, bandwidth_bps) in enumerate(limits, start=10):
            rate = f"{int(bandwidth_bps * 8)}bit"
            _run(*prefix, "tc", "class", "add", "dev", dev, "parent", "1:", "classid", f"1:{k}", "htb",
                 "rate", rate, "ceil", rate)
            _run(*prefix, "tc", "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1",
                 "u32", "match", "ip", direction, f"{ip}/32", "flowid", f"1:{k}")

    def close(self) -> None:
        """Delete the namespaces (their veths go with them) and the bridge."""
        self._finalizer()


def _delete(namespaces: dict[str, str], host_veths: dict[str, str], bridge: str) -> None:
    for ns in namespaces.values():
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    for host in host_veths.values():
        subprocess.run(["ip", "link", "del", host], capture_output=True)
    subprocess.run(["ip", "link", "del", bridge], capture_output=True)
