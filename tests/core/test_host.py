"""host_info(): one description of a machine, in num_* keys, that loads no model or network runtime."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
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
