"""Energy as DIME shows it: each battery device's joules per request split into compute, communication and
idle (``Plan.energy_split``), and the least energy under each latency budget (:mod:`splitinfer.plan.sweep`).

The report's "Energy" section: a stacked bar per battery device of the chosen plan and a table of every
plan's split (``energy.csv``); a report of plans without power figures has none. The sweep's CSV and plot
are what ``splitinfer energy sweep`` writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

from splitinfer.errors import SplitinferError
from splitinfer.plan import Plan
from splitinfer.plan.sweep import SweepPoint
from splitinfer.report.figures import DPI, STYLE, new_figure, styled
from splitinfer.report.html import render_table
from splitinfer.report.tables import Table, write_csv

PARTS = ("compute", "communication", "idle")
PART_COLORS = {"compute": "#4c72b0", "communication": "#dd8452", "idle": "#c7c7c7"}
ENERGY_NOTE = ("Predicted joules per request of each battery device: compute while it runs its stages (and "
               "compresses or restores tensors), communication while its radio sends or receives (radio_w x "
               "seconds + radio_j_per_byte x bytes), idle through the rest of the request's latency; the "
               "three add up to its share of the plan's energy_j.")


def has_energy_split(plans: Sequence[Plan]) -> bool:
    return any(p.energy_split for p in plans)


def energy_table(plans: Sequence[Plan]) -> Table:
    """One row per plan and battery device: the joules of each part and their sum."""
    header = ["objective", "rank", "device", "compute_j", "communication_j", "idle_j", "total_j"]
    rows: list[list[object]] = [
        [p.objective, p.rank, device, s.compute_j, s.communication_j, s.idle_j, s.total_j]
        for p in plans for device, s in p.energy_split.items()
    ]
    return header, rows


@styled
def energy_bars(plan: Plan) -> Figure:
    """The plan's joules per battery device, stacked: compute, communication, idle."""
    devices = list(plan.energy_split)
    fig, ax = new_figure(figsize=(max(4.5, 1.3 * len(devices) + 3), 3.8))
    x = np.arange(len(devices))
    bottom = np.zeros(len(devices))
    for part in PARTS:
        joules = np.array([getattr(plan.energy_split[d], f"{part}_j") for d in devices])
        ax.bar(x, joules, bottom=bottom, width=0.55, color=PART_COLORS[part], label=part)
        bottom += joules
    ax.set_xticks(x, devices)
    ax.set_xlim(-0.8, len(devices) - 0.2)  # one device: a bar, not a wall
    ax.set_ylim(0, max(float(bottom.max(initial=0.0)), 1e-12) * 1.25)  # room for the legend
    ax.set_ylabel("energy per request (J, predicted)")
    ax.set_title(f"Energy per battery device: the {plan.objective} plan #{plan.rank}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def energy_html(plans: Sequence[Plan], figure_html: str, out: Path, notify: Callable[[Path], None]) -> str:
    """The section: a sentence, the figure (rendered by the writer) and the table (``energy.csv``)."""
    table = energy_table(plans)
    notify(write_csv(table, out / "energy.csv"))
    return (f"<p>{escape(_line(plans))}</p>" + figure_html
            + render_table(table, "Energy per battery device", raw_csv="energy.csv", note=ENERGY_NOTE))


def _line(plans: Sequence[Plan]) -> str:
    first = next(p for p in plans if p.energy_split)
    parts = {part: sum(getattr(s, f"{part}_j") for s in first.energy_split.values()) for part in PARTS}
    total = sum(parts.values())
    shares = ", ".join(f"{part} {j / total:.0%}" if total > 0 else f"{part} 0 J" for part, j in parts.items())
    return f"{first.objective} #{first.rank} spends {total:.4g} J per request on battery devices: {shares}."


def sweep_table(points: Sequence[SweepPoint]) -> Table:
    """One row per budget; a budget no plan meets keeps its row, ``feasible`` false and no figures."""
    header = ["budget_s", "feasible", "latency_s", "energy_j", "compute_j", "communication_j", "idle_j",
              "stages"]
    rows: list[list[object]] = []
    for p in points:
        figures = (p.latency_s, p.energy_j, p.compute_j, p.communication_j, p.idle_j)
        rows.append([p.budget_s, p.feasible, *("" if v is None else v for v in figures), p.stages])
    return header, rows


def write_sweep_csv(points: Sequence[SweepPoint], path: Path) -> Path:
    return write_csv(sweep_table(points), path)


@styled
def sweep_plot(points: Sequence[SweepPoint]) -> Figure:
    """Least energy per request against the latency budget (feasible budgets only), stacked by part; in steps,
    since the plan, and so its energy, holds from one budget until the next one changes it."""
    feasible = [p for p in points if p.feasible]
    fig, ax = new_figure(figsize=(7.0, 4.2))
    budgets_ms = np.array([p.budget_s * 1e3 for p in feasible])
    # The last budget's plan holds beyond it too: its step is drawn as wide as the one before (or 5%).
    last = np.diff(budgets_ms)[-1] if len(budgets_ms) > 1 else 0.05 * budgets_ms[-1]
    edges = np.append(budgets_ms, budgets_ms[-1] + last)
    stacks = [np.array([getattr(p, f"{part}_j") for p in feasible]) for part in PARTS]
    ax.stackplot(edges, *(np.append(v, v[-1]) for v in stacks), colors=[PART_COLORS[part] for part in PARTS],
                 labels=list(PARTS), alpha=0.85, step="post")
    energy = np.array([p.energy_j for p in feasible])
    ax.plot(edges, np.append(energy, energy[-1]), color="black", lw=1, drawstyle="steps-post", label="energy")
    ax.plot(budgets_ms, energy, color="black", marker="o", markersize=3, lw=0)
    ax.set_xlabel("latency budget (ms)")
    ax.set_ylabel("least energy per request (J, battery devices)")
    missing = len(points) - len(feasible)
    ax.set_title("Energy against latency budget" + (f" ({missing} budgets no plan meets)" if missing else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_sweep_plot(points: Sequence[SweepPoint], path: Path) -> Path:
    """:func:`sweep_plot` into ``path`` (its suffix picks the format: .png, .svg, .pdf)."""
    if not any(p.feasible for p in points):
        raise SplitinferError("no plan meets any of the latency budgets: nothing to plot",
                              "give larger budgets")
    with mpl.rc_context(STYLE):
        sweep_plot(points).savefig(path, dpi=DPI, bbox_inches="tight")
    return path
