"""``splitinfer bench --resource-interval``: each worker's CPU, memory (and GPU) during the bench, a line
per device after the table and the series in bench.json; out of range: one line, exit 2, nothing deployed."""

from __future__ import annotations

import msgspec
import pytest
import yaml
from helpers import deploy as helpers
from helpers.cli import TWO_DEVICES as CLUSTER
from helpers.cli import one_error_line, run_cli

from splitinfer.cli._bench_tables import resource_lines
from splitinfer.cluster import parse_cluster
from splitinfer.plan import Plan, Stage, plan_to_json
from splitinfer.profile.files import save_profile
from splitinfer.records.bench import BenchResult, load_bench
from splitinfer.records.resources import ResourceSeries


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """model.onnx, profile.json (naming it), cluster.yaml and plan.json: resnet18 over devices a and b."""
    root = tmp_path_factory.mktemp("bench_resources_cli")
    data = helpers.model_bytes("resnet18")
    (root / "model.onnx").write_bytes(data)
    (root / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
    cluster = parse_cluster(CLUSTER)
    profile = helpers.fake_profile(data, cluster)
    profile = msgspec.structs.replace(profile, model=msgspec.structs.replace(profile.model,
                                                                             path=str(root / "model.onnx")))
    save_profile(profile, root / "profile.json")
    plan = helpers.pinned_plan(profile, cluster, [(0, "a"), (len(profile.blocks) - 1, "b")])
    (root / "plan.json").write_text(plan_to_json([plan]))
    return root


def test_bench_samples_the_workers_and_prints_a_line_per_device(files, capsys, tmp_path):
    out = tmp_path / "bench.json"
    given = ("bench", files / "plan.json", "--profile", files / "profile.json", "--cluster",
             files / "cluster.yaml")
    code, text, _ = run_cli(capsys, *given, "--requests", "300", "--num-warmup", "1", "--resource-interval",
                            "0.02", "-o", out)
    assert code == 0
    result = load_bench(out)
    assert set(result.resources) == {"a", "b"}
    for device, series in result.resources.items():
        assert len(series.times_s) >= 2 and series.interval_s == 0.02 and min(series.rss_bytes) > 0
        line = next(line for line in text.splitlines() if line.startswith(f"resources of {device}: CPU "))
        assert f"{len(series.times_s)} samples" in line and "MB at most" in line

    code, text, _ = run_cli(capsys, *given, "--requests", "2", "--num-warmup", "0", "--resource-interval",
                            "0", "-o", out)
    assert code == 0 and "resources of" not in text and load_bench(out).resources == {}


@pytest.mark.parametrize("value", ["20", "0.001", "-1", "nan"])
def test_an_interval_out_of_range_is_one_line_before_anything_deploys(files, capsys, monkeypatch, value):
    from splitinfer.cli import runtime_cmds

    monkeypatch.setattr(runtime_cmds, "open_session", lambda *a, **k: pytest.fail("deployed"))
    code, _, err = run_cli(capsys, "bench", files / "plan.json", "--resource-interval", value)
    line = one_error_line(err)
    assert code == 2 and line.startswith("error: --resource-interval is ") and "0 samples nothing" in line


def test_the_line_of_each_device_says_cpu_memory_and_gpu():
    series = ResourceSeries(interval_s=0.1, num_cpus=4, times_s=(0.1, 0.2, 0.3, 0.4),
                            cpu_percent=(50.0, 150.0, 100.0, 120.0),
                            rss_bytes=(100_000_000, 120_000_000, 110_000_000, 90_000_000),
                            gpu_util_percent=(10.0, 20.0, 30.0, 40.0), gpu_memory_bytes=(2_000_000_000,) * 4,
                            gpu="GPU 0")
    plan = Plan("latency", (Stage("a", 0, 1, 0.25),), (), 0.25, 0.25, 4.0, 0, 0)
    result = BenchResult(plan=plan, model_name="m", model_sha256="", cluster={}, num_requests=1,
                         concurrency=1, latency_median_s=0.5, latency_p95_s=0.5, latency_mean_s=0.5,
                         latency_min_s=0.5, latency_max_s=0.5, throughput_rps=2.0, predicted_latency_s=0.25,
                         predicted_throughput_rps=4.0, latency_rel_error=-0.5, throughput_rel_error=1.0,
                         stages=(), hops=(), latencies_s=(0.5,), date="", host={},
                         resources={"a": series, "b": ResourceSeries(interval_s=0.1, note="not sampled")})
    assert resource_lines(result) == [
        "resources of a: CPU 105% mean, 110% median (100% = one of 4 cores), RSS 120 MB at most; GPU 0 25% "
        "mean, 2000 MB at most; 4 samples",
        "resources of b: not sampled",
    ]
