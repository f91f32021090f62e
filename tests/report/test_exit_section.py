"""The report's "Early exits" section, from a bench of a plan with exits: the sentence, the figure of
where requests were answered and how long they took, and exits.csv; a bench without exits has none."""

from __future__ import annotations

import csv

import msgspec

from splitinfer.records.bench import ExitBench
from splitinfer.report import write_report
from splitinfer.report.exits import exit_line

EXITS = (ExitBench("exit1", 50, 0.5, 0.53, 0.075, 0.078, 0.0766),
         ExitBench("exit2", 30, 0.3, 0.34, 0.105, 0.109, 0.1069),
         ExitBench("", 20, 0.2, 0.13, 0.124, 0.125, 0.1307))


def _with_exits(bench):
    worst = msgspec.structs.replace(bench.plan, latency_s=0.1244)
    plan = msgspec.structs.replace(bench.plan, exit_mix={"exit1": 0.53, "exit2": 0.34}, full_depth=worst)
    return msgspec.structs.replace(bench, plan=plan, exits=EXITS, num_requests=100, latency_mean_s=0.0955,
                                   predicted_latency_s=0.0919)


def test_the_section_says_where_requests_were_answered(tmp_path, profile, bench):
    with_exits = _with_exits(bench)
    assert exit_line(with_exits) == (
        "80% of 100 requests were answered by an early exit; the mean latency was 95.5 ms against 91.9 ms "
        "expected, and 124.4 ms predicted for a request that takes no exit.")
    index = write_report(profile, tmp_path / "r", bench=with_exits)
    page = index.read_text()
    assert 'id="exits"' in page and "Early exits" in page and "exit_mix.png" in page
    with open(tmp_path / "r" / "exits.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["answered_at"] for r in rows] == ["exit1", "exit2", "the end"]
    assert [float(r["share"]) for r in rows] == [0.5, 0.3, 0.2]
    assert (tmp_path / "r" / "exit_mix.svg").is_file()


def test_a_bench_without_exits_has_no_such_section(tmp_path, profile, bench):
    page = write_report(profile, tmp_path / "r", bench=bench).read_text()
    assert 'id="exits"' not in page and not (tmp_path / "r" / "exits.csv").exists()
