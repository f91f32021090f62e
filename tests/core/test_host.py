"""host_info(): one description of a machine, in num_* keys, that loads no model or network runtime."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import zmq

import splitinfer
from splitinfer.host import MACHINE_KEYS, host_info, library_versions


def test_the_machine_is_described_in_num_keys():
    info = host_info()
    assert set(MACHINE_KEYS) | {"memory_available_bytes", "versions"} == set(info)
    assert info["num_cpus"] == os.cpu_count() and info["num_physical_cpus"] >= 1
    assert 0 < info["memory_available_bytes"] <= info["memory_total_bytes"]


def test_library_versions_are_those_installed():
    versions = library_versions()
    assert versions["onnxruntime"] == ort.__version__ and versions["numpy"] == np.__version__
    assert versions["pyzmq"] == zmq.__version__ and versions["splitinfer"] == splitinfer.__version__
    assert all(isinstance(v, str) for v in versions.values())


def test_describing_the_host_imports_neither_onnxruntime_nor_zmq():
    # A fresh interpreter: this test process has long imported both.
    code = ("import sys; from splitinfer.host import host_info; info = host_info(); "
            "print(sorted(m for m in ('onnxruntime', 'zmq') if m in sys.modules), 'onnxruntime' in "
            "info['versions'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] True"


# In a fresh interpreter each: what the allocator keeps is the process's, and this one's is the test
# runner's. A 4 MiB buffer, each page written, freed on a thread of its own (as a worker's control thread
# lets a partition's chunk go), twice: how much of it is still resident after each.
_FREED = """
import contextlib, ctypes, sys, threading, psutil
from splitinfer.host import manage_freed_memory, returning_freed_memory
managed, returning = sys.argv[1] == "managed", sys.argv[2] == "returning"
if managed:
    assert manage_freed_memory()
size, kept = 4 << 20, []
def work():
    for _ in range(2):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        before = psutil.Process().memory_info().rss
        with returning_freed_memory() if returning else contextlib.nullcontext():
            buffer = bytearray(size)
            buffer[::4096] = b"x" * (size // 4096)
            del buffer
        kept.append(psutil.Process().memory_info().rss - before)
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(*kept)
"""


def _kept(managed: str, mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _FREED, managed, mode], capture_output=True, text=True,
                         check=True)
    first, second = out.stdout.split()
    return int(first), int(second)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")
def test_a_managed_process_hands_back_what_it_frees_only_while_returning():
    assert _kept("managed", "keeping")[0] >= 3 << 20  # a run's buffers stay for the next run
    assert max(_kept("managed", "returning")) <= 1 << 20  # creating a session, taking a partition


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")
def test_returning_freed_memory_changes_nothing_in_a_process_that_does_not_manage_it():
    # glibc's own thresholds: the first 4 MiB buffer is mmapped and handed back; freeing it raises them,
    # so the second stays, returning or not (what a worker manages away).
    for mode in ("keeping", "returning"):
        first, second = _kept("unmanaged", mode)
        assert first <= 1 << 20 and second >= 3 << 20, (mode, first, second)
