"""Figures of the profile: latency per block per device, block statistics, the block graph by stage.

Every function returns a matplotlib Figure made without pyplot (no backend, no GUI, no
global state: safe on servers, in notebooks and in threads); :func:`save_figure` writes
it as PNG and SVG. Figures of plans and of a bench run are in
:mod:`splitinfer.report.plan_figures`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Patch, Rectangle
from matplotlib.ticker import FuncFormatter, MaxNLocator

from splitinfer.plan import Plan, describe_stages
from splitinfer.profile.schema import Profile
from splitinfer.report.tables import bytes_label, count_label

DPI = 110
STYLE = {"svg.fonttype": "none", "axes.grid": True, "grid.alpha": 0.3, "font.size": 9,
         "axes.titlesize": 11, "axes.titleweight": "bold"}
F = TypeVar("F", bound=Callable[..., Any])


def styled(fn: F) -> F:
    """Run ``fn`` under the report's matplotlib style, leaving the global rcParams alone."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with mpl.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """A figure and its axes, without pyplot (``kwargs`` as for ``Figure.subplots``, plus figsize)."""
    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(nrows, ncols, **kwargs)


@styled
def save_figure(fig: Figure, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write ``stem.png`` (dpi 110) and ``stem.svg`` into ``out_dir``; close the figure."""
    png, svg = out_dir / f"{stem}.png", out_dir / f"{stem}.svg"
    fig.savefig(png, dpi=DPI, bbox_inches="tight")
    fig.savefig(svg, bbox_inches="tight")
    return png, svg


def block_ticks(ax: Axes, num_blocks: int) -> None:
    """Integer block ticks, thinned so that 64 blocks do not crowd the axis."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=min(num_blocks, 32), integer=True))
    ax.set_xlim(-0.7, num_blocks - 0.3)


def _width(num_blocks: int) -> float:
    return min(16.0, max(7.0, 0.2 * num_blocks + 3))


@styled
def latency_per_block(profile: Profile, colors: dict[str, str]) -> Figure:
    """Median time of every block on every device (ms, log scale), with the p10-p90 band."""
    num = len(profile.blocks)
    fig, ax = new_figure(figsize=(_width(num), 4.2))
    x = np.arange(num)
    medians_all = []
    for name, dev in profile.devices.items():
        med = np.array([np.nan if s is None else s.median_s * 1e3 for s in dev.blocks])
        lo = np.array([np.nan if s is None else s.p10_s * 1e3 for s in dev.blocks])
        hi = np.array([np.nan if s is None else s.p90_s * 1e3 for s in dev.blocks])
        color = colors.get(name, "black")
        ax.plot(x, med, marker="o", markersize=3, lw=1.4, color=color, label=name)
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
        medians_all += [v for v in med if np.isfinite(v) and v > 0]
    spread = max(medians_all) / min(medians_all) if medians_all else 1.0
    if spread > 30:
        ax.set_yscale("log")
    ax.set_xlabel("block")
    ax.set_ylabel("time per run (ms, median)" + (", log scale" if spread > 30 else ""))
    ax.set_title(f"Latency per block per device (band: p10-p90){_missing_note(profile)}")
    block_ticks(ax, num)
    if profile.devices:
        ax.legend(title="device", loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def _missing_note(profile: Profile) -> str:
    missing = sum(s is None for dev in profile.devices.values() for s in dev.blocks)
    return f"; {missing} block(s) cannot run on some device" if missing else ""


@styled
def block_statistics(profile: Profile) -> Figure:
    """FLOPs, parameters and output bytes of every block, in three panels sharing the block axis."""
    num = len(profile.blocks)
    fig, axes = new_figure(3, 1, figsize=(_width(num), 6.4), sharex=True)
    x = np.arange(num)
    panels = [
        ("flops", "FLOPs", count_label, "#4c72b0"),
        ("num_params", "parameters", count_label, "#55a868"),
        ("output_bytes", "output bytes", bytes_label, "#c44e52"),
    ]
    for ax, (field, label, fmt, color) in zip(axes, panels, strict=True):
        values = np.array([getattr(b, field) for b in profile.blocks], dtype=float)
        ax.bar(x, values, color=color, width=0.8)
        ax.set_ylabel(label)
        ax.yaxis.set_major_formatter(FuncFormatter(fmt))
        ax.set_title(f"{label} per block (total {fmt(values.sum())})", fontsize=9, loc="left")
    axes[-1].set_xlabel("block")
    block_ticks(axes[-1], num)
    fig.suptitle("Block statistics: FLOPs, parameters, output bytes", fontweight="bold")
    fig.tight_layout()
    return fig


def _box_labels(profile: Profile, op_names: Sequence[str] | None, i: int, precision: str = "") -> str:
    flops = profile.blocks[i].flops
    top = f"{i} {precision}" if precision else f"{i}"
    if op_names is not None and op_names[i]:
        top += f"\n{op_names[i][:9]}"
    return f"{top}\n{count_label(flops)}FLOP"


@styled
def block_graph(profile: Profile, plan: Plan | None, colors: dict[str, str],
                op_names: Sequence[str] | None = None) -> Figure:
    """The blocks as a chain of boxes, wrapped in rows, coloured by the device of the plan's stage.

    Box labels: block index (and the stage's precision, in a plan that chose precisions), its main op
    type (when ``op_names`` is given) and FLOPs. A thick bar marks each cut between stages, labelled
    with the bytes crossing it (on the wire, and its compression, for a compressed cut).
    """
    num = len(profile.blocks)
    per_row = min(num, 16)
    rows = -(-num // per_row)
    placed = plan is not None and len(plan.assignment) == num
    device_of = list(plan.assignment) if plan is not None and placed else [None] * num
    precision_of, cut_labels = _tradeoff_labels(plan if placed else None)
    fig, ax = new_figure(figsize=(min(16.0, 1.0 * per_row + 1.5), 1.25 * rows + 1.3))
    for i in range(num):
        r, c = divmod(i, per_row)
        x, y = c * 1.0, -r * 1.25
        color = colors.get(device_of[i], "#dddddd") if device_of[i] else "#dddddd"
        ax.add_patch(Rectangle((x, y), 0.8, 0.8, facecolor=color, edgecolor="black", lw=0.6, alpha=0.85))
        ax.text(x + 0.4, y + 0.4, _box_labels(profile, op_names, i, precision_of.get(i, "")), ha="center",
                va="center", fontsize=7, color="white" if device_of[i] else "black", fontweight="bold")
        if i + 1 < num and c + 1 < per_row:
            cut = device_of[i] != device_of[i + 1]
            ax.add_patch(FancyArrowPatch((x + 0.8, y + 0.4), (x + 1.0, y + 0.4), arrowstyle="-|>",
                                         mutation_scale=7, lw=2.5 if cut else 0.8,
                                         color="#d62728" if cut else "black"))
        if i + 1 < num and device_of[i] is not None and device_of[i] != device_of[i + 1]:
            ax.text(x + 0.9, y + 0.86, cut_labels.get(i, bytes_label(profile.blocks[i].cut_bytes)),
                    ha="center", fontsize=7, color="#d62728")
    ax.set_xlim(-0.2, per_row + 0.1)
    ax.set_ylim(-(rows - 1) * 1.25 - 0.25, 1.15)
    ax.set_aspect("equal")
    ax.axis("off")
    title = "Block graph" + (f" coloured by stage: {_describe(plan)}" if plan is not None else "")
    ax.set_title(title, fontsize=10)
    handles = [Patch(color=colors[d], label=d) for d in dict.fromkeys(x for x in device_of if x)]
    cut = "cut between stages (bytes" + ("; compressed: on the wire, and how)" if cut_labels else ")")
    handles.append(Patch(color="#d62728", label=cut))
    if plan is not None:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles),
                  fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _tradeoff_labels(plan: Plan | None) -> tuple[dict[int, str], dict[int, str]]:
    """For a plan that chose precisions or compressions: each block's precision, and the label of each
    compressed cut (by the block before it); empty otherwise, so a plain plan's graph is unchanged."""
    if plan is None or not plan.has_tradeoffs:
        return {}, {}
    precision_of = {b: s.precision for s in plan.stages for b in range(s.first_block, s.last_block + 1)}
    cuts = [h for h in plan.hops if h.kind == "cut"]  # one per pair of stages, in order
    labels = {s.last_block: f"{bytes_label(h.num_bytes)} {h.compression}"
              for s, h in zip(plan.stages, cuts, strict=False) if h.compression != "none"}
    return precision_of, labels


def _describe(plan: Plan) -> str:
    text = describe_stages(plan)
    return text if len(text) <= 90 else text[:87] + "..."
