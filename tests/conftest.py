"""Fixtures shared by all tests."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# Tests run many small ONNX Runtime sessions side by side: one intra-op thread
# each keeps a 2-core machine responsive and results deterministic.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from hypothesis import HealthCheck, settings

# Property tests build ONNX models and run sessions: no per-example deadline.
settings.register_profile(
    "splitinfer", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("splitinfer")


def _register(name: str, path: Path) -> None:
    """Make a helper module importable by ``name``: importlib mode puts no test folder on sys.path,
    and several folders have a models.py."""
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_HERE = Path(__file__).parent
_register("runtime_test_models", _HERE / "runtime" / "models.py")
_register("deploy_helpers", _HERE / "runtime" / "deploy_helpers.py")
