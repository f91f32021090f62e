"""The emulated continuum's launcher: one worker process per ``local`` device, on loopback.

Workers bind a free port (``tcp://127.0.0.1:*``) and print ``READY <address>``;
the launcher waits for that line and a health reply from each. They stop when
:meth:`LocalLauncher.close` runs, at interpreter exit, and when the launching
process dies in any way (even SIGKILL): each worker reads the token from a
stdin pipe that only the launcher holds and exits on its EOF, watches its
parent pid, and (launched from the main thread, Linux) has PR_SET_PDEATHSIG.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import zmq

from splitinfer.cluster import Device
from splitinfer.errors import SplitinferError, WorkerError
from splitinfer.runtime.launch.netns import NetnsNetwork
from splitinfer.runtime.wire.client import WorkerClient
from splitinfer.runtime.wire.curve import Keyring


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

    def __init__(self, token: bytes | None, *, startup_timeout_s: float = 60.0,
                 network: NetnsNetwork | None = None, keyring: Keyring | None = None,
                 mac_tensors: bool = False, cache_dir: str | Path | None = None,
                 optimize_ahead: bool = False) -> None:
        self.token = token
        self.optimize_ahead = optimize_ahead  # each worker's --optimize-ahead
        self.keyring = keyring  # CURVE: each worker gets its key pair, the coordinator's key, its peers'
        self.mac_tensors = mac_tensors
        self.network = network  # when set, each worker runs in its device's network namespace
        self.startup_timeout_s = startup_timeout_s
        self.workers: dict[str, LocalWorker] = {}
        self._log_dir = Path(tempfile.mkdtemp(prefix="splitinfer-workers-"))
        # Each worker's partition cache: a folder per device under ``cache_dir``, or (by default) under the
        # launcher's temporary folder, removed with it: tests and demos leave nothing in the home folder.
        self._cache_dir = Path(cache_dir) if cache_dir is not None else self._log_dir / "partitions"
        # The workers stop on close(), or at interpreter exit for a launcher nobody closed; the
        # finalizer holds what it stops, not the launcher.
        self._finalizer = weakref.finalize(self, _stop_workers, self.workers, self._log_dir, network)

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
            with WorkerClient.to_device(worker.address, self.token, device.name, keyring=self.keyring,
                                        mac_tensors=self.mac_tensors, context=context) as client:
                client.health(timeout_s=max(1.0, deadline - time.monotonic()))
        return {d.name: self.workers[d.name].address for d in devices}

    def _spawn(self, device: Device) -> LocalWorker:
        host = "127.0.0.1" if self.network is None else self.network.ips[device.name]
        prefix = [] if self.network is None else self.network.exec_prefix(device.name)
        cmd = [*prefix, sys.executable, "-m", "splitinfer.runtime.device", "--name", device.name,
               "--listen", f"tcp://{host}:*", "--providers", *device.providers,
               "--num-threads", str(device.num_threads), "--watch-stdin",
               "--parent-pid", str(os.getpid()),
               "--cache-dir", str(self._cache_dir / re.sub(r"[^A-Za-z0-9._-]", "_", device.name))]
        if threading.current_thread() is threading.main_thread():
            cmd.append("--die-with-parent")
        if self.token is not None:
            cmd += ["--token-file", "-"]  # read from stdin: a token never shows in a process listing
        if self.keyring is not None:
            cmd += self.keyring.worker_flags(device.name)
        if self.mac_tensors:
            cmd.append("--mac-tensors")
        if self.optimize_ahead:
            cmd.append("--optimize-ahead")
        log_path = self._log_dir / f"{device.name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                       close_fds=True)
        assert process.stdin is not None
        if self.token is not None:
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
                                      "fix what its log says (e.g. providers or num_threads in cluster.yaml)")

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
        held = self._finalizer.detach()
        if held is not None:
            _stop_workers(*held[2], timeout_s=timeout_s)

    def __enter__(self) -> LocalLauncher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def launch_local_workers(devices: Sequence[Device], token: bytes, *, startup_timeout_s: float = 60.0,
                         optimize_ahead: bool = False) -> LocalLauncher:
    """Start workers for ``devices`` on loopback (``optimize_ahead``: each with ``--optimize-ahead``); the
    caller must ``close()`` the launcher."""
    launcher = LocalLauncher(token, startup_timeout_s=startup_timeout_s, optimize_ahead=optimize_ahead)
    try:
        launcher.start(devices)
    except (SplitinferError, OSError):
        launcher.close()
        raise
    return launcher


def _stop_workers(workers: dict[str, LocalWorker], log_dir: Path, network: NetnsNetwork | None,
                  timeout_s: float = 3.0) -> None:
    for worker in workers.values():
        with contextlib.suppress(OSError, ValueError):
            if worker.process.stdin is not None:
                worker.process.stdin.close()
        if worker.is_alive():
            with contextlib.suppress(OSError):
                worker.process.terminate()
    deadline = time.monotonic() + timeout_s
    for worker in workers.values():
        try:
            worker.process.wait(max(0.01, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait(1.0)
        if worker.process.stdout is not None and not worker.process.stdout.closed:
            worker.process.stdout.close()
    shutil.rmtree(log_dir, ignore_errors=True)
    if network is not None:
        network.close()
