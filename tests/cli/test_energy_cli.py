"""``splitinfer energy sweep``: the least energy under each latency budget, as a table, a CSV and a plot;
one-line errors for bad input."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest
from helpers.cli import one_error_line, run_cli

from splitinfer.cluster import load_cluster
from splitinfer.plan import Constraints, solve
from splitinfer.profile.files import load_profile
from splitinfer.profile.problem import build_problem


def _stats(median: float) -> dict:
    return {"median_s": median, "mean_s": median, "p10_s": median, "p90_s": median, "std_s": 0.0, "n": 10}


# A frugal camera with a costly radio: offloading everything to the edge is fastest, sending only the small
# cut after block 2 uses least energy.
CLUSTER = """
schema: 1
source: camera
devices:
  - {name: camera, power: {busy_w: 0.5, idle_w: 0.1, radio_w: 4, battery: true}}
  - {name: edge}
links:
  - {from: camera, to: edge, bandwidth: 80Mbit/s, latency: 2ms}
"""


@pytest.fixture
def files(tmp_path) -> tuple[Path, Path, Path]:
    camera = [0.05, 0.2, 0.2, 0.1]
    doc = {
        "schema": 1,
        "model": {"sha256": "ab" * 32, "name": "handmade"},
        "input_bytes": 600_000,
        "output_bytes": 4_000,
        "blocks": [
            {"index": i, "nodes": [f"n{i}"], "cut_bytes": c, "output_bytes": c, "param_bytes": 1_000}
            for i, c in enumerate([800_000, 400_000, 10_000, 4_000])
        ],
        "devices": {
            name: {"blocks": [_stats(t * f) for t in camera], "date": "2026-01-01T00:00:00Z"}
            for name, f in (("camera", 1.0), ("edge", 0.1))
        },
        "links": [],
    }
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(doc))
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(CLUSTER)
    return profile, cluster, tmp_path


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_sweep_writes_the_curve(files, capsys):
    profile, cluster, tmp = files
    code, out, err = run_cli(capsys, "energy", "sweep", profile, "--cluster", cluster, "--num-budgets", 6,
                             "-o", tmp / "sweep.csv", "--plot", tmp / "sweep.png")
    assert code == 0, err
    problem = build_problem(load_profile(profile), load_cluster(cluster))
    fastest, least = solve(problem, "latency")[0], solve(problem, "energy")[0]
    assert least.latency_s > fastest.latency_s and least.energy_j < fastest.energy_j
    rows = _rows(tmp / "sweep.csv")
    budgets = [float(r["budget_s"]) for r in rows]
    assert len(rows) == 6 and budgets == sorted(budgets)
    assert budgets[0] == pytest.approx(fastest.latency_s) and budgets[-1] > least.latency_s
    assert all(r["feasible"] == "True" for r in rows)
    energies = [float(r["energy_j"]) for r in rows]
    assert all(b <= a for a, b in itertools.pairwise(energies))
    assert energies[0] == pytest.approx(fastest.energy_j) and energies[-1] == pytest.approx(least.energy_j)
    for r, budget in zip(rows, budgets, strict=True):  # each row the least energy within its budget
        best = solve(problem, "energy", Constraints(max_latency_s=budget))[0]
        assert float(r["energy_j"]) == pytest.approx(best.energy_j)
        assert float(r["latency_s"]) <= budget * (1 + 1e-9)
        parts = float(r["compute_j"]) + float(r["communication_j"]) + float(r["idle_j"])
        assert parts == pytest.approx(float(r["energy_j"]))
    assert (tmp / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "least energy under each latency budget" in out and f"wrote {tmp / 'sweep.csv'}" in out


def test_given_budgets_keep_the_ones_no_plan_meets(files, capsys):
    profile, cluster, tmp = files
    code, out, err = run_cli(capsys, "energy", "sweep", profile, "--cluster", cluster,
                             "--budgets", "2s, 1ms", "-o", tmp / "sweep.csv")
    assert code == 0, err
    rows = _rows(tmp / "sweep.csv")
    assert [(float(r["budget_s"]), r["feasible"]) for r in rows] == [(0.001, "False"), (2.0, "True")]
    assert rows[0]["energy_j"] == "" and rows[1]["stages"] == "camera[0-2] -> edge[3]"
    assert "no plan meets this budget" in out


def test_plan_prints_the_energy_split(files, capsys):
    profile, cluster, _ = files
    code, out, _err = run_cli(capsys, "plan", profile, "--cluster", cluster, "--objective", "energy")
    assert code == 0
    assert "energy per battery device" in out and "communication J" in out
    energy_lines = out.split("energy per battery device")[1].splitlines()  # after the plans' table
    row = next(line for line in energy_lines if "camera" in line)
    plan = solve(build_problem(load_profile(profile), load_cluster(cluster)), "energy")[0]
    split = plan.energy_split["camera"]
    joules = (split.compute_j, split.communication_j, split.idle_j, split.total_j)
    assert all(f"{j:.4f}" in row for j in joules)


@pytest.mark.parametrize(("args", "words"), [
    (["--budgets", "soon"], "--budgets"),
    (["--budgets", "0"], "--budgets 0 is 0"),
    (["--budgets", "0.1", "--num-budgets", "3"], "--budgets and --num-budgets"),
    (["--num-budgets", "0"], "--num-budgets is 0"),
    (["--plot", "sweep.txt"], "--plot"),
    (["--method", "fast"], "--method"),
])
def test_bad_input_is_one_line_and_exit_2(files, capsys, args, words):
    profile, cluster, _ = files
    code, _out, err = run_cli(capsys, "energy", "sweep", profile, "--cluster", cluster, *args)
    assert code == 2 and words in one_error_line(err)


def test_without_power_figures_it_says_where_to_add_them(files, capsys):
    profile, _, tmp = files
    plain = tmp / "plain.yaml"
    plain.write_text(CLUSTER.replace(", power: {busy_w: 0.5, idle_w: 0.1, radio_w: 4, battery: true}", ""))
    for cluster in (plain, None):
        extra = [] if cluster is None else ["--cluster", cluster]
        code, _out, err = run_cli(capsys, "energy", "sweep", profile, *extra)
        line = one_error_line(err)
        assert code == 2 and "add `power:` with `battery: true` to a device in cluster.yaml" in line
