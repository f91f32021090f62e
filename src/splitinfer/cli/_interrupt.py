"""Ctrl-C that always ends a command: stop cleanly first, then exit anyway.

The first Ctrl-C raises KeyboardInterrupt in the main thread as Python's own handler
does, so a command stops as it always has: its workers stopped, a profile's measured
blocks saved, exit code 130. An interrupt lands wherever the main thread happens to be,
though, and one that lands where the cleanup then waits for what it cut short would
leave a command that no longer answers Ctrl-C (`splitinfer bench` once ignored one for
20 s in CI; where it waited was never found). So a command still running
``STOP_GRACE_S`` after the first Ctrl-C, or given a second one, exits at once with 130
and says so on stderr. Local workers exit with it: they watch its stdin and pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

STOP_GRACE_S = 15.0  # after Ctrl-C, how long a command may take to stop before it exits anyway


def _exit_now(why: str) -> None:
    os.write(2, f"interrupted: {why}; exiting without waiting\n".encode())
    os._exit(130)


class _Interrupts:
    def __init__(self) -> None:
        self.done = threading.Event()  # the command returned: nothing to watch
        self.interrupted = False

    def handler(self, _signum: int, _frame: object) -> None:
        if self.interrupted:
            _exit_now("Ctrl-C twice")
        self.interrupted = True
        watch = threading.Thread(target=self._watch, args=(STOP_GRACE_S,), name="interrupt", daemon=True)
        watch.start()
        raise KeyboardInterrupt

    def _watch(self, grace_s: float) -> None:
        if not self.done.wait(grace_s):
            _exit_now(f"stopping took over {grace_s:g} s")


@contextlib.contextmanager
def bounded_interrupts() -> Iterator[None]:
    """Within: Ctrl-C as described above. Only in the main thread, and only where Ctrl-C has Python's
    default handler (a host program that set its own keeps it); restored on the way out."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    interrupts = _Interrupts()
    signal.signal(signal.SIGINT, interrupts.handler)
    try:
        yield
    finally:
        interrupts.done.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
