"""Runtime test fixtures: the no-process-left-behind check (helper modules: see tests/conftest.py)."""

from __future__ import annotations

import time

import psutil
import pytest


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind():
    """After the whole test session, this process has no child processes left."""
    yield
    me = psutil.Process()
    deadline = time.monotonic() + 10.0
    children = me.children(recursive=True)
    while children and time.monotonic() < deadline:
        time.sleep(0.1)
        children = [c for c in me.children(recursive=True) if c.is_running()
                    and c.status() != psutil.STATUS_ZOMBIE]
    leftover = []
    for child in children:
        try:
            leftover.append(" ".join(child.cmdline()))
        except psutil.Error:
            continue
    assert not leftover, f"processes left behind: {leftover}"
