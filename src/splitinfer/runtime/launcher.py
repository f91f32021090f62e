"""The emulated continuum's launcher: one worker process per ``local`` device, on loopback.

Workers bind a free port (``tcp://127.0.0.1:*``) and print ``READY <address>``;
the launcher waits for that line and a health reply from each. They stop when
:meth:`LocalLauncher.close` runs, at interpreter exit, and when the launching
process dies in any way (even SIGKILL): each worker reads the token from a
stdin pipe that only the launcher holds and exits on its EOF, watches its
parent pid, and (launched from the main thread, Linux) has PR_SET_PDEATHSIG.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import zmq

from splitinfer.cluster import Cluster, Device
from splitinfer.errors import SplitinferError, WorkerError
from splitinfer.runtime.client import WorkerClient
from splitinfer.runtime.codec import read_token
from splitinfer.runtime.netns import NetnsNetwork


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


@dataclass
class LocalWorker:
    """A worker process started by the launcher."""

    device: str
    process: subprocess.Popen
    log_path: Path
    address: str = ""

    def is_alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def log_tail(self, num_lines: int = 5) -> str:
        """The last lines the worker wrote to stderr (for error messages)."""
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-num_lines:])


class LocalLauncher:
    """Start and stop local worker processes that share one token."""

    def __init__(self, token: bytes, *, startup_timeout_s: float = 60.0,
                 network: NetnsNetwork | None = None) -> None:
        self.token = token
        self.network = network  # when set, each worker runs in its device's network namespace
        self.startup_timeout_s = startup_timeout_s
        self.workers: dict[str, LocalWorker] = {}
        self._log_dir = Path(tempfile.mkdtemp(prefix="splitinfer-workers-"))
        self._closed = False
        atexit.register(self.close)

    def start(self, devices: Sequence[Device]) -> dict[str, str]:
        """Spawn one worker per device (in parallel), wait until all answer; name -> address."""
        for device in devices:
            self.workers[device.name] = self._spawn(device)
        deadline = time.monotonic() + self.startup_timeout_s
        for device in devices:
            self._await_ready(self.workers[device.name], deadline)
        context = zmq.Context.instance()
        for device in devices:
            worker = self.workers[device.name]
            with WorkerClient(worker.address, self.token, context=context, name=device.name) as client:
                client.health(timeout_s=max(1.0, deadline - time.monotonic()))
        return {d.name: self.workers[d.name].address for d in devices}

    def _spawn(self, device: Device) -> LocalWorker:
        host = "127.0.0.1" if self.network is None else self.network.ips[device.name]
        prefix = [] if self.network is None else self.network.exec_prefix(device.name)
        cmd = [*prefix, sys.executable, "-m", "splitinfer.runtime.worker", "--name", device.name,
               "--listen", f"tcp://{host}:*", "--providers", *device.providers,
               "--threads", str(device.threads), "--token-file", "-", "--watch-stdin",
               "--parent-pid", str(os.getpid())]
        if threading.current_thread() is threading.main_thread():
            cmd.append("--die-with-parent")
        log_path = self._log_dir / f"{device.name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                       close_fds=True)
        assert process.stdin is not None
        process.stdin.write(self.token + b"\n")
        process.stdin.flush()  # stdin stays open: its EOF tells the worker we are gone
        return LocalWorker(device.name, process, log_path)

    def _await_ready(self, worker: LocalWorker, deadline: float) -> None:
        stdout = worker.process.stdout
        assert stdout is not None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerError(f"local worker {worker.device!r} did not start within "
                                  f"{self.startup_timeout_s:g} s", "check the machine's load, then retry")
            ready, _, _ = select.select([stdout], [], [], min(remaining, 0.5))
            if ready:
                line = stdout.readline().decode(errors="replace").strip()
                if line.startswith("READY "):
                    worker.address = line.split(" ", 1)[1]
                    stdout.close()  # the worker writes nothing else there
                    return
                if not line and not worker.is_alive():
                    raise WorkerError(f"local worker {worker.device!r} exited at start "
                                      f"(code {worker.process.returncode}): {worker.log_tail()}",
                                      "fix what its log says (e.g. providers or threads in cluster.yaml)")

    def is_alive(self, device: str) -> bool:
        """True while the device's worker process runs."""
        worker = self.workers.get(device)
        return worker is not None and worker.is_alive()

    @property
    def pids(self) -> dict[str, int]:
        """Process id of each device's worker."""
        return {name: w.process.pid for name, w in self.workers.items()}

    def close(self, timeout_s: float = 3.0) -> None:
        """Stop every worker: SIGTERM, then SIGKILL for any still running after ``timeout_s``."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        for worker in self.workers.values():
            with contextlib.suppress(OSError, ValueError):
                if worker.process.stdin is not None:
                    worker.process.stdin.close()
            if worker.is_alive():
                with contextlib.suppress(OSError):
                    worker.process.terminate()
        deadline = time.monotonic() + timeout_s
        for worker in self.workers.values():
            try:
                worker.process.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait(1.0)
            if worker.process.stdout is not None and not worker.process.stdout.closed:
                worker.process.stdout.close()
        shutil.rmtree(self._log_dir, ignore_errors=True)
        if self.network is not None:
            self.network.close()

    def __enter__(self) -> LocalLauncher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def launch_local_workers(devices: Sequence[Device], token: bytes, *,
                         startup_timeout_s: float = 60.0) -> LocalLauncher:
    """Start workers for ``devices`` on loopback; the caller must ``close()`` the launcher."""
    launcher = LocalLauncher(token, startup_timeout_s=startup_timeout_s)
    try:
        launcher.start(devices)
    except (SplitinferError, OSError):
        launcher.close()
        raise
    return launcher


def session_token(cluster: Cluster) -> bytes:
    """The shared secret for a cluster's workers: its ``token_file``, else a fresh random one
    (which only workers this process launches can know)."""
    return read_token(cluster.token_file) if cluster.token_file else secrets.token_hex(32).encode()


def start_workers(cluster: Cluster, token: bytes, *,
                  startup_timeout_s: float = 60.0) -> tuple[Launcher | None, dict[str, str]]:
    """Workers for every device of ``cluster``: (the launcher to close, or None; name -> address).

    ``backend: ray`` starts every device's worker as a Ray actor on its node; otherwise
    ``local`` devices get a process on loopback and the others are expected to run
    ``splitinfer worker`` at their address already.
    """
    launcher: Launcher | None = None
    addresses: dict[str, str] = {}
    if cluster.backend == "ray":
        from splitinfer.runtime.ray_launcher import RayLauncher  # optional extra: imported only here

        launcher = RayLauncher(cluster, token, startup_timeout_s=startup_timeout_s)
        to_start = list(cluster.devices)
    else:
        to_start = [d for d in cluster.devices if d.is_local]
        if to_start:
            network = None
            if cluster.network == "netns":
                network = NetnsNetwork(cluster)
                network.setup(to_start)
            launcher = LocalLauncher(token, startup_timeout_s=startup_timeout_s, network=network)
    try:
        if launcher is not None:
            addresses.update(launcher.start(to_start))
    except BaseException:
        launcher.close()  # type: ignore[union-attr]
        raise
    started = {d.name for d in to_start}
    addresses.update({d.name: d.address for d in cluster.devices if d.name not in started})
    return launcher, addresses
