"""The tables ``splitinfer plan`` (and the demo) prints: ranked plans, their figures and certificates; each
plan's energy per battery device, split into compute, communication and idle."""

from __future__ import annotations

import math

from rich.table import Table

from splitinfer.plan import Plan, describe_stages


def format_plans(plans: list[Plan], title: str = "") -> Table:
    """A table of ranked plans: predicted figures, how each is known to be optimal, and stages."""
    table = Table(title=title or None, title_justify="left")
    pareto = any(p.objective.startswith("pareto") for p in plans)
    energy = any(p.energy_j is not None for p in plans)
    quality = any(p.quality_cost is not None for p in plans)
    exits = any(p.exit_mix for p in plans)
    columns = (["front"] if pareto else []) + ["#", "latency s"] + (["no exit s"] if exits else [])
    columns += ["compute s", "transfer s"]
    columns += (["codec s"] if quality else []) + ["sent MB"] + (["upload MB"] if pareto else [])
    columns += ["req/s"] + (["energy J"] if energy else []) + (["quality"] if quality else [])
    for name in columns:
        table.add_column(name, justify="left" if name == "front" else "right", no_wrap=True)
    table.add_column("stages", overflow="fold", min_width=16)
    # Last and wrapping: a narrow terminal crops it before the figures and the stages; wide enough for
    # "MILP gap 0.00%" on one line, the time limit's words on a second.
    table.add_column("certificate", min_width=14)
    for p in plans:
        row = [p.objective.removeprefix("pareto-")] if pareto else []
        row += [str(p.rank), f"{p.latency_s:.4f}"]
        row += [f"{p.worst_latency_s:.4f}" if p.worst_latency_s is not None else "-"] if exits else []
        row += [f"{p.compute_s:.4f}", f"{p.transfer_s:.4f}"]
        row += [f"{p.codec_s:.4f}"] if quality else []
        row += [f"{p.bytes_sent / 1e6:.3f}"] + ([f"{p.upload_bytes / 1e6:.3f}"] if pareto else [])
        row.append("inf" if math.isinf(p.throughput_rps) else f"{p.throughput_rps:.3f}")
        if energy:
            row.append("-" if p.energy_j is None else f"{p.energy_j:.4f}")
        if quality:
            row.append("-" if p.quality_cost is None else f"{p.quality_cost:.2%}")
        table.add_row(*row, describe_stages(p), p.certificate_label)
    if exits:
        mix = ", ".join(f"{name} {share:.0%}" for name, share in plans[0].exit_mix.items())
        table.caption = (f"early exits answer {mix} of the requests (profiled): figures are expected values; "
                         "no exit s: a request that takes none")
        table.caption_justify = "left"
    return table



MAX_ENERGY_PLANS = 5  # plans whose energy split is listed (a front may have dozens)


def energy_tables(plans: list[Plan]) -> list[Table]:
    """Each plan's predicted joules per battery device: compute, communication (the radio), idle; one
    table, or none when no plan has power figures (to print after :func:`format_plans`)."""
    shown = [p for p in plans if p.energy_split][:MAX_ENERGY_PLANS]
    if not shown:
        return []
    table = Table(title="energy per battery device (J per request)", title_justify="left")
    for name in ("#", "device", "compute J", "communication J", "idle J", "total J"):
        table.add_column(name, justify="left" if name == "device" else "right", no_wrap=True)
    for p in shown:
        front = p.objective.removeprefix("pareto-") + " " if p.objective.startswith("pareto") else ""
        label = f"{front}{p.rank}"
        for device, s in p.energy_split.items():
            joules = (s.compute_j, s.communication_j, s.idle_j, s.total_j)
            table.add_row(label, device, *(f"{j:.4f}" for j in joules))
    listed = sum(1 for p in plans if p.energy_split)
    if listed > len(shown):
        table.caption = f"the first {len(shown)} of {listed} plans"
        table.caption_justify = "left"
    return [table]
