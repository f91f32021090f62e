"""A small zoo model with a hand-written profile and a plan, for deploy, bench and gateway tests.

The profile's times are made up but plausible (proportional to each block's FLOPs,
scaled by the device's declared slowdown): the planner only needs numbers. Its links
are measured-looking loopback figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import onnxruntime as ort

from splitinfer import zoo
from splitinfer.cluster import Cluster
from splitinfer.graph import Model, analyze, load_model
from splitinfer.graph.analysis import DEFAULT_MAX_CUT_TENSORS
from splitinfer.plan import Constraints, Plan, solve, with_provenance
from splitinfer.profile.problem import build_problem
from splitinfer.profile.profiler import block_infos
from splitinfer.profile.schema import DeviceProfile, LinkProfile, ModelInfo, Profile, Stats

MAX_BLOCKS = 8


@lru_cache(maxsize=4)
def model_bytes(name: str = "resnet18") -> bytes:
    """A tiny zoo model, serialised."""
    return zoo.build_small(name).SerializeToString()


def _stats(seconds: float) -> Stats:
    return Stats(median_s=seconds, mean_s=seconds, p10_s=seconds * 0.95, p90_s=seconds * 1.1,
                 std_s=seconds * 0.05, n=20)


def fake_profile(data: bytes, cluster: Cluster, *, name: str = "resnet18",
                 seconds_per_flop: float = 2e-10) -> Profile:
    """A profile of ``data`` on every device of ``cluster``: FLOPs x seconds_per_flop x slowdown."""
    model = load_model(data)
    analysis = analyze(model, DEFAULT_MAX_CUT_TENSORS, MAX_BLOCKS)
    blocks = block_infos(analysis)
    devices = {d.name: DeviceProfile(blocks=tuple(_stats(max(1e-5, b.flops * seconds_per_flop * d.slowdown))
                                                  for b in analysis.blocks), num_threads=1,
                                     date="2026-01-01T00:00:00Z")
               for d in cluster.devices}
    links = tuple(LinkProfile(a, b, latency_s=2e-4, bandwidth_bps=1e9, r2=0.99)
                  for a in cluster.device_names for b in cluster.device_names if a != b)
    info = ModelInfo(sha256=model.sha256, name=name, max_cut_tensors=DEFAULT_MAX_CUT_TENSORS,
                     max_blocks=MAX_BLOCKS)
    return Profile(model=info, blocks=blocks, input_bytes=analysis.input_bytes,
                   output_bytes=analysis.output_bytes, devices=devices, links=links)


def pinned_plan(profile: Profile, cluster: Cluster, pins: Sequence[tuple[int, str]],
                objective: str = "latency") -> Plan:
    """The best plan with ``pins`` (block, device), stamped with the model's sha256."""
    (plan,) = solve(build_problem(profile, cluster), objective, Constraints(pins=tuple(pins)))
    return with_provenance(plan, model_sha256=profile.model.sha256, model=profile.model.name)


@dataclass(frozen=True)
class Reference:
    """The whole model run in ONNX Runtime."""

    model: Model
    session: ort.InferenceSession

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feeds)


def reference(data: bytes) -> Reference:
    """The whole model, loaded and in an ONNX Runtime session (1 thread)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return Reference(load_model(data), session)
