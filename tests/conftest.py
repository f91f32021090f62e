"""Settings shared by all tests (shared helper modules: the ``helpers`` package, tests/helpers/)."""

from __future__ import annotations

import os
import tempfile

# Tests run many small ONNX Runtime sessions side by side: one intra-op thread
# each keeps a 2-core machine responsive and results deterministic.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Workers the tests start keep their partition caches (and converted models) under this folder, not in
# the home directory; workers they spawn inherit it.
os.environ.setdefault("SPLITINFER_CACHE_DIR", tempfile.mkdtemp(prefix="splitinfer-test-cache-"))

from hypothesis import HealthCheck, settings

# Property tests build ONNX models and run sessions: no per-example deadline.
settings.register_profile(
    "splitinfer", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("splitinfer")

