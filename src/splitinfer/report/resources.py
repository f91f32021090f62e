"""The report's resource section, from a bench's samples (``bench.json``'s ``resources``): per resource a
figure over the bench's time, one line per device with its mean dashed, and a table of each device's
mean, standard deviation, median and largest value per resource (``resources.csv``)."""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from splitinfer.records.bench import BenchResult
from splitinfer.records.resources import RESOURCES, ResourceSeries, resource_stats
from splitinfer.report.figures import new_figure
from splitinfer.report.html import render_table
from splitinfer.report.inputs import PALETTE
from splitinfer.report.tables import Table, write_csv

# Per resource: the figure's stem, title and caption.
FIGURES = {
    "cpu_percent": ("resources_cpu", "CPU usage over time",
                    "Each worker process's CPU use while the bench ran (100% = one core busy); the dashed "
                    "line is its mean."),
    "rss_bytes": ("resources_memory", "Memory over time",
                  "Each worker process's resident memory (RSS) while the bench ran; the dashed line is its "
                  "mean."),
    "gpu_util_percent": ("resources_gpu", "GPU utilisation over time",
                         "The utilisation of each GPU worker's GPU (NVML: the whole GPU) while the bench "
                         "ran; the dashed line is its mean."),
    "gpu_memory_bytes": ("resources_gpu_memory", "GPU memory over time",
                         "Memory used on each GPU worker's GPU (all of its processes) while the bench ran; "
                         "the dashed line is its mean."),
}


def sampled(bench: BenchResult) -> dict[str, ResourceSeries]:
    """The devices with samples (a series left empty has only its note to show)."""
    return {device: s for device, s in bench.resources.items() if s.times_s}


def resource_figures(bench: BenchResult) -> list[str]:
    """The resources with samples on some device, in :data:`RESOURCES` order (one figure each)."""
    series = sampled(bench).values()
    return [attribute for attribute, *_ in RESOURCES if any(getattr(s, attribute) for s in series)]


def resource_over_time(bench: BenchResult, attribute: str, colors: dict[str, str] | None = None) -> Figure:
    """One resource over the bench's time: a line per device (its colour elsewhere in the report), its
    mean dashed, and its mean, standard deviation and median in the legend."""
    _, label, unit, scale = next(r for r in RESOURCES if r[0] == attribute)
    fig, ax = new_figure(figsize=(7.5, 3.6))
    for k, (device, series) in enumerate(sampled(bench).items()):
        stats = resource_stats(series, attribute)
        if stats is None:
            continue
        values = np.asarray(getattr(series, attribute), dtype=np.float64) * scale
        color = (colors or {}).get(device, PALETTE[k % len(PALETTE)])
        ax.plot(series.times_s, values, color=color, lw=1.2, marker="." if len(values) < 30 else None,
                label=f"{device} (mean {stats.mean:.3g}, std {stats.std:.2g}, median "
                      f"{stats.median:.3g} {unit})")
        ax.axhline(stats.mean, color=color, ls="--", lw=0.9, alpha=0.8)
    ax.set_xlabel("time since the first measured request (s)")
    ax.set_ylabel(f"{label} ({unit})")
    ax.set_ylim(bottom=0)
    ax.set_title(FIGURES[attribute][1])
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def resource_table(bench: BenchResult) -> Table:
    """Per device and resource, in the resource's unit: mean, standard deviation, median, largest."""
    header = ["device", "resource", "unit", "mean", "std", "median", "max", "num_samples"]
    rows: list[list[object]] = []
    for device, series in sampled(bench).items():
        for attribute, label, unit, _ in RESOURCES:
            stats = resource_stats(series, attribute)
            if stats is not None:
                rows.append([device, label, unit, stats.mean, stats.std, stats.median, stats.max,
                             stats.num_samples])
    return header, rows


def resource_line(bench: BenchResult) -> str:
    """One sentence: what was sampled, how often, and what the figures' percentages mean."""
    intervals = sorted({s.interval_s for s in sampled(bench).values()})
    cores = sorted({s.num_cpus for s in sampled(bench).values()})
    every = " or ".join(f"{i:g} s" for i in intervals)
    return (f"Each worker of the plan sampled its process's CPU use and resident memory (and, on a GPU "
            f"worker, its GPU's) every {every} during the {bench.num_requests} measured requests. CPU % "
            f"counts one busy core as 100% (the workers' machines have {' or '.join(map(str, cores))} "
            "cores).")


def resource_html(bench: BenchResult, figure_html: str, out: Path, notify: Callable[[Path], None]) -> str:
    """The section's sentence, figures, notes and table (``resources.csv`` written into ``out``)."""
    notes = "".join(f'<p class="note">{escape(device)}: {escape(s.note)}</p>'
                    for device, s in bench.resources.items() if s.note)
    if not sampled(bench):
        return notes or '<p class="note">No worker sent samples.</p>'
    table = resource_table(bench)
    notify(write_csv(table, out / "resources.csv"))
    shown = (table[0], [[*row[:3], *[round(float(v), 1) for v in row[3:7]], row[7]] for row in table[1]])
    return (f"<p>{escape(resource_line(bench))}</p>" + figure_html + notes
            + render_table(shown, "Resource use per device", raw_csv="resources.csv",
                           note="mean, std (standard deviation), median and max of the samples, in the unit "
                                "given; the CSV has them unrounded."))
