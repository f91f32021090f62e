"""splitinfer: split deep neural network inference across devices and run it there.

The public API is re-exported here lazily, so ``import splitinfer`` stays fast
and a missing optional component only fails the call that needs it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it
_API = {
    "load_model": "splitinfer.graph",
    "analyze": "splitinfer.graph",
    "split": "splitinfer.graph",
    "verify": "splitinfer.graph",
    "Cluster": "splitinfer.cluster",
    "load_cluster": "splitinfer.cluster",
    "SplitinferError": "splitinfer.errors",
}


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'splitinfer' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
