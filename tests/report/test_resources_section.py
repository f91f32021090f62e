"""The report's "Resource use" section, from a bench with resource samples: a figure per resource (a line
per device), the table of mean, standard deviation and median per device and resource, resources.csv,
notes of devices without samples; the page still loads cleanly in a browser."""

from __future__ import annotations

import csv

import msgspec
import numpy as np
import pytest

from splitinfer.records.resources import ResourceSeries
from splitinfer.report import check_page, find_browser, write_report

TIMES = tuple(0.1 * k for k in range(1, 41))
CPU_A = tuple(50.0 + 40.0 * np.sin(k / 4.0) for k in range(40))


def _with_resources(bench):
    """camera sampled without a GPU, edge with one, and a spare whose worker sent nothing."""
    rng = np.random.default_rng(3)
    resources = {
        "camera": ResourceSeries(interval_s=0.1, num_cpus=2, times_s=TIMES, cpu_percent=CPU_A,
                                 rss_bytes=tuple(int(v) for v in rng.integers(2e8, 3e8, 40))),
        "edge": ResourceSeries(interval_s=0.1, num_cpus=8, times_s=TIMES, cpu_percent=(100.0,) * 40,
                               rss_bytes=(500_000_000,) * 40, gpu="GPU 0",
                               gpu_util_percent=tuple(float(v) for v in rng.uniform(0, 100, 40)),
                               gpu_memory_bytes=(3_000_000_000,) * 40),
        "spare": ResourceSeries(interval_s=0.1, note="not sampled: the worker did not answer"),
    }
    return msgspec.structs.replace(bench, resources=resources)


@pytest.fixture(scope="module")
def page(tmp_path_factory, profile, bench):
    out = tmp_path_factory.mktemp("resources")
    with_resources = _with_resources(bench)
    written = []
    index = write_report(profile, out, bench=with_resources, on_file=written.append)
    return index, with_resources, {p.name for p in written}


def test_each_resource_gets_a_figure_with_a_line_per_device(page):
    index, _, written = page
    html = index.read_text()
    assert 'id="resources"' in html and "Resource use" in html
    for stem in ("resources_cpu", "resources_memory", "resources_gpu", "resources_gpu_memory"):
        assert f"{stem}.png" in written and f"{stem}.svg" in written and f'id="{stem}"' in html
    titles = ("CPU usage over time", "Memory over time", "GPU utilisation over time", "GPU memory over time")
    assert all(title in html for title in titles)
    assert "spare: not sampled: the worker did not answer" in html
    assert "every 0.1 s" in html and "CPU % counts one busy core as 100%" in html


def test_the_table_has_mean_std_and_median_per_device_and_resource(page):
    index, _, written = page
    assert "resources.csv" in written
    with open(index.parent / "resources.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["device"], r["resource"]) for r in rows] == [
        ("camera", "CPU"), ("camera", "memory (RSS)"), ("edge", "CPU"), ("edge", "memory (RSS)"),
        ("edge", "GPU utilisation"), ("edge", "GPU memory")]  # the spare has nothing to sum up
    cpu = rows[0]
    assert float(cpu["mean"]) == pytest.approx(np.mean(CPU_A)) and cpu["unit"] == "%"
    assert float(cpu["std"]) == pytest.approx(np.std(CPU_A))
    assert float(cpu["median"]) == pytest.approx(np.median(CPU_A)) and int(cpu["num_samples"]) == 40
    assert rows[1]["unit"] == "MB" and 200 <= float(rows[1]["mean"]) <= 300
    assert float(rows[5]["max"]) == pytest.approx(3000.0) and float(rows[3]["std"]) == 0.0
    html = index.read_text()
    assert "Resource use per device" in html and f"<td class=\"\">{np.mean(CPU_A):.1f}</td>" in html


def test_a_bench_without_resources_has_no_such_section(tmp_path, profile, bench):
    html = write_report(profile, tmp_path, bench=bench).read_text()
    assert 'id="resources"' not in html and not (tmp_path / "resources.csv").exists()


@pytest.mark.skipif(find_browser() is None, reason="no chromium on PATH (apt-get install chromium)")
def test_the_page_with_resources_loads_without_errors_in_a_browser(page):
    index, _, _ = page
    check = check_page(index)
    assert check.ok, check.problems
    assert check.console == []
    alts = [alt for alt, _, _ in check.images]
    assert "CPU usage over time" in alts and "Memory over time" in alts
    assert all(width > 300 and height > 200 for _, width, height in check.images)
