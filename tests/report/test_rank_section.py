"""The report's "Rank fidelity" section: the sentence, the predicted-against-measured figure and rank.csv
from a ranked bench (``splitinfer bench --top K -o rank.json``); a report without one has no such section."""

from __future__ import annotations

import csv
import re

import msgspec
import pytest
from helpers import report_sample as sample
from helpers.cli import one_error_line, run_cli

from splitinfer.cluster import parse_cluster
from splitinfer.errors import PlanError, SchemaError
from splitinfer.plan import Plan, describe_stages, plan_to_json, solve
from splitinfer.profile.files import save_profile
from splitinfer.profile.problem import build_problem
from splitinfer.records.bench import (
    RankedBench,
    RankResult,
    discordant_pairs,
    kendall_tau,
    measured_ranks,
    regret,
    rel_error,
    save_rank,
)
from splitinfer.records.gain import GainResult, split_gain
from splitinfer.report import write_report
from splitinfer.report.rank import rank_line


def _rank(plans: list[Plan], profile, factors: list[float], *, interleaved: bool = True,
          note: str = "") -> RankResult:
    """A ranked bench of ``plans`` (predicted order) as ``bench_ranked`` records it, each plan measured at
    its predicted figure times its factor (latency: a factor above 1 is slower; throughput: lower)."""
    figure = plans[0].objective
    entries = []
    for k, (plan, factor) in enumerate(zip(plans, factors, strict=True), start=1):
        bench = sample.make_bench(plan, profile, num_requests=20, seed=k)
        predicted = plan.latency_s if figure == "latency" else plan.throughput_rps
        entries.append((predicted, predicted * factor, bench))
    measured = [m for _p, m, _b in entries]
    ranks = measured_ranks(measured, figure)
    ranked = tuple(RankedBench(rank=k, measured_rank=r, predicted=p, measured=m, rel_error=rel_error(p, m),
                               bench=b) for k, ((p, m, b), r) in enumerate(zip(entries, ranks, strict=True),
                                                                          start=1))
    return RankResult(figure=figure, num_requests=20, concurrency=1 if figure == "latency" else 4,
                      interleaved=interleaved, note=note, plans=ranked, measured_best=ranks.index(1) + 1,
                      regret=regret(measured, figure), kendall_tau=kendall_tau(ranks),
                      num_discordant_pairs=discordant_pairs(ranks), date="2026-11-23T12:30:00Z",
                      host={"cpu": "emulated"})


@pytest.fixture(scope="module")
def latency_plans(plans) -> list[Plan]:
    """The sample's three best latency plans, in predicted order."""
    return [p for p in plans if p.objective == "latency"][:3]


@pytest.fixture(scope="module")
def in_order(latency_plans, profile) -> RankResult:
    """Every plan measured 10% slower than predicted: the measured order is the predicted one."""
    return _rank(latency_plans, profile, [1.1, 1.1, 1.1])


@pytest.fixture(scope="module")
def reordered(latency_plans, profile) -> RankResult:
    """The predicted best measured slowest, the second best fastest."""
    first = latency_plans[0].latency_s
    factors = [1.6, first * 1.1 / latency_plans[1].latency_s, first * 1.3 / latency_plans[2].latency_s]
    return _rank(latency_plans, profile, factors)


def _section(page: str) -> str:
    return re.search(r'<section id="rank">(.*?)</section>', page, re.S).group(1)


def _rows(path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_the_sample_records_hold_both_cases(in_order, reordered):
    assert [p.measured_rank for p in in_order.plans] == [1, 2, 3] and in_order.kendall_tau == 1.0
    assert [p.measured_rank for p in reordered.plans] == [3, 1, 2] and reordered.measured_best == 2
    assert reordered.num_discordant_pairs == 2 and reordered.regret > 0.4


def test_a_report_with_the_rank_shows_its_line_figure_and_table(profile, plans, bench, in_order, tmp_path):
    save_rank(in_order, tmp_path / "rank.json")
    best = _rank([bench.plan], profile, [1.1]).plans[0]
    gains = GainResult(gains=(split_gain("latency", best, [best], num_requests=20, concurrency=1),),
                       date="", host={})
    written = []
    index = write_report(profile, tmp_path / "out", plans=plans, bench=bench, gain=gains,
                         rank=tmp_path / "rank.json", on_file=written.append)
    page = index.read_text()
    section = _section(page)
    line = "3 latency plans measured side by side (interleaved): the predicted best measured best; " \
           "Kendall&#x27;s tau 1.00; regret 0.0%"
    assert rank_line(in_order).replace("'", "&#x27;") == line and f"<p>{line}</p>" in section
    assert 'id="rank_fidelity"' in section and "<table>" in section and 'href="rank.csv"' in section
    note = section.split("<table>")[1]  # under the table, a note says what regret and Kendall's tau are
    assert "Regret: how much longer a request took" in note and "Kendall&#x27;s tau: how alike" in note
    assert (tmp_path / "out" / "rank_fidelity.png").stat().st_size > 1000
    assert {"rank.csv", "rank_fidelity.png", "rank_fidelity.svg"} <= {p.name for p in written}
    assert page.index('id="gain"') < page.index('id="rank"') < page.index('id="profile"')


def test_rank_csv_holds_each_plan_as_the_record_does(profile, reordered, tmp_path):
    write_report(profile, tmp_path, rank=reordered)
    rows = _rows(tmp_path / "rank.csv")
    assert list(rows[0]) == ["predicted_rank", "measured_rank", "stages", "predicted_s", "measured_s",
                             "rel_error"]
    assert len(rows) == len(reordered.plans)
    for row, entry in zip(rows, reordered.plans, strict=True):
        assert int(row["predicted_rank"]) == entry.rank and int(row["measured_rank"]) == entry.measured_rank
        assert row["stages"] == describe_stages(entry.bench.plan)
        assert float(row["predicted_s"]) == entry.predicted and float(row["measured_s"]) == entry.measured
        assert float(row["rel_error"]) == entry.rel_error


def test_a_reorder_names_the_measured_best_and_the_regret(profile, reordered, tmp_path):
    second, first = reordered.plans[1], reordered.plans[0]
    line = rank_line(reordered)
    assert line.startswith("3 latency plans measured side by side (interleaved): plan #2 measured best ")
    assert f"({second.measured * 1e3:.1f} ms against {first.measured * 1e3:.1f} ms for the predicted best)" \
        in line
    assert f"Kendall's tau {reordered.kendall_tau:.2f} (2 of 3 pairs in the other order)" in line
    assert line.endswith(f"regret {reordered.regret:.1%}")
    index = write_report(profile, tmp_path, rank=reordered)
    assert "plan #2 measured best" in _section(index.read_text())


def test_a_throughput_rank_is_in_requests_per_second(profile, tmp_path):
    problem = build_problem(profile, parse_cluster(sample.cluster_dict()))
    plans = solve(problem, "throughput", top_k=3)
    result = _rank(plans, profile, [0.8, 0.9, 0.9], interleaved=False,
                   note="measured one after another: the plans did not fit on the devices at once")
    line = rank_line(result)
    assert line.startswith(f"{len(plans)} throughput plans measured one after another (not interleaved): ")
    index = write_report(profile, tmp_path, rank=result)
    section = _section(index.read_text())
    assert "did not fit on the devices at once" in section  # the record's note, as it says it
    rows = _rows(tmp_path / "rank.csv")
    assert [float(r["measured_rps"]) for r in rows] == [p.measured for p in result.plans]
    assert [float(r["predicted_rps"]) for r in rows] == [p.predicted for p in result.plans]
    assert (tmp_path / "rank_fidelity.png").is_file()
    if result.measured_best != 1:
        assert "req/s against" in line


def test_one_plan_has_no_rank_correlation(latency_plans, profile):
    line = rank_line(_rank(latency_plans[:1], profile, [1.2]))
    assert line == ("1 latency plan measured side by side (interleaved): the predicted best measured best; "
                    "Kendall's tau n/a (one plan); regret 0.0%")


def test_a_report_without_the_rank_has_no_rank_section_and_still_renders(report_dir):
    page = (report_dir / "index.html").read_text()
    assert 'id="rank"' not in page and "Rank fidelity" not in page
    assert not (report_dir / "rank.csv").exists() and not (report_dir / "rank_fidelity.png").exists()
    assert '<section id="bench">' in page


def test_a_rank_of_another_model_or_a_bad_file_is_refused(profile, in_order, tmp_path):
    other = sample.make_profile("mobilenetv2", small=True, max_blocks=8)  # other blocks than the plans'
    with pytest.raises(PlanError, match=r"the rank file's plan #1 \(latency #1\) places blocks 0-15, "
                                        r"the profile has 8 blocks"):
        write_report(other, tmp_path, rank=in_order)
    entry = in_order.plans[1]
    benched_elsewhere = msgspec.structs.replace(entry, bench=msgspec.structs.replace(entry.bench,
                                                                                    model_sha256="f" * 64))
    moved = msgspec.structs.replace(in_order, plans=(in_order.plans[0], benched_elsewhere))
    with pytest.raises(PlanError, match="the rank file's plan #2 ran model ffffffffffff"):
        write_report(profile, tmp_path, rank=moved)
    (tmp_path / "gain.json").write_text('{"kind": "gain", "schema": 1}')
    with pytest.raises(SchemaError, match="not a rank file"):
        write_report(profile, tmp_path, rank=tmp_path / "gain.json")
    assert not (tmp_path / "rank.csv").exists()


def test_report_command_takes_the_rank_file(profile, plans, in_order, tmp_path, capsys):
    save_profile(profile, tmp_path / "profile.json")
    (tmp_path / "plan.json").write_text(plan_to_json(plans))
    save_rank(in_order, tmp_path / "rank.json")
    out = tmp_path / "out"
    code, _out, err = run_cli(capsys, "report", tmp_path / "profile.json", "-p", tmp_path / "plan.json",
                              "--rank", tmp_path / "rank.json", "-o", out)
    assert code == 0, err
    assert "Rank fidelity" in (out / "index.html").read_text() and (out / "rank.csv").is_file()

    code, _out, err = run_cli(capsys, "report", tmp_path / "profile.json", "-r", tmp_path / "missing.json",
                              "-o", tmp_path / "out2")
    assert code == 2 and "cannot read rank file" in one_error_line(err) and "missing.json" in err

    other = sample.make_profile("mobilenetv2", small=True, max_blocks=8)
    save_profile(other, tmp_path / "other.json")
    code, _out, err = run_cli(capsys, "report", tmp_path / "other.json", "-r", tmp_path / "rank.json",
                              "-o", tmp_path / "out3")
    assert code == 2 and "the rank file's plan #1" in one_error_line(err)
