"""A worker starts ONNX Runtime when it starts (device/_execution.start_runtime), so that a deploy grows it
by its stage alone, as a plan predicts from blocks profiled in a worker whose runtime had started: the
runtime's environment (about 6 MB) is paid once, at start, not by the first deploy."""

from __future__ import annotations

import subprocess
import sys

MB = 1 << 20

_CHILD = """
import sys, numpy as np, psutil
from splitinfer.graph.inference import create_inference_session
from splitinfer.profile.device import TRIVIAL_INPUT, trivial_partition
from splitinfer.runtime.device._execution import start_runtime
if sys.argv[1] == "start":
    start_runtime(["CPUExecutionProvider"], 1)
before = psutil.Process().memory_info().rss
session = create_inference_session(trivial_partition(), ["CPUExecutionProvider"], 1)
session.run(None, {TRIVIAL_INPUT: np.zeros(1, np.float32)})
print(psutil.Process().memory_info().rss - before)
"""


def _first_session_growth(start: bool) -> int:
    """Resident growth of a fresh process's first trivial session, with or without the runtime started."""
    out = subprocess.run([sys.executable, "-c", _CHILD, "start" if start else "cold"], capture_output=True,
                         text=True, timeout=120, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def test_a_started_runtime_leaves_a_first_session_only_its_own_memory():
    cold, started = _first_session_growth(False), _first_session_growth(True)
    assert started < 2 * MB, f"the first session after start_runtime took {started / MB:.1f} MB"
    assert cold > started + 2 * MB, (cold, started)  # what starting the runtime takes off the first deploy


def test_a_provider_that_cannot_start_leaves_the_worker_to_start_anyway():
    from splitinfer.runtime.device._execution import start_runtime

    start_runtime(["NoSuchExecutionProvider"], 1)  # said by the deploy that asks for it, not here
