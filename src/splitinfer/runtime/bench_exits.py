"""Benching a plan with early exits: the plan predicts expected values (plan/exits.py), so they are
compared with means over every request, a stage or hop a request did not reach counting 0 for it; and
each exit's share of the requests and their latencies are reported beside the share the plan expects."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from splitinfer.plan import Plan
from splitinfer.records.bench import ExitBench, HopBench, StageBench, rel_error
from splitinfer.runtime.coordinator.timing import Result


def _p95(values: Sequence[float]) -> float:
    return float(np.percentile(values, 95)) if len(values) else 0.0


def compare_stages(plan: Plan, results: Sequence[Result]) -> tuple[StageBench, ...]:
    """Per stage: the predicted expected compute against the mean busy time over every request."""
    out = []
    for k, stage in enumerate(plan.stages):
        busy = [r.timing.stages[k].busy_s for r in results if len(r.timing.stages) > k]
        mean = float(np.sum(busy) / len(results))
        out.append(StageBench(k, stage.device, stage.compute_s, mean, _p95(busy),
                              rel_error(stage.compute_s, mean), stage.precision))
    return tuple(out)


def compare_hops(plan: Plan, results: Sequence[Result]) -> tuple[HopBench, ...]:
    """Per hop of the plan: its expected seconds against the mean over every request (0 for those that
    did not take it). A request's hops are the upload, the cuts into the stages it reached, then its
    result's hop: the return from the end, or its exit's."""
    out = []
    cut = 0
    exits = iter(name for name, share in plan.exit_mix.items() if share > 0)  # the exit hops' order
    for hop in plan.hops:
        exit_name = next(exits) if hop.kind == "exit" else ""
        taken: list[tuple[float, int]] = []
        for r in results:
            hops, stages = r.timing.hops, r.timing.stages
            if hop.kind == "upload":
                taken.append((hops[0].transfer_s, hops[0].num_bytes))
            elif hop.kind == "cut" and len(stages) > cut + 1:
                taken.append((hops[cut + 1].transfer_s, hops[cut + 1].num_bytes))
            elif (hop.kind == "return" and not r.exit) or (hop.kind == "exit" and r.exit == exit_name):
                taken.append((hops[-1].transfer_s, hops[-1].num_bytes))
        cut += hop.kind == "cut"
        seconds = [t for t, _ in taken]
        mean = float(np.sum(seconds) / len(results))
        sent = int(np.median([n for _, n in taken])) if taken else 0
        out.append(HopBench(hop.src, hop.dst, hop.kind, sent, hop.transfer_s, mean, _p95(seconds),
                            rel_error(hop.transfer_s, mean), predicted_bytes=hop.num_bytes,
                            compression=hop.compression))
    return tuple(out)


def compare_exits(plan: Plan, results: Sequence[Result]) -> tuple[ExitBench, ...]:
    """Each exit's share of the requests and their latencies, then the end's ('')."""
    expected = {**plan.exit_mix, "": max(0.0, 1.0 - sum(plan.exit_mix.values()))}
    out = []
    for name, predicted in expected.items():
        latencies = [r.timing.latency_s for r in results if r.exit == name]
        arr = np.asarray(latencies, dtype=np.float64)
        out.append(ExitBench(name, len(latencies), len(latencies) / len(results), predicted,
                             float(np.median(arr)) if arr.size else 0.0, _p95(latencies),
                             float(arr.mean()) if arr.size else 0.0))
    return tuple(out)
