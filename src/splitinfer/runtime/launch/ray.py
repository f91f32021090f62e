"""Device workers as Ray actors: Ray places, watches and restarts them; ZeroMQ still carries the tensors.

``cluster.yaml`` says ``backend: ray`` and where the Ray cluster is::

    schema: 1
    backend: ray
    address: auto              # or the head's address: 10.0.0.1:6379, ray://10.0.0.1:10001
    source: camera
    devices:
      - {name: camera, num_threads: 1}
      - {name: edge}
    links:
      - {from: camera, to: edge, measure: true}

Each device is a Ray node that offers the custom resource ``splitinfer:<device>``.
On every such machine, with splitinfer installed in the same Python environment::

    ray start --address=HEAD_IP:6379 --resources='{"splitinfer:edge": 1}'

(on the head itself: ``ray start --head --resources='{"splitinfer:camera": 1}'``).

:class:`RayLauncher` starts one actor per device, asking for one unit of that
resource (and no CPU), so Ray puts it on that node and no two sessions share a
device's worker. Inside the actor a thread runs the ordinary splitinfer worker
(:class:`~splitinfer.runtime.device.worker.Worker`) bound to the node's IP on a free
port, so stages exchange tensors over the same zero-copy ZeroMQ transport as
standalone workers: Ray's own object transfer is far slower for this (see
``benchmarks/bench_ray.py``). The shared token reaches the worker as a constructor
argument, inside Ray's control plane, never over the data plane. The machine that
runs the session must reach the nodes' IPs, and they it (results come back to it).

Ray restarts an actor whose process dies (``max_restarts``); the new worker starts
empty on a new port, so the launcher reports the old one as gone. ``is_alive``
turns False once Ray reports the actor's process or node dead or restarting (about
2 s for a lost node on a local cluster), and the session's heartbeat notices a
silent worker on its own; either way the session re-plans without that device. Ray is imported only here,
and only when a cluster says ``backend: ray``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

import zmq

from splitinfer.cluster import Cluster, Device
from splitinfer.errors import ClusterError, WorkerError, first_line
from splitinfer.runtime.device.config import WorkerConfig
from splitinfer.runtime.device.worker import Worker
from splitinfer.runtime.wire.client import WorkerClient

RESOURCE_PREFIX = "splitinfer:"


def device_resource(device: str) -> str:
    """The Ray custom resource a node offers to host ``device``'s worker."""
    return f"{RESOURCE_PREFIX}{device}"


def ray_start_line(device: str, head: str = "HEAD_IP:6379") -> str:
    """The shell line that makes a machine join the Ray cluster as ``device``."""
    return f"ray start --address={head} --resources='{{\"{device_resource(device)}\": 1}}'"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError("backend: ray needs the ray package, which is not installed",
                           "pip install 'splitinfer[ray]' (or use backend: local / workers)") from None
    return ray


class WorkerActor:
    """The body of one device's Ray actor: a splitinfer worker served from a thread."""

    def __init__(self, device: str, providers: Sequence[str], num_threads: int, token: bytes) -> None:
        ray = _import_ray()
        self.node_ip = ray.util.get_node_ip_address()
        config = WorkerConfig(name=device, listen=f"tcp://{self.node_ip}:*", providers=tuple(providers),
                              num_threads=num_threads)
        self.worker = Worker(config, token)
        self.thread = threading.Thread(target=self.worker.run_forever, name=f"splitinfer-{device}",
                                       daemon=True)
        self.thread.start()

    def describe(self) -> dict[str, Any]:
        """Where the worker listens and which process hosts it (changes when Ray restarts the actor)."""
        return {"address": self.worker.address, "pid": os.getpid(), "node_ip": self.node_ip,
                "running": self.thread.is_alive()}

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the worker thread (its sockets close); the actor itself is killed by the launcher."""
        self.worker.stop.set()
        self.thread.join(timeout_s)


class RayLauncher:
    """Start one worker per device as a Ray actor on the node offering ``splitinfer:<device>``."""

    def __init__(self, cluster: Cluster, token: bytes, *, startup_timeout_s: float = 60.0,
                 max_restarts: int = 3, watch_interval_s: float = 0.5) -> None:
        self._ray = _import_ray()
        self.cluster = cluster
        self.token = token
        self.startup_timeout_s = startup_timeout_s
        self.max_restarts = max_restarts
        self.watch_interval_s = watch_interval_s
        self.actors: dict[str, Any] = {}  # device name -> ActorHandle
        self.addresses: dict[str, str] = {}
        self.node_ips: dict[str, str] = {}
        self._pids: dict[str, int] = {}
        self._gone: dict[str, str] = {}  # device -> why its worker is no longer the one we started
        self._owns_ray = False  # True when this launcher called ray.init (and so shuts it down)
        self._closed = False
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        # close() runs at interpreter exit at the latest; the finalizer holds the launcher only
        # weakly (an owned object, unlike an atexit registration that keeps it alive forever).
        self._finalizer = weakref.finalize(self, _close_at_exit, weakref.ref(self))

    # ---- start -------------------------------------------------------------------------------
    def start(self, devices: Sequence[Device]) -> dict[str, str]:
        """Create the actors (in parallel), wait until each worker answers; device name -> address."""
        if self._closed:
            raise WorkerError("the Ray launcher is closed", "create a new one")
        self._connect()
        self._check_resources(devices)
        actor_class = self._ray.remote(WorkerActor)
        for device in devices:
            self.actors[device.name] = actor_class.options(
                num_cpus=0, resources={device_resource(device.name): 1}, max_restarts=self.max_restarts,
                max_task_retries=0).remote(device.name, list(device.providers), device.num_threads,
                                           self.token)
        deadline = time.monotonic() + self.startup_timeout_s
        self._await_actors(devices, deadline)
        context = zmq.Context.instance()
        for device in devices:
            with WorkerClient(self.addresses[device.name], self.token, context=context,
                              name=device.name) as client:
                client.health(timeout_s=max(1.0, deadline - time.monotonic()))
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="splitinfer-ray-watch", daemon=True)
            self._watcher.start()
        return {d.name: self.addresses[d.name] for d in devices}

    def _connect(self) -> None:
        ray = self._ray
        if ray.is_initialized():
            return  # the user's Ray: use it, and leave it running at close
        address = self.cluster.address or "auto"
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        except Exception as e:  # ConnectionError, ValueError, ...: all mean no usable cluster there
            raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {first_line(e)}",
                               "start it (ray start --head) or fix address: in cluster.yaml") from None
        self._owns_ray = True

    def _check_resources(self, devices: Sequence[Device]) -> None:
        offered = self._ray.cluster_resources()
        missing = [d.name for d in devices if offered.get(device_resource(d.name), 0) < 1]
        if missing:
            try:
                head = self._ray.get_runtime_context().gcs_address
            except Exception:  # older Ray, or Ray Client: the user knows the head
                head = "HEAD_IP:6379"
            raise ClusterError(f"no Ray node offers device {missing[0]!r} (resource "
                               f"{device_resource(missing[0])!r} not in the cluster)",
                               f"on that machine run: {ray_start_line(missing[0], head)}")

    def _await_actors(self, devices: Sequence[Device], deadline: float) -> None:
        ray = self._ray
        refs = {self.actors[d.name].describe.remote(): d.name for d in devices}
        ready, pending = ray.wait(list(refs), num_returns=len(refs),
                                  timeout=max(0.0, deadline - time.monotonic()))
        if pending:
            name = refs[pending[0]]
            raise WorkerError(f"Ray did not start the worker for device {name!r} within "
                              f"{self.startup_timeout_s:g} s",
                              f"check `ray status`: a node must offer a free {device_resource(name)!r} "
                              "(another session may hold it) and have splitinfer installed")
        for ref in ready:
            name = refs[ref]
            try:
                info = ray.get(ref)
            except ray.exceptions.RayError as e:
                raise WorkerError(f"the Ray actor for device {name!r} failed to start: {first_line(e)}",
                                  "fix what it says (e.g. a device's providers in cluster.yaml)") from None
            self.addresses[name] = info["address"]
            self.node_ips[name] = info["node_ip"]
            self._pids[name] = info["pid"]

    # ---- liveness ----------------------------------------------------------------------------
    def _watch(self) -> None:
        """Ask every actor where its worker is; a failed call or a new process means the worker is gone."""
        ray = self._ray
        pending: dict[Any, str] = {}
        while not self._stop.wait(self.watch_interval_s):
            asked = set(pending.values())
            for name, actor in list(self.actors.items()):
                if name not in self._gone and name not in asked:
                    pending[actor.describe.remote()] = name
            if not pending:
                continue
            try:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=self.watch_interval_s)
            except Exception:  # Ray shut down under us (close, or the user's own ray.shutdown)
                return
            for ref in ready:
                self._check(pending.pop(ref), ref)

    def _check(self, name: str, ref: Any) -> None:
        try:
            info = self._ray.get(ref)
        except self._ray.exceptions.RayError as e:
            self._gone.setdefault(name, f"actor failed: {first_line(e)}")
            return
        if info["pid"] != self._pids.get(name):
            self._gone.setdefault(name, f"actor restarted (pid {info['pid']}, now at {info['address']})")
        elif not info["running"]:
            self._gone.setdefault(name, "worker thread stopped")

    def is_alive(self, device: str) -> bool:
        """True while the device's actor runs the worker this launcher started (cached, cheap)."""
        return device in self.actors and device not in self._gone and not self._closed

    def why_gone(self, device: str) -> str | None:
        """Why the device's worker is no longer alive, or None."""
        return self._gone.get(device)

    @property
    def pids(self) -> dict[str, int]:
        """Process id of each device's worker, on its Ray node."""
        return dict(self._pids)

    # ---- close -------------------------------------------------------------------------------
    def close(self, timeout_s: float = 3.0) -> None:
        """Stop the workers and kill their actors (no restart); disconnect from Ray if we connected."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=2.0)
        ray = self._ray
        if not ray.is_initialized():
            return
        with contextlib.suppress(Exception):  # a dead node's actor cannot answer: kill it anyway
            stops = [actor.stop.remote() for name, actor in self.actors.items() if name not in self._gone]
            if stops:
                ray.wait(stops, num_returns=len(stops), timeout=timeout_s)
        for actor in self.actors.values():
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self.actors.clear()
        if self._owns_ray:
            ray.shutdown()

    def __enter__(self) -> RayLauncher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_at_exit(launcher_ref: weakref.ReferenceType[RayLauncher]) -> None:
    launcher = launcher_ref()
    if launcher is not None:
        launcher.close()
