"""Ctrl-C ends every command: cleanly first, at once when the stop hangs or on a second Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from splitinfer.cli import main

# A command whose stop never ends: `zoo list` with the zoo's listing replaced by a wait that, once
# interrupted, waits again (a cleanup that waits for what the interrupt cut short).
STUCK = textwrap.dedent("""
    import sys, time
    import splitinfer.zoo as zoo
    from splitinfer.cli import _interrupt, main

    _interrupt.STOP_GRACE_S = float(sys.argv[1])

    def stuck():
        print("ready", flush=True)
        try:
            while True:
                time.sleep(0.02)
        except KeyboardInterrupt:
            while True:
                time.sleep(0.02)

    zoo.names = stuck
    sys.exit(main(["zoo", "list"]))
""")


def _start(grace_s: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", STUCK, str(grace_s)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("twice", [False, True], ids=["stop-hangs", "ctrl-c-twice"])
def test_a_command_whose_stop_hangs_still_exits_on_ctrl_c(twice):
    proc = _start(grace_s=60.0 if twice else 1.0)
    try:
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        if twice:
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
        assert time.monotonic() - sent < 10  # not the 60 s grace: the second Ctrl-C ends it
        err = proc.stderr.read() if proc.stderr else ""
        assert ("Ctrl-C twice" if twice else "stopping took over 1 s") in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_main_leaves_ctrl_c_as_it_found_it(capsys):
    before = signal.getsignal(signal.SIGINT)
    assert main(["zoo", "list", "--json"]) == 0
    assert signal.getsignal(signal.SIGINT) is before
    capsys.readouterr()
