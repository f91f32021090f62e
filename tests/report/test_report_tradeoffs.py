"""A trade-off plan in the report: each stage's precision and each hop's compression on the timeline,
the block graph and in the tables, the predicted quality cost in the summary, and the latency-quality
Pareto front. The plan is made by hand over the sample profile's blocks (the planner's own trade-off
plans are tested in tests/plan): edge int8 -> cloud fp16 -> edge fp32, with an fp16 upload and an
int8 cut."""

from __future__ import annotations

import csv
import math

import msgspec
import pytest
from matplotlib.text import Annotation

from splitinfer.plan import Hop, Plan, Stage, plan_to_json
from splitinfer.profile.files import save_profile
from splitinfer.report import check_page, figures, find_browser, plan_figures, write_report
from splitinfer.report.inputs import device_colors
from splitinfer.report.tables import plan_steps_table, plan_table

COST = 0.0083  # shown as 0.83% top-1 agreement drop


def _stage(profile, device: str, first: int, last: int, precision: str) -> Stage:
    compute_s = math.fsum(profile.devices[device].blocks[b].median_s for b in range(first, last + 1))
    return Stage(device, first, last, compute_s, precision)


def _tradeoff_plan(profile, objective: str = "latency", rank: int = 1, cost: float | None = COST) -> Plan:
    last = len(profile.blocks) - 1
    stages = (_stage(profile, "edge", 0, 5, "int8"), _stage(profile, "cloud", 6, 11, "fp16"),
              _stage(profile, "edge", 12, last, "fp32"))
    hops = (Hop("camera", "edge", 6000, 0.004, "upload", "fp16", 0.0003),
            Hop("edge", "cloud", 512, 0.021, "cut", "int8", 0.0002),
            Hop("cloud", "edge", 2048, 0.022, "cut"),
            Hop("edge", "camera", 40, 0.005, "return"))
    latency = math.fsum([*(s.compute_s for s in stages), *(h.transfer_s + h.codec_s for h in hops)])
    return Plan(objective, stages, hops, latency, latency, 1 / latency, sum(h.num_bytes for h in hops), 6000,
                rank=rank, solver="milp-tradeoffs", quality_cost=cost)


@pytest.fixture(scope="module")
def tradeoff(profile):
    return _tradeoff_plan(profile)


@pytest.fixture(scope="module")
def tradeoff_report(tmp_path_factory, profile, plans, tradeoff):
    """A report of the trade-off plan (chosen: listed first) beside the sample's plain plans."""
    root = tmp_path_factory.mktemp("tradeoff-report")
    save_profile(profile, root / "profile.json")
    (root / "plan.json").write_text(plan_to_json([tradeoff, *plans[1:3]]))
    written = []
    index = write_report(root / "profile.json", root / "out", plans=root / "plan.json",
                         on_file=written.append)
    return index, {p.name for p in written}


def _rows(path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_the_plan_table_shows_precisions_compressions_and_the_quality_cost(tradeoff, plans):
    header, rows = plan_table([tradeoff, plans[1]])
    row = dict(zip(header, rows[0], strict=True))
    assert row["precisions"] == "int8, fp16, fp32"
    assert row["compressions"] == "upload fp16, cut int8, cut none, return none"
    assert row["codec_s"] == pytest.approx(0.0005)
    assert row["quality_cost"] == COST
    plain = dict(zip(header, rows[1], strict=True))
    assert plain["precisions"] == "fp32, fp32" and plain["quality_cost"] == ""
    header, _ = plan_table(plans)  # plain plans only: the columns they would all leave at fp32 and none
    assert not {"precisions", "compressions", "codec_s", "quality_cost"} & set(header)


def test_the_steps_table_lists_each_stage_precision_and_hop_compression_in_request_order(tradeoff):
    header, rows = plan_steps_table(tradeoff)
    steps = [dict(zip(header, r, strict=True)) for r in rows]
    assert [s["step"] for s in steps] == ["upload", "stage 0", "cut", "stage 1", "cut", "stage 2", "return"]
    assert [s["precision"] for s in steps if s["step"].startswith("stage")] == ["int8", "fp16", "fp32"]
    assert [s["compression"] for s in steps if not s["step"].startswith("stage")] == ["fp16", "int8", "none",
                                                                                       "none"]
    assert steps[2]["where"] == "edge -> cloud" and steps[2]["num_bytes"] == 512
    assert math.fsum(s["total_s"] for s in steps) == pytest.approx(tradeoff.latency_s, rel=1e-12)


@pytest.mark.parametrize("wide", [False, True], ids=["narrow-stages", "wide-stages"])
def test_the_timeline_counts_compressing_and_names_precisions_and_compressions(profile, tradeoff, wide):
    plan = tradeoff
    if wide:  # fast links: every stage box is wide enough to hold its label
        hops = tuple(msgspec.structs.replace(h, transfer_s=1e-6, codec_s=1e-7) for h in plan.hops)
        plan = msgspec.structs.replace(plan, hops=hops, latency_s=plan.compute_s + 4 * 1.1e-6)
    steps = list(plan_figures.timeline_steps(plan))
    start, duration = steps[-1][1:]
    assert start + duration == pytest.approx(plan.latency_s, rel=1e-12)  # codec_s included
    fig = plan_figures.timeline(plan, device_colors(profile, (plan,)))
    ax = fig.axes[0]
    on_stages = [t.get_text() for t in ax.texts if not isinstance(t, Annotation) and t.get_text()
                 and not t.get_text().isdigit()]
    if wide:
        assert [t.splitlines()[0] for t in on_stages] == ["blocks 0-5 int8", "blocks 6-11 fp16",
                                                          f"blocks 12-{len(profile.blocks) - 1} fp32"]
    else:  # too narrow for the text: the precision above the box
        assert on_stages == ["int8", "fp16", "fp32"]
    on_hops = [t.get_text() for t in ax.texts if isinstance(t, Annotation) and t.get_text()]
    assert on_hops == ["fp16", "int8"]  # the compressed hops' arrows, in order; raw hops unlabelled
    assert "0.83% top-1 agreement drop" in ax.get_title()
    key = "\n".join(t.get_text() for t in fig.texts)
    assert "upload camera\u2192edge 6 kB fp16" in key and "cut edge\u2192cloud 512 B int8" in key
    if not wide:
        assert "(0.3 ms compressing and restoring)" in key


def test_the_timeline_of_a_plain_plan_names_no_precision(profile, plans):
    plan = plans[1]
    ax = plan_figures.timeline(plan, device_colors(profile, (plan,))).axes[0]
    assert not any("fp32" in t.get_text() or "none" in t.get_text() for t in ax.texts)


def test_the_block_graph_labels_precisions_and_compressed_cuts(profile, tradeoff, plans):
    colors = device_colors(profile, (tradeoff,))
    texts = [t.get_text() for t in figures.block_graph(profile, tradeoff, colors).axes[0].texts]
    firsts = [t.splitlines()[0] for t in texts if "FLOP" in t]
    assert firsts[0] == "0 int8" and firsts[6] == "6 fp16" and firsts[-1] == f"{len(profile.blocks) - 1} fp32"
    assert "512 B int8" in texts  # the compressed cut: bytes on the wire and how
    assert sum(t.endswith(" kB") or t.endswith(" B") for t in texts) == 1  # the raw cut, as before
    plain = [t.get_text() for t in figures.block_graph(profile, plans[1], colors).axes[0].texts]
    assert not any(t.splitlines()[0].endswith(("fp32", "int8")) for t in plain)


def test_plans_compared_give_the_quality_cost(profile, tradeoff, plans):
    ax = plan_figures.plans_compared([tradeoff, plans[1]], device_colors(profile, (tradeoff, *plans))).axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert "quality cost 0.83%" in labels[0] and "quality" not in labels[1]


def test_the_latency_quality_front_is_drawn(profile, tmp_path):
    front = [_tradeoff_plan(profile, "pareto-quality", rank, cost) for rank, cost in ((1, 0.02), (2, 0.005))]
    assert plan_figures.pareto_front_names(front) == ["pareto-quality"]
    ax = plan_figures.pareto_fronts(front, None).axes[0]
    assert "quality" in ax.get_title() and "agreement drop" in ax.get_ylabel()
    (points,) = ax.collections
    assert sorted(y for _, y in points.get_offsets()) == pytest.approx([0.5, 2.0])
    written = []
    write_report(profile, tmp_path, plans=front, on_file=written.append)
    assert "pareto.png" in {p.name for p in written}


def test_the_page_shows_the_trade_offs(tradeoff_report, tradeoff):
    index, names = tradeoff_report
    assert {"plans.csv", "chosen_plan.csv", "timeline.png", "block_graph.png"} <= names
    page = index.read_text()
    assert "<td>quality cost</td><td>0.83% top-1 agreement drop with the fp32 model (predicted)</td>" in page
    assert "edge[0-5] int8, cloud[6-11] fp16" in page  # the summary's precisions
    assert "upload camera -&gt; edge fp16, cut edge -&gt; cloud int8" in page  # ... and compressions
    assert '<td class="">0.83%</td>' in page  # the plans table's quality_cost
    assert '<td class="text">int8, fp16, fp32</td>' in page
    assert "Stages and hops of latency #1" in page
    steps = _rows(index.parent / "chosen_plan.csv")
    assert [r["precision"] for r in steps if r["step"].startswith("stage")] == ["int8", "fp16", "fp32"]
    assert [r["compression"] for r in steps if not r["step"].startswith("stage")] == ["fp16", "int8", "none",
                                                                                      "none"]
    (first, *_) = _rows(index.parent / "plans.csv")
    assert float(first["quality_cost"]) == COST and first["compressions"].startswith("upload fp16")


def test_a_plain_report_has_the_steps_table_but_no_trade_off_columns(report_dir, bench):
    page = (report_dir / "index.html").read_text()
    assert "quality cost" not in page and "quality_cost" not in page
    steps = _rows(report_dir / "chosen_plan.csv")
    assert {r["precision"] for r in steps if r["step"].startswith("stage")} == {"fp32"}
    assert len(steps) == len(bench.plan.stages) + len(bench.plan.hops)


@pytest.mark.skipif(find_browser() is None, reason="no chromium, chromium-browser or google-chrome on PATH")
def test_the_trade_off_report_renders_in_chromium(tradeoff_report):
    index, _ = tradeoff_report
    check = check_page(index)
    assert check.ok, check.problems
    assert check.console == []
    assert len(check.images) == 5  # block latency, statistics, plans, timeline, block graph
    for alt, width, height in check.images:
        assert alt and width > 300 and height > 200


def test_the_tradeoff_plan_is_consistent(tradeoff):
    # The hand-made plan keeps the planner's rules, so the tests above test what a real plan shows.
    assert tradeoff.has_tradeoffs
    assert msgspec.json.decode(plan_to_json(tradeoff))["plans"][0]["quality_cost"] == COST
    assert tradeoff.latency_s == pytest.approx(tradeoff.compute_s + tradeoff.transfer_s + tradeoff.codec_s)
