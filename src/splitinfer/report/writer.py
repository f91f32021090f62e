"""``write_report``: the figures, CSV tables and the self-contained ``index.html`` of one profile."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onnx

from splitinfer.errors import SplitinferError
from splitinfer.graph import Model
from splitinfer.plan import Plan, describe_stages
from splitinfer.profile.files import load_profile
from splitinfer.profile.schema import Profile
from splitinfer.records.bench import BenchResult, RankResult, load_bench
from splitinfer.records.gain import GainResult
from splitinfer.records.plans import read_plans
from splitinfer.report import figures, plan_figures, quality, quality_figures
from splitinfer.report.energy import energy_bars, energy_html, has_energy_split
from splitinfer.report.exits import exit_bars, exit_html
from splitinfer.report.gain import gain_bars, gain_html, read_gain
from splitinfer.report.html import (
    FigureFile,
    render_figure,
    render_key_values,
    render_page,
    render_table,
)
from splitinfer.report.inputs import ReportData, gather
from splitinfer.report.rank import rank_html, rank_scatter, read_rank
from splitinfer.report.resources import FIGURES as RESOURCE_FIGURES
from splitinfer.report.resources import resource_figures, resource_html, resource_over_time
from splitinfer.report.tables import (
    bench_table,
    block_table,
    plan_steps_table,
    plan_table,
    quality_label,
    write_csv,
)

OnFile = Callable[[Path], None]
PLAN_TRADEOFFS_NOTE = ("precisions: each stage's arithmetic, in order; compressions: how each hop carries "
                       "its tensors; codec_s: seconds compressing and restoring; quality_cost: the predicted "
                       "drop of top-1 agreement with the fp32 model.")
STEPS_NOTE = ("In the order a request meets them. num_bytes: on the wire (compressed, if the hop is); "
              "codec_s: compressing on the sender plus restoring on the receiver; total_s: what the step "
              "adds to the predicted latency.")
REL_ERROR_NOTE = ("rel_error = (predicted - measured) / measured, of the median: "
                  "negative when the plan was slower than predicted.")


def _main_ops(model: str | Path | Model | onnx.ModelProto, profile: Profile) -> list[str]:
    """The most frequent op type of every block, from the model cut the way the profile was."""
    from splitinfer.profile.blocks import cut_as_profiled  # lazily: only a report given a model cuts it

    blocks = cut_as_profiled(model, profile)
    return [next(iter(b.op_types), "") for b in blocks.analysis.blocks]


def _figures(data: ReportData, out: Path, ops: list[str] | None, on_file: OnFile,
             evaluation: quality.EvalDoc | None = None, gains: GainResult | None = None,
             ranks: RankResult | None = None) -> list[FigureFile]:
    specs: list[tuple[str, str, str, Callable[[], Any]]] = [
        ("block_latency", "Latency per block per device",
         "Median time of each block on each device; the band spans p10 to p90.",
         lambda: figures.latency_per_block(data.profile, data.colors)),
        ("block_statistics", "FLOPs, parameters and output bytes per block",
         "Static figures of each block, from the graph.", lambda: figures.block_statistics(data.profile)),
    ]
    if data.ranked_plans:
        specs.append(("plans", "Plans compared",
                      "Predicted compute per stage (device colour) and transfers (grey) of each plan.",
                      lambda: plan_figures.plans_compared(data.ranked_plans, data.colors)))
    if data.chosen is not None:
        chosen = data.chosen
        specs += [
            ("timeline", "Timeline of the chosen plan",
             "One request through the chosen plan: compute per device, transfers between them (predicted); "
             "a plan that chose precisions names each stage's, and each compressed hop its compression.",
             lambda: plan_figures.timeline(chosen, data.colors)),
            ("block_graph", "Block graph by stage",
             "Blocks in order, coloured by the device that runs them in the chosen plan; "
             "red arrows mark cuts between stages, labelled with the bytes crossing them (a compressed cut: "
             "on the wire, and how); a plan that chose precisions names each block's.",
             lambda: figures.block_graph(data.profile, chosen, data.colors, ops)),
        ]
        if chosen.energy_split:
            specs.append(("energy_split", "Energy per battery device",
                          "The chosen plan's predicted joules per request on each battery device: computing, "
                          "its radio sending or receiving, and idling through the rest of the request.",
                          lambda: energy_bars(chosen)))
    if plan_figures.pareto_front_names(data.pareto_plans):
        specs.append(("pareto", "Pareto fronts", "Plans no other plan beats in both figures, by rank.",
                      lambda: plan_figures.pareto_fronts(data.pareto_plans, data.chosen)))
    if data.bench is not None:
        bench = data.bench
        specs += [
            ("bench_parts", "Predicted vs measured per stage and hop",
             "Predicted time next to the measured median; the whisker reaches the measured p95.",
             lambda: plan_figures.predicted_vs_measured(bench)),
            ("bench_latency", "Latency distribution",
             "Measured end-to-end latencies of the benchmark's requests, with the prediction.",
             lambda: plan_figures.latency_distribution(bench)),
        ]
        if bench.exits:
            specs.append(("exit_mix", "Early exits",
                          "Left: the share of requests each exit answered (the end: those that took none), "
                          "measured and as profiled; right: the latency of those requests, median to p95, "
                          "with the plan's expected latency.", lambda: exit_bars(bench)))
        for attribute in resource_figures(bench):
            stem, title, caption = RESOURCE_FIGURES[attribute]
            specs.append((stem, title, caption,
                          lambda a=attribute: resource_over_time(bench, a, data.colors)))
    if gains is not None and gains.gains:
        specs.append(("gain_bars", "Gain of splitting",
                      "Measured figure of the best single-device plan and of the best plan, side by side; "
                      "the diamond marks each plan's prediction.", lambda: gain_bars(gains)))
    if ranks is not None and ranks.plans:
        specs.append(("rank_fidelity", "Predicted against measured, per plan",
                      "Each plan of the ranked bench at its predicted (x) and measured (y) figure, labelled "
                      "with its predicted rank; on the dashed line the prediction was exact. The ranking "
                      "holds when the measured figures keep the order of the labels.",
                      lambda: rank_scatter(ranks)))
    if evaluation is not None and evaluation.classification is not None:
        scored = evaluation.classification
        whose = "candidate" if evaluation.candidate is not None else "model"
        specs.append(("confusion", "Confusion matrix",
                      f"The {whose}'s predictions (columns) against the labels (rows), counted; the colour "
                      "is the share of the true class, its sensitivity on the diagonal.",
                      lambda: quality_figures.confusion_matrix(scored, f"Confusion matrix of the {whose}")))
    written = []
    for stem, title, caption, draw in specs:
        png, svg = figures.save_figure(draw(), out, stem)
        on_file(png)
        on_file(svg)
        written.append(FigureFile(stem, title, caption, png, svg))
    return written


def _summary(data: ReportData) -> str:
    p = data.profile
    pairs: list[tuple[str, object]] = [
        ("model", f"{data.model_label} (sha256 {p.model.sha256[:12]})"),
        ("blocks", f"{len(p.blocks)}: {sum(b.flops for b in p.blocks) / 1e9:.3g} GFLOPs, "
                   f"{sum(b.num_params for b in p.blocks) / 1e6:.3g} M parameters"),
        ("input / output", f"{p.input_bytes:,} B / {p.output_bytes:,} B"),
        ("devices", ", ".join(p.devices) or "-"),
        ("report written", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]
    if data.chosen is not None:
        c = data.chosen
        pairs.append(("chosen plan", f"{c.objective} #{c.rank}: {describe_stages(c)}, "
                                     f"{c.latency_s * 1e3:.1f} ms, {_rps(c.throughput_rps)} req/s predicted"))
        if c.has_tradeoffs:
            pairs.append(("precisions", ", ".join(f"{s.device}[{s.first_block}-{s.last_block}] {s.precision}"
                                                  for s in c.stages)))
            pairs.append(("compressions", ", ".join(f"{h.kind} {h.src} -> {h.dst} {h.compression}"
                                                    for h in c.hops)))
        if c.quality_cost is not None:
            pairs.append(("quality cost", f"{quality_label(c.quality_cost)} with the fp32 model (predicted)"))
    if data.bench is not None:
        b = data.bench
        pairs.append(("benchmark", f"{b.num_requests} requests, concurrency {b.concurrency}: "
                                   f"median {b.latency_median_s * 1e3:.1f} ms "
                                   f"(predicted {b.predicted_latency_s * 1e3:.1f} ms), "
                                   f"p95 {b.latency_p95_s * 1e3:.1f} ms, {b.throughput_rps:.3g} req/s "
                                   f"(predicted {_rps(b.predicted_throughput_rps)})"))
    devices = (["device", "providers", "num_threads", "host", "profiled", "whole_model_s"], [
        [n, ", ".join(d.providers), d.num_threads, ", ".join(f"{k}={v}" for k, v in d.host.items()), d.date,
         "" if d.whole_model is None else d.whole_model.median_s]
        for n, d in p.devices.items()
    ])
    links = (["link", "bandwidth (Mbit/s)", "latency_s", "source"], [
        [f"{x.src} -> {x.dst}", f"{x.bandwidth_bps * 8 / 1e6:.4g}", x.latency_s, x.source] for x in p.links
    ])
    html = render_key_values(pairs) + render_table(devices, "devices")
    return html + (render_table(links, "links") if p.links else "")


def _rps(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.3g}"


def _section_html(figs: list[FigureFile], stems: tuple[str, ...]) -> str:
    return "".join(render_figure(f) for f in figs if f.stem in stems)


def write_report(
    profile: Profile | str | Path,
    out_dir: str | Path,
    *,
    plans: list[Plan] | str | Path | None = None,
    bench: BenchResult | str | Path | None = None,
    model: str | Path | Model | onnx.ModelProto | None = None,
    evaluation: quality.EvalDoc | str | Path | None = None,
    gain: GainResult | str | Path | None = None,
    rank: RankResult | str | Path | None = None,
    on_file: OnFile | None = None,
) -> Path:
    """Write the report of ``profile`` into ``out_dir``; return the path of its ``index.html``.

    ``plans``: Plans or a plan.json path (top-k, throughput, Pareto fronts). ``bench``: a
    bench result or its file; its plan is the chosen one, else the first of ``plans``.
    ``model``: the profiled model, to name each block's main op. ``evaluation``: an eval
    result (``splitinfer eval -o eval.json``, or :func:`.quality.load_eval`'s), shown in a
    Quality section: accuracy and agreement tables, and with labels the confusion matrix and
    per-class precision and sensitivity. ``gain``: what splitting gained, measured (a
    :class:`~splitinfer.records.gain.GainResult` or its ``gain.json``), shown in a "Gain of
    splitting" section: a sentence per objective, a bar chart and ``gain.csv``. ``rank``: a ranked
    bench of the k best plans (a :class:`~splitinfer.records.bench.RankResult` or the file of
    ``splitinfer bench --top K -o``), shown in a "Rank fidelity" section: a sentence, predicted
    against measured per plan and ``rank.csv``. ``on_file`` is called with every file written
    (figures as PNG and SVG, blocks.csv, plans.csv, chosen_plan.csv, energy.csv, bench.csv, gain.csv,
    rank.csv, resources.csv, accuracy.csv, agreement.csv, classes.csv). Plans with power figures get an
    "Energy" section: each battery device's joules split into compute, communication and idle
    (:mod:`.energy`). A bench with resource samples gets a "Resource use" section: each worker's CPU,
    memory and GPU over time, and their mean, standard deviation and median per device
    (``resources.csv``). A plan that chose precisions and compressions shows them on its figures and in
    its tables, with its predicted quality cost.

    >>> write_report("profile.json", "splitinfer-report", plans="plan.json")  # doctest: +SKIP
    """
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    if isinstance(plans, str | Path):
        plans = read_plans(plans)
    bench_data = load_bench(bench) if isinstance(bench, str | Path) else bench
    data = gather(prof, plans, bench_data)
    doc = quality.load_eval(evaluation) if isinstance(evaluation, str | Path) else evaluation
    gains = read_gain(gain, prof)
    ranks = read_rank(rank, prof)
    ops = _main_ops(model, prof) if model is not None else None
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SplitinferError(f"cannot create report folder {out}: {e.strerror}",
                              "pick a writable folder for -o") from None
    notify = on_file or (lambda _p: None)
    figs = _figures(data, out, ops, notify, doc, gains, ranks)
    index = out / "index.html"
    index.write_text(render_page(f"splitinfer report: {data.model_label}",
                                 f"{len(prof.blocks)} blocks on {len(prof.devices)} devices",
                                 _sections(data, figs, ops, out, notify, doc, gains, ranks)),
                     encoding="utf-8")
    notify(index)
    return index


def _sections(data: ReportData, figs: list[FigureFile], ops: list[str] | None, out: Path,
              notify: OnFile, evaluation: quality.EvalDoc | None = None,
              gains: GainResult | None = None, ranks: RankResult | None = None) -> list[tuple[str, str, str]]:
    """The page's sections (anchor, heading, HTML); writes the CSV tables on the way."""
    blocks = block_table(data.profile, ops)
    notify(write_csv(blocks, out / "blocks.csv"))
    sections = [("summary", "Summary", _summary(data))]
    if gains is not None and gains.gains:  # the headline of a demo: right after the summary
        figure = _section_html(figs, ("gain_bars",))
        sections.append(("gain", "Gain of splitting", gain_html(gains, figure, out, notify)))
    if ranks is not None and ranks.plans:  # does the prediction order plans as they measure: after the gain
        figure = _section_html(figs, ("rank_fidelity",))
        sections.append(("rank", "Rank fidelity", rank_html(ranks, figure, out, notify)))
    sections += [("profile", "Profile", _section_html(figs, ("block_latency", "block_statistics"))
                 + render_table(blocks, "Blocks", raw_csv="blocks.csv", scroll=True))]
    if data.plans:
        table = plan_table(data.plans)
        notify(write_csv(table, out / "plans.csv"))
        inner = _section_html(figs, ("plans", "timeline", "block_graph", "pareto"))
        note = PLAN_TRADEOFFS_NOTE if "quality_cost" in table[0] else ""
        inner += render_table(table, "Plans", raw_csv="plans.csv", note=note)
        sections.append(("plans", "Plans", inner + _chosen_html(data, out, notify)))
    elif data.chosen is not None:
        sections.append(("plans", "Plan", _section_html(figs, ("timeline", "block_graph"))
                         + _chosen_html(data, out, notify)))
    with_energy = (*data.plans, *(() if data.chosen is None or data.chosen in data.plans else (data.chosen,)))
    if has_energy_split(with_energy):  # what the plans' joules are spent on: after the plans
        figure = _section_html(figs, ("energy_split",))
        sections.append(("energy", "Energy", energy_html([p for p in with_energy if p.energy_split], figure,
                                                         out, notify)))
    if data.bench is not None:
        table = bench_table(data.bench)
        notify(write_csv(table, out / "bench.csv"))
        inner = _section_html(figs, ("bench_parts", "bench_latency"))
        inner += render_table(table, "Predicted vs measured", raw_csv="bench.csv", note=REL_ERROR_NOTE)
        sections.append(("bench", "Predicted vs measured", inner))
        if data.bench.exits:
            sections.append(("exits", "Early exits",
                             exit_html(data.bench, _section_html(figs, ("exit_mix",)), out, notify)))
        if data.bench.resources:
            stems = tuple(stem for stem, _, _ in RESOURCE_FIGURES.values())
            sections.append(("resources", "Resource use",
                             resource_html(data.bench, _section_html(figs, stems), out, notify)))
    if evaluation is not None:
        sections.append(("quality", "Quality", _quality_html(evaluation, figs, out, notify,
                                                             data.profile.model.sha256)))
    return sections


def _chosen_html(data: ReportData, out: Path, notify: OnFile) -> str:
    """The chosen plan's stages and hops as a table (precision and compression of each)."""
    if data.chosen is None:
        return ""
    table = plan_steps_table(data.chosen)
    notify(write_csv(table, out / "chosen_plan.csv"))
    return render_table(table, f"Stages and hops of {data.chosen.objective} #{data.chosen.rank}",
                        raw_csv="chosen_plan.csv", note=STEPS_NOTE)


def _quality_html(doc: quality.EvalDoc, figs: list[FigureFile], out: Path, notify: OnFile,
                  profiled_sha256: str) -> str:
    """The Quality section: what ran, accuracy, agreement, the confusion matrix and the per-class table."""
    inner = render_key_values(quality.summary_pairs(doc, profiled_sha256))
    tables = [("accuracy", "Accuracy", quality.accuracy_table(doc), ""),
              ("agreement", "Agreement with the reference", quality.agreement_table(doc),
               "How close the candidate's outputs are to the whole model's: cosine, SNR, largest and mean "
               "absolute difference, and how often their top classes agree.")]
    for stem, title, table, note in tables:
        if table is not None:
            notify(write_csv(table, out / f"{stem}.csv"))
            inner += render_table(table, title, raw_csv=f"{stem}.csv", note=note)
    if doc.classification is None:
        return inner + ('<p class="note">No accuracy or confusion matrix: the data had no labels, or the '
                        "model has no classifier output (N x classes).</p>")
    inner += _section_html(figs, ("confusion",))
    table = quality.class_table(doc)
    assert table is not None
    notify(write_csv(table, out / "classes.csv"))
    return inner + render_table(table, "Per class", raw_csv="classes.csv", scroll=True,
                                note="precision: the share of a class's predictions that are right; "
                                     "sensitivity: the share of its samples found. Empty: undefined "
                                     "(never predicted, or absent from the labels).")


