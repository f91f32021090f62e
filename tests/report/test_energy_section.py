"""The report's "Energy" section (each battery device's joules: compute, communication, idle) and the
latency-budget sweep's CSV and plot."""

from __future__ import annotations

import csv
import math

import msgspec
import pytest

from splitinfer.errors import SplitinferError
from splitinfer.plan import Plan
from splitinfer.plan.plan import EnergySplit
from splitinfer.plan.sweep import SweepPoint, point_of
from splitinfer.report import write_report
from splitinfer.report.energy import (
    PARTS,
    energy_bars,
    energy_table,
    sweep_plot,
    sweep_table,
    write_sweep_csv,
    write_sweep_plot,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_the_report_splits_every_plans_energy(report_dir, plans):
    page = (report_dir / "index.html").read_text()
    assert 'id="energy"' in page and "Energy per battery device" in page and "energy_split.png" in page
    assert (report_dir / "energy_split.svg").is_file()
    with open(report_dir / "energy.csv") as f:
        rows = list(csv.DictReader(f))
    with_split = [p for p in plans if p.energy_split]
    assert with_split and len(rows) == sum(len(p.energy_split) for p in with_split)
    for p in with_split:  # each plan's rows add up to its energy
        mine = [r for r in rows if r["objective"] == p.objective and int(r["rank"]) == p.rank]
        parts = [float(r[f"{part}_j"]) for r in mine for part in PARTS]
        assert math.fsum(parts) == pytest.approx(p.energy_j, rel=1e-12)
        assert math.fsum(float(r["total_j"]) for r in mine) == pytest.approx(p.energy_j, rel=1e-12)


def test_plans_without_power_have_no_energy_section(tmp_path, profile, plans):
    plain = [msgspec.structs.replace(p, energy_j=None, energy_split={}) for p in plans]
    page = write_report(profile, tmp_path / "r", plans=plain).read_text()
    assert 'id="energy"' not in page and not (tmp_path / "r" / "energy.csv").exists()
    assert not (tmp_path / "r" / "energy_split.png").exists()


def _plan(split: dict[str, EnergySplit], latency_s: float = 0.2) -> Plan:
    energy = math.fsum(s.total_j for s in split.values())
    return Plan("energy", (), (), latency_s, 0.1, 10.0, 0, 0, energy, energy_split=split)


def test_energy_bars_stack_compute_communication_idle_per_device():
    plan = _plan({"cam": EnergySplit(1.0, 0.5, 0.25), "phone": EnergySplit(2.0, 0.0, 1.0)})
    ax = energy_bars(plan).axes[0]
    bars = [(round(b.get_x() + b.get_width() / 2), b.get_y(), b.get_height()) for b in ax.patches]
    # per part (compute, communication, idle) a bar for each device, each on top of the last
    assert bars == [(0, 0.0, 1.0), (1, 0.0, 2.0), (0, 1.0, 0.5), (1, 2.0, 0.0), (0, 1.5, 0.25), (1, 2.0, 1.0)]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cam", "phone"]
    header, rows = energy_table([plan])
    assert header[-1] == "total_j" and rows == [["energy", 1, "cam", 1.0, 0.5, 0.25, 1.75],
                                                ["energy", 1, "phone", 2.0, 0.0, 1.0, 3.0]]


def _points() -> list[SweepPoint]:
    fast = _plan({"cam": EnergySplit(0.1, 2.0, 0.1)}, latency_s=0.1)
    slow = _plan({"cam": EnergySplit(0.5, 0.0, 0.0)}, latency_s=0.4)
    return [point_of(0.05, None), point_of(0.1, fast), point_of(0.2, fast), point_of(0.5, slow)]


def test_sweep_csv_keeps_every_budget(tmp_path):
    path = write_sweep_csv(_points(), tmp_path / "sweep.csv")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [float(r["budget_s"]) for r in rows] == [0.05, 0.1, 0.2, 0.5]
    assert [r["feasible"] for r in rows] == ["False", "True", "True", "True"]
    assert rows[0]["energy_j"] == "" and rows[0]["stages"] == ""
    assert [float(r["energy_j"]) for r in rows[1:]] == [2.2, 2.2, 0.5]
    assert [float(r["communication_j"]) for r in rows[1:]] == [2.0, 2.0, 0.0]
    assert sweep_table(_points())[0][:4] == ["budget_s", "feasible", "latency_s", "energy_j"]


def test_sweep_plot_stacks_the_feasible_points(tmp_path):
    ax = sweep_plot(_points()).axes[0]
    assert len(ax.collections) == len(PARTS)  # compute, communication, idle stacked
    steps, points = ax.lines  # the energy in steps, the last one held as wide as the one before; its points
    assert list(points.get_xdata()) == pytest.approx([100.0, 200.0, 500.0])  # ms; infeasible 50 ms left out
    assert list(points.get_ydata()) == pytest.approx([2.2, 2.2, 0.5])
    assert list(steps.get_xdata()) == pytest.approx([100.0, 200.0, 500.0, 800.0])
    assert list(steps.get_ydata()) == pytest.approx([2.2, 2.2, 0.5, 0.5])
    assert "1 budgets no plan meets" in ax.get_title()
    path = write_sweep_plot(_points(), tmp_path / "sweep.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(SplitinferError, match="no plan meets any"):
        write_sweep_plot([point_of(0.05, None)], tmp_path / "none.png")
