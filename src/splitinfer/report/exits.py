"""The report's early-exit section, from a bench of a plan with early exits (``bench.json``'s ``exits``):
where requests were answered, measured against the share the plan expected, and how long each kind of
request took. The exits are what makes the expected latency lower than the plan's path to the end."""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from splitinfer.records.bench import BenchResult
from splitinfer.report.figures import new_figure
from splitinfer.report.html import render_table
from splitinfer.report.tables import Table, write_csv

MEASURED_COLOR, PLANNED_COLOR = "#4c72b0", "#c7c7c7"


def _label(name: str) -> str:
    return name or "the end"


def exit_line(bench: BenchResult) -> str:
    """One sentence: the share answered early and the latency saved against the path to the end."""
    early = sum(e.fraction for e in bench.exits if e.output)
    worst = bench.plan.worst_latency_s
    mean_ms, expected_ms = bench.latency_mean_s * 1e3, bench.predicted_latency_s * 1e3
    line = (f"{early:.0%} of {bench.num_requests} requests were answered by an early exit; the mean "
            f"latency was {mean_ms:.1f} ms against {expected_ms:.1f} ms expected")
    if worst is not None:
        line += f", and {worst * 1e3:.1f} ms predicted for a request that takes no exit"
    return line + "."


def exit_table(bench: BenchResult) -> Table:
    """Per exit (the end last): requests, measured and planned share, latency median, p95 and mean (s)."""
    header = ["answered_at", "requests", "share", "planned_share", "latency_median_s", "latency_p95_s",
              "latency_mean_s"]
    rows: list[list[object]] = [[_label(e.output), e.count, e.fraction, e.predicted_fraction,
                                 e.latency_median_s, e.latency_p95_s, e.latency_mean_s] for e in bench.exits]
    return header, rows


def exit_bars(bench: BenchResult) -> Figure:
    """Left: each exit's measured share beside the plan's; right: each exit's median latency, to p95."""
    fig, (left, right) = new_figure(1, 2, figsize=(10.5, 4.0))
    names = [_label(e.output) for e in bench.exits]
    x = np.arange(len(names))
    left.bar(x - 0.2, [e.fraction * 100 for e in bench.exits], width=0.4, color=MEASURED_COLOR,
             label="measured")
    left.bar(x + 0.2, [e.predicted_fraction * 100 for e in bench.exits], width=0.4, color=PLANNED_COLOR,
             label="plan (profiled)")
    left.set_xticks(x, names)
    left.set_ylabel("share of requests (%)")
    left.legend(fontsize=8)
    left.set_title("Where requests were answered", fontsize=10)
    answered = [e for e in bench.exits if e.count]
    xs = np.arange(len(answered))
    medians = [e.latency_median_s * 1e3 for e in answered]
    spread = [max(0.0, e.latency_p95_s * 1e3 - m) for e, m in zip(answered, medians, strict=True)]
    right.bar(xs, medians, width=0.55, color=MEASURED_COLOR, yerr=[[0] * len(xs), spread], capsize=4)
    right.axhline(bench.predicted_latency_s * 1e3, color="black", ls="--", lw=1, label="expected (plan)")
    right.set_xticks(xs, [_label(e.output) for e in answered])
    right.set_ylabel("latency (ms): median, whisker to p95")
    right.legend(fontsize=8)
    right.set_title("Latency of the requests each answered", fontsize=10)
    fig.tight_layout()
    return fig


def exit_html(bench: BenchResult, figure_html: str, out: Path, notify: Callable[[Path], None]) -> str:
    """The section's sentence, figure and table (``exits.csv`` written into ``out``)."""
    table = exit_table(bench)
    notify(write_csv(table, out / "exits.csv"))
    return (f"<p>{escape(exit_line(bench))}</p>" + figure_html
            + render_table(table, "Early exits", raw_csv="exits.csv"))
