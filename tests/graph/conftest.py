"""Make the small test models importable as ``graph_test_models``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _load_models() -> None:
    name = "graph_test_models"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("models.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_load_models()
