"""The report's "Gain of splitting" section: the sentences, the bar chart and gain.csv from a gain result;
a report without one has no such section and still renders."""

from __future__ import annotations

import csv
import re

import pytest
from helpers import report_sample as sample

from splitinfer.cluster import parse_cluster
from splitinfer.errors import PlanError, SchemaError
from splitinfer.plan import Constraints, Plan, describe_stages, solve
from splitinfer.profile.problem import build_problem
from splitinfer.records.bench import RankedBench, rel_error
from splitinfer.records.gain import GainResult, gain_line, save_gain, split_gain
from splitinfer.report import write_report
from splitinfer.report.gain import gain_table


def _ranked(plan: Plan, profile, rank: int, seed: int) -> RankedBench:
    bench = sample.make_bench(plan, profile, num_requests=20, seed=seed)
    if plan.objective == "latency":
        predicted, measured = plan.latency_s, bench.latency_median_s
    else:
        predicted, measured = bench.predicted_throughput_rps, bench.throughput_rps
    return RankedBench(rank=rank, measured_rank=rank, predicted=predicted, measured=measured,
                       rel_error=rel_error(predicted, measured), bench=bench)


def _gain(profile, objective: str, best_constraints: Constraints = Constraints()):
    """The sample's best plan for ``objective`` against its best single-device plan, with made-up
    measurements near the predictions (``best_constraints`` can force a split)."""
    problem = build_problem(profile, parse_cluster(sample.cluster_dict()))
    best = solve(problem, objective, best_constraints)[0]
    singles = solve(problem, objective, Constraints(max_stages=1), top_k=2)  # the two best devices alone
    measured_best = _ranked(best, profile, 1, seed=3)
    measured_singles = [measured_best] if len(best.stages) == 1 else [
        _ranked(single, profile, k, seed=k + 2) for k, single in enumerate(singles, start=2)]
    return split_gain(objective, measured_best, measured_singles, num_requests=20,
                      concurrency=1 if objective == "latency" else 4)


@pytest.fixture(scope="module")
def gains(profile) -> GainResult:
    # On the sample continuum the best latency plan is the camera alone (no split, gain 1.0) and the
    # best throughput plan a split: both cases in one report.
    return GainResult(gains=(_gain(profile, "latency"), _gain(profile, "throughput")),
                      date="2026-11-23T12:30:00Z", host={"cpu": "emulated"})


def test_the_sample_has_one_unsplit_and_one_split_objective(gains):
    latency, throughput = gains.gains
    assert not latency.is_split and latency.gain == 1.0
    assert throughput.is_split and len(throughput.singles) == 2 and throughput.single in throughput.singles


def test_a_report_with_the_gain_shows_its_lines_figure_and_numbers(profile, plans, bench, gains, tmp_path):
    save_gain(gains, tmp_path / "gain.json")
    written = []
    index = write_report(profile, tmp_path / "out", plans=plans, bench=bench, gain=tmp_path / "gain.json",
                         on_file=written.append)
    page = index.read_text()
    section = re.search(r'<section id="gain">(.*?)</section>', page, re.S).group(1)
    for g in gains.gains:
        assert gain_line(g).replace("->", "-&gt;") in section
    assert 'id="gain_bars"' in section and "<table>" in section
    throughput = gains.of("throughput")
    assert f"{throughput.gain:.2f}x" in section and f"{throughput.predicted_gain:.2f}x" in section
    assert (tmp_path / "out" / "gain_bars.png").stat().st_size > 1000
    assert {"gain.csv", "gain_bars.png", "gain_bars.svg"} <= {p.name for p in written}
    assert page.index('id="gain"') < page.index('id="profile"')  # the headline, right after the summary
    # read back from gain.json: the single device compared with is still named as such
    with (tmp_path / "out" / "gain.csv").open() as f:
        labels = [(r["plan"], r["stages"]) for r in csv.DictReader(f) if r["objective"] == "throughput"]
    assert labels.count(("best single device", describe_stages(throughput.single.bench.plan))) == 1


def test_gain_csv_holds_each_plan_and_the_measured_gain_exactly(profile, gains, tmp_path):
    write_report(profile, tmp_path, gain=gains)
    with (tmp_path / "gain.csv").open() as f:
        rows = list(csv.DictReader(f))
    latency, throughput = gains.gains
    # latency: one plan (the best is a single device); throughput: the two single devices, then the split
    assert [r["objective"] for r in rows] == ["latency", "throughput", "throughput", "throughput"]
    assert rows[0]["plan"] == "best plan = best single device"
    assert float(rows[0]["measured_s"]) == latency.best.measured and float(rows[0]["gain"]) == 1.0
    singles, best = rows[1:3], rows[3]
    for row, entry in zip(singles, throughput.singles, strict=True):
        assert row["stages"] == describe_stages(entry.bench.plan) and row["gain"] == ""
        assert float(row["measured_rps"]) == entry.measured and float(row["predicted_rps"]) == entry.predicted
        assert (row["plan"] == "best single device") == (entry is throughput.single)
    assert best["plan"] == "best plan" and float(best["measured_rps"]) == throughput.best.measured
    assert float(best["gain"]) == pytest.approx(throughput.best.measured / throughput.single.measured)
    assert throughput.single.measured == max(s.measured for s in throughput.singles)
    assert best["num_stages"] == str(len(throughput.best.bench.plan.stages))


def test_a_split_slower_than_the_single_device_is_shown_as_it_measured(profile):
    forced = _gain(profile, "latency", Constraints(requires=("edge",)))  # a split the planner did not want
    assert forced.is_split
    header, rows = gain_table(GainResult(gains=(forced,), date="", host={}))
    gain = rows[-1][header.index("gain")]
    assert gain == pytest.approx(forced.single.measured / forced.best.measured)
    assert gain < 1.0  # no flattering: the ratio is what was measured


def test_a_report_without_the_gain_has_no_gain_section_and_still_renders(report_dir):
    page = (report_dir / "index.html").read_text()
    assert 'id="gain"' not in page and "Gain of splitting" not in page
    assert not (report_dir / "gain.csv").exists() and not (report_dir / "gain_bars.png").exists()
    assert '<section id="bench">' in page


def test_a_gain_of_another_model_or_a_bad_file_is_refused(profile, gains, tmp_path):
    other = sample.make_profile("mobilenetv2", small=True, max_blocks=8)  # other blocks than the gain's plans
    with pytest.raises(PlanError, match="the gain file's latency plan"):
        write_report(other, tmp_path, gain=gains)
    (tmp_path / "bad.json").write_text('{"kind": "rank", "schema": 1}')
    with pytest.raises(SchemaError, match="not a gain file"):
        write_report(profile, tmp_path, gain=tmp_path / "bad.json")


def test_report_command_takes_the_gain_file(profile, plans, bench, gains, tmp_path):
    from splitinfer.cli import main
    from splitinfer.plan import plan_to_json
    from splitinfer.profile.files import save_profile
    from splitinfer.records.bench import save_bench

    save_profile(profile, tmp_path / "profile.json")
    (tmp_path / "plan.json").write_text(plan_to_json(plans))
    save_bench(bench, tmp_path / "bench.json")
    save_gain(gains, tmp_path / "gain.json")
    out = tmp_path / "out"
    assert main(["report", str(tmp_path / "profile.json"), "-p", str(tmp_path / "plan.json"), "-b",
                 str(tmp_path / "bench.json"), "--gain", str(tmp_path / "gain.json"), "-o", str(out)]) == 0
    assert "Gain of splitting" in (out / "index.html").read_text() and (out / "gain.csv").is_file()
