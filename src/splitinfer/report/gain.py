"""The report's "Gain of splitting" section: the best plan against the best single device, as measured.

From a :class:`~splitinfer.records.gain.GainResult` (``gain.json``, written by ``splitinfer
demo`` or :func:`splitinfer.runtime.gain.measure_gains`): one sentence per objective, a bar
chart of the two plans' measured figures (the prediction marked on each bar) and a table with
the exact numbers (``gain.csv``). A report made without a gain file has no such section.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from splitinfer.plan import describe_stages
from splitinfer.profile.schema import Profile
from splitinfer.records.bench import RankedBench
from splitinfer.records.gain import GainResult, SplitGain, gain_line, load_gain
from splitinfer.report.figures import new_figure, styled
from splitinfer.report.html import render_table
from splitinfer.report.inputs import _check_plan
from splitinfer.report.tables import Table, write_csv

SINGLE_COLOR, OTHER_COLOR, BEST_COLOR = "#7f7f7f", "#c7c7c7", "#2ca02c"
GAIN_NOTE = ("The plans of an objective were deployed at once and sent requests in turn, so noise fell on "
             "each alike: the best plan, the best plan on one device, and any other device predicted close "
             "to it. Latency: the median at concurrency 1; throughput: completed requests per second with "
             "several in flight. gain: against the single device that measured best, its latency over the "
             "best plan's, or the best plan's throughput over its; predicted_gain: the same of the "
             "predictions.")


def read_gain(gain: GainResult | str | Path | None, profile: Profile) -> GainResult | None:
    """The gain result (read when a path), its plans checked against ``profile``'s blocks and model."""
    result = load_gain(gain) if isinstance(gain, str | Path) else gain
    if result is not None:
        for g in result.gains:
            for entry in (g.best, *g.singles):
                _check_plan(entry.bench.plan, profile, f"the gain file's {g.objective} plan")
    return result


def gain_lines(result: GainResult) -> list[str]:
    """One sentence per objective, as ``splitinfer demo`` prints them."""
    return [gain_line(g) for g in result.gains]


def gain_html(result: GainResult, figure_html: str, out: Path, notify: Callable[[Path], None]) -> str:
    """The section's HTML: the sentences, the figure (``figure_html``, rendered by the writer) and the
    table; writes ``gain.csv`` into ``out`` (``notify`` is called with it)."""
    table = gain_table(result)
    notify(write_csv(table, out / "gain.csv"))
    lines = "".join(f"<p>{escape(line)}</p>" for line in gain_lines(result))
    return lines + figure_html + render_table(table, "Best single device against the best plan",
                                              raw_csv="gain.csv", note=GAIN_NOTE)


def _single_label(g: SplitGain, entry: RankedBench) -> str:
    """The single device compared with is the one that measured best; the others were measured too."""
    return "best single device" if entry == g.single else "single device"


def _rows(g: SplitGain) -> list[list[object]]:
    """The single-device plans' rows, then the best plan's (one row when the best plan is one device)."""
    latency = g.objective == "latency"
    if g.is_split:
        entries = [(_single_label(g, s), s, None, None) for s in g.singles]
        entries.append(("best plan", g.best, g.gain, g.predicted_gain))
    else:
        entries = [("best plan = best single device", g.best, g.gain, g.predicted_gain)]
    rows = []
    for label, entry, gain, predicted_gain in entries:
        figures = [entry.predicted, entry.measured, "", ""] if latency else ["", "", entry.predicted,
                                                                                 entry.measured]
        plan = entry.bench.plan
        rows.append([g.objective, label, describe_stages(plan), len(plan.stages), *figures,
                     "" if gain is None else gain, "" if predicted_gain is None else predicted_gain])
    return rows


def gain_table(result: GainResult) -> Table:
    """Per objective: the best single-device plan and the best plan, predicted and measured, and the gain
    (on the best plan's row). Latency in seconds, throughput in requests per second."""
    header = ["objective", "plan", "stages", "num_stages", "predicted_s", "measured_s", "predicted_rps",
              "measured_rps", "gain", "predicted_gain"]
    return header, [row for g in result.gains for row in _rows(g)]


def _bars(g: SplitGain) -> list[tuple[str, float, float, str]]:
    """(label, predicted, measured, colour) per bar in display units: ms or requests/s."""
    scale = 1e3 if g.objective == "latency" else 1.0
    bars = []
    if g.is_split:
        bars += [(f"{_single_label(g, s)}\n{_short(s.bench.plan)}", s.predicted * scale, s.measured * scale,
                  SINGLE_COLOR if s == g.single else OTHER_COLOR) for s in g.singles]
    bars.append((f"best plan\n{_short(g.best.bench.plan)}", g.best.predicted * scale, g.best.measured * scale,
                 BEST_COLOR))
    return bars


def _short(plan: object) -> str:
    text = describe_stages(plan)  # type: ignore[arg-type]
    return text if len(text) <= 34 else text[:31] + "..."


def _title(g: SplitGain) -> str:
    if g.single is None:
        return f"{g.objective}: no single device can run the model"
    if not g.is_split:
        return f"{g.objective}: the best plan is one device (1.0x)"
    word = "faster" if g.objective == "latency" else "the throughput"
    return f"{g.objective}: split {g.gain:.2f}x {word} (measured)"


@styled
def gain_bars(result: GainResult) -> Figure:
    """One panel per objective: the measured figure of the best single-device plan and of the best plan
    (bars), each plan's prediction marked on its bar."""
    fig, axes = new_figure(1, len(result.gains), figsize=(5.2 * len(result.gains) + 0.5, 4.2), squeeze=False)
    for ax, g in zip(axes[0], result.gains, strict=True):
        bars = _bars(g)
        x = np.arange(len(bars))
        measured, predicted = [b[2] for b in bars], [b[1] for b in bars]
        ax.bar(x, measured, width=0.55, color=[b[3] for b in bars])
        ax.scatter(x, predicted, marker="D", color="black", zorder=3)
        unit = "ms" if g.objective == "latency" else "req/s"
        for xi, value, top in zip(x, measured, np.maximum(measured, predicted), strict=True):
            # above the bar and its prediction's marker, so neither hides the number
            ax.annotate(f"{value:.3g} {unit}", (xi, top), textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=8)
        ax.set_xticks(x, [b[0] for b in bars], fontsize=8)
        ax.set_xlim(-0.7, len(bars) - 0.3)
        ax.set_ylim(0, max([*measured, *(b[1] for b in bars)]) * 1.18 or 1.0)
        ax.set_ylabel("median latency (ms, lower is better)" if g.objective == "latency"
                      else f"requests/s at concurrency {g.concurrency} (higher is better)")
        ax.set_title(_title(g), fontsize=10)
        ax.grid(axis="x", visible=False)
        handles = [Patch(color=SINGLE_COLOR, label="measured: single device"),
                   Patch(color=BEST_COLOR, label="measured: best plan"),
                   Line2D([], [], marker="D", color="black", ls="none", label="predicted")]
        ax.legend(handles=handles, fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
