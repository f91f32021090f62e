"""The report's "Rank fidelity" section: does the profile order plans as they measure?

A planner is useful when its best plan is the best one, even if its numbers are off. From a
:class:`~splitinfer.records.bench.RankResult` (``splitinfer bench PLAN --top K -o rank.json``: the
K best plans of a file deployed at once and measured side by side): one sentence (was the
predicted best the measured best, Kendall's tau between the two orders, the regret of trusting
the prediction), a figure of each plan's predicted against measured figure with the y = x line,
and a table with the exact numbers (``rank.csv``). A report made without a rank file has no such
section.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from splitinfer.errors import PlanError
from splitinfer.plan import describe_stages
from splitinfer.profile.schema import Profile
from splitinfer.records.bench import RankedBench, RankResult, load_rank
from splitinfer.report.figures import new_figure, styled
from splitinfer.report.html import render_table
from splitinfer.report.inputs import _check_plan
from splitinfer.report.tables import Table, write_csv

BEST_COLOR, PLAN_COLOR, LINE_COLOR = "#2ca02c", "#1f77b4", "#7f7f7f"
RANK_NOTE = ("Interleaved: the plans were deployed at once and sent requests in turn (plan 1, 2, ..., K, 1, "
             "...), so load that came and went fell on each alike; otherwise they were measured one after "
             "another. Latency: the median; throughput: completed requests per second at the bench's "
             "concurrency. rel_error = (predicted - measured) / measured. Regret: how much longer a request "
             "took on the predicted best than on the measured best (0: they are one). Kendall's tau: how "
             "alike the predicted and the measured order are, from the pairs of plans the measurement "
             "orders the same way and the other way round (1: the same order, 0: unrelated, -1: reversed).")


def read_rank(rank: RankResult | str | Path | None, profile: Profile) -> RankResult | None:
    """The ranked bench (read when a path), each plan checked against ``profile``'s blocks and model."""
    result = load_rank(rank) if isinstance(rank, str | Path) else rank
    if result is not None:
        for entry in result.plans:
            where = f"the rank file's plan #{entry.rank}"
            _check_plan(entry.bench.plan, profile, where)
            sha = entry.bench.model_sha256
            if sha and sha != profile.model.sha256:
                mine = profile.model.sha256[:12]
                raise PlanError(f"{where} ran model {sha[:12]}, the profile is of {mine}",
                                "report a ranked bench of plans made from this profile")
    return result


def _figure(result: RankResult, value: float) -> str:
    if math.isinf(value):
        return "inf ms" if result.figure == "latency" else "inf req/s"
    return f"{value * 1e3:.1f} ms" if result.figure == "latency" else f"{value:.2f} req/s"


def _percent(value: float) -> str:
    return f"{value:.1%}" if math.isfinite(value) else "inf"


def rank_line(result: RankResult) -> str:
    """One sentence for people: how the plans were measured, whether the predicted best measured best
    (if not: which did, and both figures), Kendall's tau and the regret."""
    num = len(result.plans)
    how = "side by side (interleaved)" if result.interleaved else "one after another (not interleaved)"
    head = f"{num} {result.figure} plan{'s' if num != 1 else ''} measured {how}"
    if result.measured_best == 1:
        verdict = "the predicted best measured best"
    else:
        best = next(p for p in result.plans if p.rank == result.measured_best)
        verdict = (f"plan #{result.measured_best} measured best ({_figure(result, best.measured)} against "
                   f"{_figure(result, result.plans[0].measured)} for the predicted best)")
    if result.kendall_tau is None:
        tau = "Kendall's tau n/a (one plan)"
    else:
        tau = f"Kendall's tau {result.kendall_tau:.2f}"
        if result.num_discordant_pairs:
            tau += f" ({result.num_discordant_pairs} of {num * (num - 1) // 2} pairs in the other order)"
    return f"{head}: {verdict}; {tau}; regret {_percent(result.regret)}"


def rank_table(result: RankResult) -> Table:
    """Per plan in predicted order: both ranks, its stages, the predicted and measured figure (seconds, or
    requests per second for throughput) and the relative error."""
    unit = "s" if result.figure == "latency" else "rps"
    header = ["predicted_rank", "measured_rank", "stages", f"predicted_{unit}", f"measured_{unit}",
              "rel_error"]
    rows: list[list[object]] = [[p.rank, p.measured_rank, describe_stages(p.bench.plan), p.predicted,
                                 p.measured, p.rel_error] for p in result.plans]
    return header, rows


def rank_html(result: RankResult, figure_html: str, out: Path, notify: Callable[[Path], None]) -> str:
    """The section's HTML: the sentence, the run's note if any, the figure (``figure_html``, rendered by
    the writer) and the table; writes ``rank.csv`` into ``out`` (``notify`` is called with it)."""
    table = rank_table(result)
    notify(write_csv(table, out / "rank.csv"))
    html = f"<p>{escape(rank_line(result))}</p>"
    if result.note:
        html += f'<p class="note">{escape(result.note)}</p>'
    return html + figure_html + render_table(
        table, f"{len(result.plans)} plans: predicted against measured rank", raw_csv="rank.csv",
        note=f"{result.num_requests} requests per plan at concurrency {result.concurrency}. {RANK_NOTE}")


def _points(result: RankResult) -> list[tuple[RankedBench, float, float]]:
    """(plan, predicted, measured) in display units (ms or requests/s); a plan with an infinite figure
    has no point (it stays in the table)."""
    scale = 1e3 if result.figure == "latency" else 1.0
    return [(p, p.predicted * scale, p.measured * scale) for p in result.plans
            if math.isfinite(p.predicted) and math.isfinite(p.measured)]


@styled
def rank_scatter(result: RankResult) -> Figure:
    """Each plan's measured figure (y) against its predicted one (x), labelled with its predicted rank; the
    measured best in green; the dashed line is measured = predicted."""
    fig, ax = new_figure(figsize=(5.6, 5.8))
    points = _points(result)
    values = [v for _p, x, y in points for v in (x, y)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = (hi - lo) * 0.12 or hi * 0.1 or 1.0
    lo, hi = max(0.0, lo - pad), hi + pad
    ax.plot([lo, hi], [lo, hi], ls="--", color=LINE_COLOR, lw=1, zorder=1)
    for entry, x, y in points:
        best = entry.rank == result.measured_best
        ax.scatter([x], [y], s=46, color=BEST_COLOR if best else PLAN_COLOR, zorder=3,
                   edgecolor="black" if entry.rank == 1 else "none")
        ax.annotate(f"#{entry.rank}", (x, y), textcoords="offset points", xytext=(6, 5), fontsize=8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    if result.figure == "latency":
        ax.set_xlabel("predicted latency (ms)")
        ax.set_ylabel("measured median latency (ms, lower is better)")
    else:
        ax.set_xlabel("predicted throughput (requests/s)")
        ax.set_ylabel(f"measured requests/s at concurrency {result.concurrency} (higher is better)")
    tau = "n/a" if result.kendall_tau is None else f"{result.kendall_tau:.2f}"
    ax.set_title(f"{result.figure}: Kendall's tau {tau}, regret {_percent(result.regret)}", fontsize=10)
    handles = [Line2D([], [], marker="o", color=BEST_COLOR, ls="none", label="measured best"),
               Line2D([], [], marker="o", color=PLAN_COLOR, ls="none", label="other plans"),
               Line2D([], [], marker="o", color="white", markeredgecolor="black", ls="none",
                      label="predicted best (#1)"),
               Line2D([], [], ls="--", color=LINE_COLOR, label="measured = predicted")]
    # below the axes: a plan slower than predicted sits top left, where a legend inside would hide it
    ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    fig.tight_layout()
    return fig
