"""Figures of plans and of a bench run: top-k compared, the timeline, predicted vs measured, Pareto fronts."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from splitinfer.plan import Hop, Plan, Stage, describe_stages
from splitinfer.report.figures import new_figure, styled
from splitinfer.report.inputs import TRANSFER_COLOR, hop_s, request_steps
from splitinfer.report.tables import bytes_label, quality_label

MAX_PLANS = 12  # bars in the comparison; more would not be readable


def plan_label(plan: Plan) -> str:
    """``latency #1``, ``pareto-upload #3``: the objective and the rank."""
    return f"{plan.objective} #{plan.rank}"


def timeline_steps(plan: Plan) -> Iterator[tuple[Stage | Hop, float, float]]:
    """(stage or hop, start_s, duration_s) in the order a request meets them: upload, stages, return.
    A compressed hop lasts its transfer plus compressing and restoring, as the plan's latency counts it."""
    t = 0.0
    for step in request_steps(plan):
        duration = step.compute_s if isinstance(step, Stage) else hop_s(step)
        yield step, t, duration
        t += duration


def _device_legend(colors: dict[str, str], devices: Sequence[str]) -> list[Patch]:
    handles = [Patch(color=colors.get(d, "black"), label=f"compute on {d}") for d in dict.fromkeys(devices)]
    handles.append(Patch(facecolor=TRANSFER_COLOR, hatch="///", edgecolor="#555555", label="transfer"))
    return handles


@styled
def plans_compared(plans: Sequence[Plan], colors: dict[str, str]) -> Figure:
    """Stacked horizontal bars, one per plan: compute per stage (device colour) and transfers (grey)."""
    shown = list(plans)[:MAX_PLANS]
    fig, ax = new_figure(figsize=(11, 1.0 + 0.5 * len(shown)))
    longest = max((p.latency_s for p in shown), default=1.0) * 1e3
    devices: list[str] = []
    for y, plan in enumerate(shown):
        for step, start, dur in timeline_steps(plan):
            is_stage = isinstance(step, Stage)
            color = colors.get(step.device, "black") if isinstance(step, Stage) else TRANSFER_COLOR
            ax.barh(y, dur * 1e3, left=start * 1e3, height=0.6, color=color, edgecolor="white" if is_stage
                    else "#555555", hatch=None if is_stage else "///", lw=0.5)
            if isinstance(step, Stage):
                devices.append(step.device)
        rps = "inf" if math.isinf(plan.throughput_rps) else f"{plan.throughput_rps:.2f}"
        # Short: the text already runs past the bars; the caption and the table say what the cost is.
        cost = "" if plan.quality_cost is None else f", quality cost {plan.quality_cost:.2%}"
        ax.text(plan.latency_s * 1e3 + longest * 0.01, y,
                f"{plan.latency_s * 1e3:.1f} ms, {rps} req/s{cost}   {describe_stages(plan)}",
                va="center", fontsize=8, clip_on=False)
    ax.set_yticks(range(len(shown)), [plan_label(p) for p in shown])
    ax.invert_yaxis()
    ax.set_xlim(0, longest * 1.02)
    ax.set_xlabel("predicted latency per request (ms): compute and transfer in order")
    more = f" (first {MAX_PLANS} of {len(plans)})" if len(plans) > MAX_PLANS else ""
    ax.set_title(f"Plans compared{more}")
    ax.grid(axis="y", visible=False)
    ax.legend(handles=_device_legend(colors, devices), loc="upper center", bbox_to_anchor=(0.5, -0.5 / len(
        shown) - 0.12), ncol=len(set(devices)) + 1, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


@styled
def timeline(plan: Plan, colors: dict[str, str]) -> Figure:
    """Gantt chart of one request: a row per device, compute boxes, transfer boxes on sender and receiver."""
    ends = [x for h in plan.hops for x in (h.src, h.dst)]
    order = list(colors)  # the profile's device order: source side first, as the continuum runs
    devices = sorted(dict.fromkeys([s.device for s in plan.stages] + ends),
                     key=lambda d: order.index(d) if d in order else len(order))
    row = {d: i for i, d in enumerate(devices)}
    fig, ax = new_figure()
    total_ms = max(plan.latency_s, sum(d for _, _, d in timeline_steps(plan))) * 1e3 or 1.0
    key: list[str] = []
    for step, start, dur in timeline_steps(plan):
        x, w = start * 1e3, dur * 1e3
        if isinstance(step, Stage):
            y = row[step.device]
            ax.barh(y, w, left=x, height=0.6, color=colors.get(step.device, "black"), edgecolor="black",
                    lw=0.5)
            # A trade-off plan names every stage's precision, fp32 too: a box without one would be ambiguous.
            precision = f" {step.precision}" if plan.has_tradeoffs else ""
            text = f"blocks {step.first_block}-{step.last_block}{precision}\n{w:.1f} ms"
            if w > total_ms * 0.08:
                ax.text(x + w / 2, y, text, ha="center", va="center", fontsize=7.5, color="white",
                        fontweight="bold")
            elif precision:  # too narrow for the text: the precision above the box
                ax.text(x + w / 2, y - 0.32, step.precision, ha="center", va="bottom", fontsize=7)
            continue
        key.append(_draw_hop(ax, step, len(key) + 1, x, w, row))
    ax.set_yticks(range(len(devices)), devices)
    ax.set_ylim(len(devices) - 0.4, -0.6)
    ax.set_xlim(0, total_ms * 1.08)
    ax.set_xlabel("time since the request appeared at the source (ms, predicted)")
    ax.set_ylabel("device")
    ax.axvline(plan.latency_s * 1e3, color="#d62728", ls="--", lw=1)
    cost = "" if plan.quality_cost is None else f", {quality_label(plan.quality_cost)}"
    ax.set_title(f"Timeline of {plan_label(plan)}: {describe_stages(plan)} "
                 f"({plan.latency_s * 1e3:.1f} ms{cost})", fontsize=10)
    _timeline_layout(fig, len(devices), ["   ".join(key[i:i + 3]) for i in range(0, len(key), 3)],
                     _device_legend(colors, [s.device for s in plan.stages]))
    return fig


def _timeline_layout(fig: Figure, num_rows: int, key_lines: list[str], handles: list[Patch]) -> None:
    """Size the figure in inches: the rows, then below the axis the legend and the key of the transfers."""
    axes_h, top_h, axis_h, legend_h = 0.3 + 0.7 * num_rows, 0.45, 0.6, 0.35
    key_h = 0.2 * (len(key_lines) + 1) if key_lines else 0.0
    height = top_h + axes_h + axis_h + legend_h + key_h
    fig.set_size_inches(11, height)
    bottom = (axis_h + legend_h + key_h) / height
    fig.subplots_adjust(left=0.09, right=0.98, top=1 - top_h / height, bottom=bottom)
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, (legend_h + key_h) / height),
               ncol=len(handles), fontsize=8, frameon=False)
    if key_lines:
        fig.text(0.5, key_h / height, "transfers (predicted)\n" + "\n".join(key_lines), ha="center", va="top",
                 fontsize=8, linespacing=1.4)


def _draw_hop(ax: Axes, hop: Hop, number: int, x: float, w: float, row: dict[str, int]) -> str:
    """Transfer boxes on sender and receiver, a numbered arrow between them; the hop's line for the key."""
    for end in (hop.src, hop.dst):
        ax.barh(row[end], w, left=x, height=0.3, color=TRANSFER_COLOR, hatch="///", edgecolor="#555555",
                lw=0.5)
    mid_x = x + w / 2
    ax.annotate("", xy=(mid_x, row[hop.dst]), xytext=(mid_x, row[hop.src]),
                arrowprops={"arrowstyle": "-|>", "color": "#444444", "lw": 1})
    # A number, not a sentence, on the arrow: short hops sit close together and long labels collide.
    circle = {"boxstyle": "circle,pad=0.2", "facecolor": "white", "edgecolor": "#444444", "lw": 0.8}
    mid_y = (row[hop.src] + row[hop.dst]) / 2
    ax.text(mid_x, mid_y, str(number), ha="center", va="center", fontsize=7, fontweight="bold", bbox=circle)
    line = f"{number}: {hop.kind} {hop.src}\u2192{hop.dst} {bytes_label(hop.num_bytes)}"
    if hop.compression == "none":
        return f"{line} in {w:.1f} ms"
    # Only a compressed hop is named on its arrow: most hops are raw, and the key says the rest.
    ax.annotate(hop.compression, (mid_x, mid_y), xytext=(7, 0), textcoords="offset points", ha="left",
                va="center", fontsize=7, color="#444444")
    return f"{line} {hop.compression} in {w:.1f} ms ({hop.codec_s * 1e3:.1f} ms compressing and restoring)"


def _bench_parts(bench: Any) -> list[tuple[str, float, float, float]]:
    parts = [(f"stage {s.stage}\n{s.device}", s.predicted_s, s.measured_median_s, s.measured_p95_s)
             for s in bench.stages]
    parts += [(f"{h.kind}\n{h.src}>{h.dst}", h.predicted_s, h.measured_median_s, h.measured_p95_s)
              for h in bench.hops]
    return parts


@styled
def predicted_vs_measured(bench: Any) -> Figure:
    """Per stage and hop: predicted time next to the measured median, whisker up to the measured p95."""
    parts = _bench_parts(bench)
    fig, ax = new_figure(figsize=(max(7.0, 1.0 * len(parts) + 2), 4.2))
    x = np.arange(len(parts))
    pred = np.array([p[1] for p in parts]) * 1e3
    med = np.array([p[2] for p in parts]) * 1e3
    p95 = np.array([p[3] for p in parts]) * 1e3
    ax.bar(x - 0.2, pred, width=0.4, color="#4c72b0", label="predicted")
    ax.bar(x + 0.2, med, width=0.4, color="#dd8452", label="measured median",
           yerr=[np.zeros_like(med), np.maximum(p95 - med, 0)], capsize=3, ecolor="#333333")
    ax.errorbar([], [], yerr=[], color="#333333", label="whisker: measured p95")
    ax.set_xticks(x, [p[0] for p in parts], fontsize=8)
    ax.set_ylabel("time (ms)")
    ax.set_xlabel("stage or hop")
    ax.set_title(f"Predicted vs measured per stage and hop ({bench.num_requests} requests)")
    ax.legend(fontsize=8)
    ax.grid(axis="x", visible=False)
    fig.tight_layout()
    return fig


@styled
def latency_distribution(bench: Any) -> Figure:
    """Histogram of the measured request latencies, with the predicted latency and the measured median."""
    lat = np.asarray(bench.latencies_s, dtype=float) * 1e3
    fig, ax = new_figure(figsize=(7.5, 4.0))
    if lat.size:
        ax.hist(lat, bins=min(40, max(5, lat.size // 4)), color="#dd8452", alpha=0.8, edgecolor="white",
                label=f"measured ({lat.size} requests)")
    ax.axvline(bench.predicted_latency_s * 1e3, color="#4c72b0", lw=2,
               label=f"predicted {bench.predicted_latency_s * 1e3:.1f} ms")
    ax.axvline(bench.latency_median_s * 1e3, color="black", ls="--", lw=1.2,
               label=f"measured median {bench.latency_median_s * 1e3:.1f} ms")
    ax.axvline(bench.latency_p95_s * 1e3, color="#555555", ls=":", lw=1.2,
               label=f"measured p95 {bench.latency_p95_s * 1e3:.1f} ms")
    ax.set_xlabel("end-to-end latency per request (ms)")
    ax.set_ylabel("requests")
    ax.set_title("Latency distribution")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


_SECOND = {
    "pareto-energy": ("energy_j", "energy per request (J, battery devices)", lambda v: v),
    "pareto-upload": ("upload_bytes", "bytes leaving the source (MB)", lambda v: v / 1e6),
    "pareto-quality": ("quality_cost", "quality cost (predicted top-1 agreement drop, %)", lambda v: v * 100),
}


def pareto_front_names(plans: Sequence[Plan]) -> list[str]:
    """The Pareto fronts among ``plans`` that :func:`pareto_fronts` draws (an objective it does not know
    is left out rather than drawn on a made-up axis)."""
    return [f for f in _SECOND if any(p.objective == f for p in plans)]


@styled
def pareto_fronts(plans: Sequence[Plan], chosen: Plan | None) -> Figure:
    """Each front: latency against energy, bytes leaving the source, or the predicted quality cost;
    points numbered by rank."""
    fronts = pareto_front_names(plans)
    fig, axes = new_figure(1, len(fronts), figsize=(5.5 * len(fronts) + 0.5, 4.2), squeeze=False)
    for ax, front in zip(axes[0], fronts, strict=True):
        field, label, scale = _SECOND[front]
        points = sorted((p for p in plans if p.objective == front and getattr(p, field) is not None),
                        key=lambda p: p.latency_s)
        xs = [p.latency_s * 1e3 for p in points]
        ys = [scale(getattr(p, field)) for p in points]
        ax.step(xs, ys, where="post", color="#888888", lw=1, zorder=1)
        ax.scatter(xs, ys, color="#4c72b0", zorder=2, label="plans on the front")
        for p, x, y in zip(points, xs, ys, strict=True):
            ax.annotate(f"#{p.rank}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        if chosen is not None:
            same = [(x, y) for p, x, y in zip(points, xs, ys, strict=True) if p.stages == chosen.stages]
            if same:
                ax.scatter(*zip(*same, strict=True), s=140, facecolors="none", edgecolors="#d62728", lw=1.5,
                           zorder=3, label="chosen plan")
        ax.set_xlabel("predicted latency (ms)")
        ax.set_ylabel(label)
        ax.set_title(f"Pareto front: latency vs {front.removeprefix('pareto-')} "
                     f"({len(points)} plan{'s' if len(points) != 1 else ''})",
                     fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
