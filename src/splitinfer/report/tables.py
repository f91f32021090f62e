"""The report's tables as rows of strings (for HTML) and as CSV files (raw numbers in seconds and bytes)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from splitinfer.plan import Hop, Plan, Stage, describe_stages
from splitinfer.profile.schema import Profile
from splitinfer.report.inputs import hop_s, request_steps

Table = tuple[list[str], list[list[Any]]]  # header, rows


def bytes_label(value: float, _pos: object = None) -> str:
    """Bytes in SI units for axes and labels: 802816 -> '803 kB'."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:g} B"


def count_label(value: float, _pos: object = None) -> str:
    """A count with a k/M/G suffix for axes: 3.4e8 -> '340M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:g}"


def quality_label(cost: float) -> str:
    """A plan's quality cost (a fraction) for people: 0.008 -> '0.80% top-1 agreement drop'."""
    return f"{cost:.2%} top-1 agreement drop"


def block_table(profile: Profile, op_names: Sequence[str] | None = None) -> Table:
    """One row per block: static figures, then the median seconds on every device ('' = cannot run)."""
    header = ["block", "num_nodes", "flops", "num_params", "param_bytes", "output_bytes", "cut_bytes"]
    if op_names is not None:
        header.insert(2, "main_op")
    devices = list(profile.devices)
    header += [f"{d}_median_s" for d in devices]
    rows = []
    for b in profile.blocks:
        row: list[Any] = [b.index, len(b.nodes), b.flops, b.num_params, b.param_bytes, b.output_bytes,
                          b.cut_bytes]
        if op_names is not None:
            row.insert(2, op_names[b.index])
        for d in devices:
            s = profile.devices[d].blocks[b.index]
            row.append("" if s is None else s.median_s)
        rows.append(row)
    return header, rows


def plan_table(plans: Sequence[Plan]) -> Table:
    """One row per plan: objective, rank, predicted figures, how it is known to be optimal
    (``certificate``, the proven ``bound`` on the figure the objective minimises and the MILP's
    ``gap``: see :class:`.Plan`), stages. When a plan chose precisions or compressions (or predicts
    a quality cost), also each stage's precision, each hop's compression, the seconds spent
    compressing and restoring, and the quality cost (a fraction of top-1 agreement)."""
    tradeoffs = any(p.has_tradeoffs or p.quality_cost is not None for p in plans)
    header = ["objective", "rank", "latency_s", "compute_s", "transfer_s", "bottleneck_s", "throughput_rps",
              "bytes_sent", "upload_bytes", "energy_j", "certificate", "bound", "gap", "solver", "num_stages",
              "stages"]
    if tradeoffs:
        header[5:5] = ["codec_s"]
        header[-1:-1] = ["precisions", "compressions", "quality_cost"]
    rows = []
    for p in plans:
        row = [p.objective, p.rank, p.latency_s, p.compute_s, p.transfer_s, p.bottleneck_s,
               "inf" if math.isinf(p.throughput_rps) else p.throughput_rps, p.bytes_sent, p.upload_bytes,
               "" if p.energy_j is None else p.energy_j, p.certificate_label,
               "" if p.bound is None else p.bound, "" if p.gap is None else p.gap, p.solver, len(p.stages),
               describe_stages(p)]
        if tradeoffs:
            row[5:5] = [p.codec_s]
            row[-1:-1] = [", ".join(s.precision for s in p.stages),
                          ", ".join(f"{h.kind} {h.compression}" for h in _hops_in_order(p)),
                          "" if p.quality_cost is None else p.quality_cost]
        rows.append(row)
    return header, rows


def _hops_in_order(plan: Plan) -> list[Hop]:
    return [h for h in request_steps(plan) if isinstance(h, Hop)]


def plan_steps_table(plan: Plan) -> Table:
    """One plan step by step, as a request meets them: each stage (its device, blocks, precision and
    compute) and each hop (its ends, compression, bytes on the wire, transfer, and the seconds spent
    compressing on the sender and restoring on the receiver)."""
    header = ["step", "where", "blocks", "precision", "compression", "num_bytes", "compute_s", "transfer_s",
              "codec_s", "total_s"]
    rows: list[list[Any]] = []
    stages = iter(range(len(plan.stages)))
    for step in request_steps(plan):
        if isinstance(step, Stage):
            rows.append([f"stage {next(stages)}", step.device, f"{step.first_block}-{step.last_block}",
                         step.precision, "", "", step.compute_s, "", "", step.compute_s])
        else:
            rows.append([step.kind, f"{step.src} -> {step.dst}", "", "", step.compression, step.num_bytes, "",
                         step.transfer_s, step.codec_s, hop_s(step)])
    return header, rows


def bench_table(bench: Any) -> Table:
    """Predicted against measured: every stage and hop, then the whole request.

    ``rel_error``: (predicted - measured) / measured, of the median (as in the bench file).
    """
    header = ["part", "where", "num_bytes", "predicted_s", "measured_median_s", "measured_p95_s", "rel_error"]
    rows: list[list[Any]] = [
        [f"stage {s.stage}", s.device, "", s.predicted_s, s.measured_median_s, s.measured_p95_s, s.rel_error]
        for s in bench.stages
    ]
    rows += [[h.kind, f"{h.src} -> {h.dst}", h.num_bytes, h.predicted_s, h.measured_median_s,
              h.measured_p95_s, h.rel_error] for h in bench.hops]
    rows.append(["request", "end to end", "", bench.predicted_latency_s, bench.latency_median_s,
                 bench.latency_p95_s, bench.latency_rel_error])
    return header, rows


def write_csv(table: Table, path: Path) -> Path:
    """Write a table as CSV (floats in shortest round-trip form)."""
    header, rows = table
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([repr(v) if isinstance(v, float) else v for v in row] for row in rows)
    return path
