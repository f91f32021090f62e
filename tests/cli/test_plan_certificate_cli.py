"""How each plan is known to be optimal, where people read it: `splitinfer plan`'s table, plan.json,
the report's plan table and plans.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import msgspec
import pytest
from rich.console import Console

from splitinfer.cli import main, plan_cmds
from splitinfer.plan import plan_from_json
from splitinfer.report.html import render_table
from splitinfer.report.tables import plan_table, write_csv

CLUSTER = """
schema: 1
source: camera
devices:
  - {name: camera}
  - {name: edge}
  - {name: cloud, memory: 2MB}
links:
  - {from: camera, to: edge, bandwidth: 80Mbit/s, latency: 2ms}
  - {from: edge, to: cloud, bandwidth: 40Mbit/s, latency: 20ms}
  - {from: camera, to: cloud, bandwidth: 8Mbit/s, latency: 40ms}
"""


def write_profile(path: Path) -> Path:
    """Four blocks on camera, edge and cloud, in the documented format (as in test_plan_cli.py)."""
    def stats(median: float) -> dict:
        return {"median_s": median, "mean_s": median, "p10_s": median, "p90_s": median, "std_s": 0.0, "n": 10}

    doc = {
        "schema": 1,
        "model": {"sha256": "ab" * 32, "name": "handmade"},
        "input_bytes": 600_000,
        "output_bytes": 4_000,
        "blocks": [{"index": i, "nodes": [f"n{i}"], "cut_bytes": c, "output_bytes": c,
                    "param_bytes": 1_000_000} for i, c in enumerate([800_000, 400_000, 100_000, 4_000])],
        "devices": {name: {"blocks": [stats(t * f) for t in (0.05, 0.2, 0.2, 0.1)],
                           "date": "2026-01-01T00:00:00Z"}
                    for name, f in (("camera", 1.0), ("edge", 0.25), ("cloud", 0.05))},
        "links": [],
    }
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def files(tmp_path, monkeypatch):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(CLUSTER)
    # Wide enough for every column: at 80 the certificate, last, is the first to be cropped.
    monkeypatch.setattr(plan_cmds, "console", Console(width=200))
    return write_profile(tmp_path / "profile.json"), cluster, tmp_path


@pytest.mark.parametrize(
    ("extra", "label", "solver"),
    [
        ([], "MILP gap 0.00%", "milp"),  # revisits with a memory limit: the MILP
        (["--no-revisits"], "exact DP", "segment-dp"),
        (["--method", "bruteforce"], "exhaustive", "bruteforce"),
    ],
)
def test_the_plan_table_says_how_each_plan_is_known_to_be_optimal(files, capsys, extra, label, solver):
    profile, cluster, tmp = files
    out = tmp / "plan.json"
    assert main(["plan", str(profile), "--cluster", str(cluster), "--top", "2", "-o", str(out), *extra]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if "latency s" in line)
    assert header.split("┃")[-2].strip() == "certificate" and "gap" not in header
    rows = [line for line in lines if line.startswith("│ ")]
    assert len(rows) == 2 and all(row.split("│")[-2].strip() == label for row in rows)
    plans = plan_from_json(out.read_text())
    assert {p.solver for p in plans} == {solver}
    assert [p.bound for p in plans] == [p.latency_s for p in plans]


def test_a_plan_stopped_by_the_time_limit_shows_its_gap(files, capsys):
    profile, cluster, tmp = files
    out = tmp / "plan.json"
    assert main(["plan", str(profile), "--cluster", str(cluster), "-o", str(out)]) == 0
    capsys.readouterr()
    (plan,) = plan_from_json(out.read_text())
    stopped = msgspec.structs.replace(plan, gap=0.013, bound=plan.latency_s * 0.987)
    unbounded = msgspec.structs.replace(plan, rank=2, gap=None, bound=None)
    plan_cmds.console.print(plan_cmds.format_plans([stopped, unbounded]))
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("│ ")]
    assert [row.split("│")[-2].strip() for row in rows] == ["MILP gap 1.30% (time limit)", "heuristic"]


def test_the_report_table_and_plans_csv_carry_bound_and_certificate(files, capsys, tmp_path):
    profile, cluster, tmp = files
    out = tmp / "plan.json"
    assert main(["plan", str(profile), "--cluster", str(cluster), "--top", "2", "--no-revisits", "-o",
                 str(out)]) == 0
    (dp, second) = plan_from_json(out.read_text())
    stopped = msgspec.structs.replace(second, solver="milp", gap=0.25, bound=second.latency_s * 0.75)
    table = plan_table([dp, stopped])
    with write_csv(table, tmp_path / "plans.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["certificate"] for r in rows] == ["exact DP", "MILP gap 25.00% (time limit)"]
    assert [float(r["bound"]) for r in rows] == [dp.latency_s, stopped.bound]
    assert [r["gap"] for r in rows] == ["", "0.25"]
    html = render_table(table, "Plans")
    assert "<th class=\"text\">certificate</th>" in html and ">exact DP<" in html and ">25.00%<" in html
