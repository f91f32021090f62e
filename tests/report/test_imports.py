"""The report reads plan and bench files without the runtime: it loads neither zmq nor onnxruntime."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_report_loads_neither_zmq_nor_onnxruntime():
    # A fresh interpreter: this test process has long imported both.
    code = ("import sys, splitinfer.report, splitinfer.records; "
            "print(sorted(m for m in ('zmq', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
