"""The report's tables: rows from the profile, plans and bench; CSV files with exact numbers; cell formats."""

from __future__ import annotations

import csv
import math

import msgspec
import pytest

from splitinfer.plan import describe_stages
from splitinfer.report.html import format_cell
from splitinfer.report.tables import (
    bench_table,
    block_table,
    bytes_label,
    count_label,
    plan_table,
    write_csv,
)


def test_block_csv_holds_every_block_and_device_median_exactly(profile, tmp_path):
    path = write_csv(block_table(profile), tmp_path / "blocks.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(profile.blocks)
    for row, block in zip(rows, profile.blocks, strict=True):
        assert int(row["block"]) == block.index
        assert int(row["flops"]) == block.flops
        assert int(row["cut_bytes"]) == block.cut_bytes
        for name, dev in profile.devices.items():
            assert float(row[f"{name}_median_s"]) == dev.blocks[block.index].median_s


def test_block_table_leaves_blocks_that_cannot_run_empty(profile):
    camera = profile.devices["camera"]
    blocks = (None, *camera.blocks[1:])
    devices = {**profile.devices, "camera": msgspec.structs.replace(camera, blocks=blocks)}
    header, rows = block_table(msgspec.structs.replace(profile, devices=devices))
    column = header.index("camera_median_s")
    assert rows[0][column] == ""
    assert rows[1][column] == camera.blocks[1].median_s


def test_block_table_names_main_ops_when_given(profile):
    ops = [f"Op{i}" for i in range(len(profile.blocks))]
    header, rows = block_table(profile, ops)
    assert header[2] == "main_op"
    assert [r[2] for r in rows] == ops


def test_plan_csv_round_trips_the_predicted_figures(plans, tmp_path):
    path = write_csv(plan_table(plans), tmp_path / "plans.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(plans)
    for row, plan in zip(rows, plans, strict=True):
        assert row["objective"] == plan.objective
        assert int(row["rank"]) == plan.rank
        assert float(row["latency_s"]) == plan.latency_s
        assert float(row["throughput_rps"]) == plan.throughput_rps
        assert int(row["upload_bytes"]) == plan.upload_bytes
        assert row["stages"] == describe_stages(plan)


def test_plan_table_writes_infinite_throughput_as_inf(plans):
    only = msgspec.structs.replace(plans[0], throughput_rps=math.inf, energy_j=None)
    header, rows = plan_table([only])
    assert rows[0][header.index("throughput_rps")] == "inf"
    assert rows[0][header.index("energy_j")] == ""


def test_bench_table_lists_stages_hops_and_the_request(bench):
    header, rows = bench_table(bench)
    assert len(rows) == len(bench.stages) + len(bench.hops) + 1
    assert [r[0] for r in rows[: len(bench.stages)]] == [f"stage {s.stage}" for s in bench.stages]
    assert [r[0] for r in rows[len(bench.stages):-1]] == [h.kind for h in bench.hops]
    last = dict(zip(header, rows[-1], strict=True))
    assert last["measured_median_s"] == bench.latency_median_s
    assert last["rel_error"] == bench.latency_rel_error


@pytest.mark.parametrize(
    ("column", "value", "text"),
    [
        ("cut_bytes", 802_816, "803 kB"),
        ("cut_bytes", 512, "512 B"),
        ("flops", 25_557_032, "25.6M"),
        ("latency_s", 0.0123, "12.3 ms"),
        ("latency_s", 12.5, "12.5 s"),
        ("latency_s", 1.1097, "1.11 s"),
        ("bytes_sent", 711_584, "712 kB"),
        ("rel_error", -0.125, "-12.5%"),
        ("throughput_rps", math.inf, "inf"),
        ("energy_j", "", "-"),
        ("stages", "edge[0-3]", "edge[0-3]"),
    ],
)
def test_cells_are_shown_with_units(column, value, text):
    assert format_cell(column, value) == text


def test_labels_use_si_prefixes():
    assert bytes_label(1_500_000) == "1.5 MB"
    assert bytes_label(0) == "0 B"
    assert count_label(3.4e8) == "340M"
    assert count_label(999) == "999"
