"""Runtime test fixtures: the test models as ``runtime_test_models``, the no-process-left-behind check."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import psutil
import pytest


def _load_models() -> None:
    # importlib mode does not put this folder on sys.path, and tests/graph has a models.py too.
    name = "runtime_test_models"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("models.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_load_models()


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
