"""Local workers stop with their coordinator: close(), Ctrl-C, and a coordinator killed outright."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from helpers.runtime_models import local_cluster, mlp_parts, stages_on, whole_and_parts

from splitinfer.cluster import parse_cluster
from splitinfer.errors import WorkerError
from splitinfer.runtime import deploy_stages

HERE = Path(__file__).resolve().parent

COORDINATOR = textwrap.dedent("""
    import json, sys, threading, time
    sys.path.insert(0, {tests!r})
    from helpers.runtime_models import local_cluster, mlp_parts, stages_on, whole_and_parts
    from splitinfer.runtime import deploy_stages

    def start():
        _, parts = whole_and_parts(mlp_parts(2, width=8, batch=2))
        return deploy_stages(stages_on(parts, ["a", "b"]), local_cluster(["a", "b"]))

    if {in_thread!r}:
        box = []
        t = threading.Thread(target=lambda: box.append(start()))
        t.start(); t.join()
        session = box[0]
    else:
        session = start()
    print(json.dumps(session.worker_pids), flush=True)
    time.sleep(120)
""")


def _gone(pids, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [p for p in pids
                 if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.05)
    return False


def _coordinator(tmp_path: Path, in_thread: bool) -> tuple[subprocess.Popen, list[int]]:
    script = tmp_path / "coordinator.py"
    script.write_text(COORDINATOR.format(tests=str(HERE.parent), in_thread=in_thread))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline().decode()
    assert line, "the coordinator did not start"
    pids = list(json.loads(line).values())
    assert all(psutil.pid_exists(p) for p in pids)
    return proc, pids


@pytest.mark.parametrize("in_thread", [False, True], ids=["main-thread", "other-thread"])
def test_workers_exit_when_the_coordinator_is_killed(tmp_path, in_thread):
    proc, pids = _coordinator(tmp_path, in_thread)
    proc.kill()
    proc.wait(5)
    proc.stdout.close()
    try:
        assert _gone(pids, 5.0), "workers outlived their killed coordinator"
    finally:
        for pid in pids:  # never leave them running, even when the test fails
            if psutil.pid_exists(pid):
                os.kill(pid, signal.SIGKILL)


def test_ctrl_c_in_the_coordinator_stops_its_workers(tmp_path):
    proc, pids = _coordinator(tmp_path, False)
    proc.send_signal(signal.SIGINT)
    proc.wait(10)
    proc.stdout.close()
    assert _gone(pids, 5.0)


def test_close_stops_the_workers_and_is_idempotent():
    _, parts = whole_and_parts(mlp_parts(2, width=8, batch=2))
    session = deploy_stages(stages_on(parts, ["a", "b"]), local_cluster(["a", "b", "spare"]))
    pids = list(session.worker_pids.values())
    assert len(pids) == 3  # every local device gets a worker, spares too (for replans)
    session.close()
    session.close()
    assert _gone(pids, 5.0)


def test_a_failed_deploy_leaves_no_worker_behind():
    _, parts = whole_and_parts(mlp_parts(1, width=8, batch=2))
    cluster = parse_cluster({"devices": [{"name": "a", "providers": ["NoSuchExecutionProvider"]}]})
    before = {c.pid for c in psutil.Process().children(recursive=True)}
    with pytest.raises(WorkerError, match="NoSuchExecutionProvider"):
        deploy_stages(stages_on(parts, ["a"]), cluster)
    new = [c.pid for c in psutil.Process().children(recursive=True) if c.pid not in before]
    assert _gone(new, 5.0)
