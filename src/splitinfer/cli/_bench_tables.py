"""The tables ``splitinfer bench`` prints: one plan's prediction beside its measurement, and the k best
plans of a file in predicted against measured order (``--top``)."""

from __future__ import annotations

import math

from rich.console import Group
from rich.table import Table
from rich.text import Text

from splitinfer.cli._common import format_bytes
from splitinfer.plan import describe_stages
from splitinfer.records.bench import BenchResult, RankResult
from splitinfer.records.resources import resource_stats


def _err(value: float) -> str:
    return f"{value:+.1%}" if math.isfinite(value) and abs(value) < 1e6 else "n/a"


def _ms(value: float) -> str:
    return f"{value * 1e3:.3f}"


def _rps(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "inf"


def _table(title: str | None, columns: tuple[str, ...], left: int) -> Table:
    """Text columns first (``left`` of them, the first two kept on one line: they name the row), then
    figures; on a narrow terminal a long compression folds rather than being cut off."""
    table = Table(title=title, title_justify="left")
    for k, name in enumerate(columns):
        text = k < left
        table.add_column(name, justify="left" if text else "right", no_wrap=k < 2,
                         overflow="fold" if text else "ellipsis")
    return table


def format_bench_table(result: BenchResult) -> Group:
    """Per stage (its precision) and per hop (its compression, bytes planned and sent), then end to
    end: predicted vs measured (median, p95) and the relative error."""
    plan = result.plan
    middle = "mean ms" if result.exits else "median ms"  # with exits: expected values, means over all
    stages = _table(f"bench of {describe_stages(plan)}: {result.num_requests} requests, "
                    f"concurrency {result.concurrency}",
                    ("part", "device", "blocks", "precision", "plan ms", middle, "p95 ms", "error"), 4)
    for s in result.stages:
        planned = plan.stages[s.stage] if s.stage < len(plan.stages) else None
        blocks = "" if planned is None else f"{planned.first_block}-{planned.last_block}"
        stages.add_row(f"stage {s.stage}", s.device, blocks, s.precision, _ms(s.predicted_s),
                       _ms(s.measured_median_s), _ms(s.measured_p95_s), _err(s.rel_error))
    # A hop's p95 stays in bench.json: with its bytes, the row would not fit 80 columns.
    hops = _table(None, ("part", "where", "compression", "plan bytes", "sent bytes", "plan ms", middle,
                         "error"), 3)
    for hop in result.hops:
        # a hop within one device is predicted free: what it measures is the runtime's own overhead
        error = _err(hop.rel_error) if hop.predicted_s > 0 else "free"
        planned_bytes = "" if hop.predicted_bytes is None else format_bytes(hop.predicted_bytes)
        hops.add_row(f"{hop.kind} hop", f"{hop.src} -> {hop.dst}", hop.compression, planned_bytes,
                     format_bytes(hop.num_bytes), _ms(hop.predicted_s), _ms(hop.measured_median_s), error)
    total = _table(None, ("end to end", "unit", "plan", middle.removesuffix(" ms"), "p95", "error"), 2)
    total.add_row("latency", "ms", _ms(result.predicted_latency_s),
                  _ms(result.latency_mean_s if result.exits else result.latency_median_s),
                  _ms(result.latency_p95_s), _err(result.latency_rel_error))
    total.add_row("throughput", "req/s", _rps(result.predicted_throughput_rps), _rps(result.throughput_rps),
                  "", _err(result.throughput_rel_error))
    resources = [Text(line) for line in resource_lines(result)]
    if not result.exits:
        return Group(stages, hops, total, *resources)
    worst = plan.worst_latency_s
    exits = _table(f"early exits (plan: {_ms(plan.latency_s)} ms expected, "
                   f"{_ms(worst) if worst is not None else '-'} ms without exits)",
                   ("answered at", "requests", "share", "plan share", "median ms", "p95 ms"), 1)
    for e in result.exits:
        exits.add_row(e.output or "the end", str(e.count), f"{e.fraction:.1%}", f"{e.predicted_fraction:.1%}",
                      _ms(e.latency_median_s) if e.count else "-", _ms(e.latency_p95_s) if e.count else "-")
    return Group(stages, hops, total, exits, *resources)


def resource_lines(result: BenchResult) -> list[str]:
    """One line per device its worker sampled: CPU % mean and median, largest RSS (and the GPU's)."""
    lines = []
    for device, series in result.resources.items():
        cpu, rss = resource_stats(series, "cpu_percent"), resource_stats(series, "rss_bytes")
        if cpu is None or rss is None:
            lines.append(f"resources of {device}: {series.note or 'no samples'}")
            continue
        line = (f"resources of {device}: CPU {cpu.mean:.0f}% mean, {cpu.median:.0f}% median "
                f"(100% = one of {series.num_cpus} cores), RSS {rss.max:.0f} MB at most")
        util, used = resource_stats(series, "gpu_util_percent"), resource_stats(series, "gpu_memory_bytes")
        if util is not None and used is not None:
            line += f"; {series.gpu or 'GPU'} {util.mean:.0f}% mean, {used.max:.0f} MB at most"
        lines.append(line + f"; {cpu.num_samples} samples" + (f" ({series.note})" if series.note else ""))
    return lines


def rank_verdict(result: RankResult) -> str:
    """One line: is the predicted best the measured best, and if not, what choosing it cost."""
    if result.measured_best == 1:
        return "the predicted best is the measured best"
    return (f"the predicted best measured {result.regret:.1%} slower than plan #{result.measured_best}, "
            "the measured best")


def rank_correlation(result: RankResult) -> str:
    """One line: Kendall's tau between predicted and measured rank, and the pairs it counts."""
    num_plans = len(result.plans)
    if result.kendall_tau is None:
        return "rank correlation: n/a (one plan)"
    num_pairs = num_plans * (num_plans - 1) // 2
    return (f"rank correlation: Kendall's tau {result.kendall_tau:+.2f} ({result.num_discordant_pairs} of "
            f"{num_pairs} pairs in the other order)")


def format_rank_table(result: RankResult) -> Group:
    """Per plan in predicted order: its stages, predicted and measured figure, error and measured rank;
    then the predicted best's regret and the rank correlation."""
    how = "interleaved" if result.interleaved else "one after another"
    title = (f"ranked bench of {len(result.plans)} {result.figure} plans: {result.num_requests} requests "
             f"each, concurrency {result.concurrency}, {how}")
    # a throughput plan's median latency too: what its throughput cost each request (queueing included)
    figures = ("plan ms", "median ms", "error") if result.figure == "latency" else \
        ("plan req/s", "req/s", "error", "median ms")
    table = _table(title, ("rank", "stages", *figures, "measured rank"), 2)
    for entry in result.plans:
        row = [f"#{entry.rank}", Text(describe_stages(entry.bench.plan))]
        if result.figure == "latency":
            row += [_ms(entry.predicted), _ms(entry.measured), _err(entry.rel_error)]
        else:
            row += [_rps(entry.predicted), _rps(entry.measured), _err(entry.rel_error),
                    _ms(entry.bench.latency_median_s)]
        table.add_row(*row, f"#{entry.measured_rank}")
    lines = [rank_verdict(result), rank_correlation(result)] + ([result.note] if result.note else [])
    return Group(table, *(Text(line) for line in lines))
