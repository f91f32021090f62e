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
    "quantize_model": "splitinfer.graph.quantize",
    "quantize_partitions": "splitinfer.graph.quantize",
    "Cluster": "splitinfer.cluster",
    "load_cluster": "splitinfer.cluster",
    "SplitinferError": "splitinfer.errors",
    "load_profile": "splitinfer.profile.files",
    "save_profile": "splitinfer.profile.files",
    "merge_profiles": "splitinfer.profile.files",
    "profile_model": "splitinfer.profile.device",
    "build_problem": "splitinfer.profile.problem",
    "solve": "splitinfer.plan",
    "Constraints": "splitinfer.plan",
    "Plan": "splitinfer.plan",
    "plan_to_json": "splitinfer.plan",
    "plan_from_json": "splitinfer.plan",
    "profile_cluster": "splitinfer.runtime.profiling",
    "refine": "splitinfer.runtime.refine",
    "load_bench": "splitinfer.records",
    "make_app": "splitinfer.runtime.gateway",
    "deploy": "splitinfer.runtime.coordinator.deploy",
    "bench": "splitinfer.runtime.bench",
    "write_report": "splitinfer.report",
    "run_demo": "splitinfer.demo",
}


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'splitinfer' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
