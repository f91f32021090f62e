"""A worker as a process: ``splitinfer worker`` and ``python -m splitinfer.runtime.device``.

Starts a :class:`~splitinfer.runtime.device.worker.Worker`, prints ``READY <address>``
and serves until shutdown, a signal, or (when a coordinator launched it) that
coordinator's death: the parent pid changes, stdin closes, or the kernel's
PR_SET_PDEATHSIG fires.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading

import zmq

from splitinfer.errors import SplitinferError, WorkerError
from splitinfer.host import manage_freed_memory
from splitinfer.runtime.device.config import WorkerConfig, parse_config
from splitinfer.runtime.device.worker import Worker
from splitinfer.runtime.wire.auth import read_token

log = logging.getLogger("splitinfer.worker")


def _die_with_parent(parent_pid: int, use_pdeathsig: bool) -> None:
    # PR_SET_PDEATHSIG: the kernel sends SIGTERM when the parent *thread* dies (Linux only),
    # so the launcher asks for it only from its main thread. The parent-pid check in the
    # IO loop covers other systems and the race before this call.
    if use_pdeathsig and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)
        except OSError:
            pass
    if os.getppid() != parent_pid:
        sys.exit(0)


def _watch_stdin(stop: threading.Event) -> None:
    # The launcher holds our stdin open; EOF means it is gone, however it died.
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    stop.set()


def serve_worker(config: WorkerConfig) -> None:
    """Run a worker in this process until it is stopped (blocks)."""
    if config.parent_pid is not None:
        _die_with_parent(config.parent_pid, config.die_with_parent)
    token = read_token(config.token_file)
    try:
        worker = Worker(config, token)
    except zmq.ZMQError as e:
        raise WorkerError(f"cannot listen on {config.listen}: {e}",
                          "pick a free port and an address of this machine, "
                          "e.g. tcp://0.0.0.0:5555") from None
    if threading.current_thread() is threading.main_thread():  # a process of its own
        # What creating a session or taking a partition frees goes back to the system at once: a worker's
        # resident memory then follows what its stages hold, as the planner predicts it (host.py).
        manage_freed_memory()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: setattr(worker, "signalled", True))
    if token is None and config.curve_secret_key is None:
        log.warning("no token and no CURVE keys: anyone who can reach %s can deploy models and run requests",
                    worker.address)
    if config.watch_stdin:
        threading.Thread(target=_watch_stdin, args=(worker.stop,), daemon=True).start()
    print(f"READY {worker.address}", flush=True)
    worker.run_forever()


def main(argv: list[str] | None = None) -> int:
    """``python -m splitinfer.runtime.device``: run a worker; errors become one line, exit 2."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s worker %(message)s")
    try:
        serve_worker(parse_config(sys.argv[1:] if argv is None else argv,
                                  prog="python -m splitinfer.runtime.device"))
    except SplitinferError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
