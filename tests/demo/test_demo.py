"""The main job end to end on the emulated continuum (a small model, so it takes seconds)."""

from __future__ import annotations

import os

import psutil
import pytest

from splitinfer import zoo
from splitinfer.cli import main
from splitinfer.cluster import load_cluster
from splitinfer.demo import demo_cluster, run_demo
from splitinfer.plan import plan_from_json
from splitinfer.profile.schema import load_profile
from splitinfer.records.bench import load_bench


def _workers_alive() -> list[psutil.Process]:
    """Worker processes this test process launched (others' test runs may share the machine)."""
    mine = f"--parent-pid {os.getpid()}"
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "splitinfer.runtime.device" in cmd and mine in cmd:
            found.append(p)
    return found


def test_demo_cluster_is_the_issue_continuum():
    c = demo_cluster()
    assert c.device_names == ("camera", "edge", "cloud")
    assert [c.device(n).slowdown for n in c.device_names] == [8, 2, 1]
    assert c.source == "camera" and c.sink == "camera"
    assert c.link("camera", "edge").bandwidth_bps == pytest.approx(20e6 / 8)
    assert c.link("cloud", "edge").latency_s == pytest.approx(0.020)


def test_run_demo_writes_everything_and_stops_its_workers(tmp_path):
    model = tmp_path / "small.onnx"
    model.write_bytes(zoo.build_small("mobilenetv2").SerializeToString())
    before = {p.pid for p in _workers_alive()}
    result = run_demo(str(model), out_dir=tmp_path / "out", num_requests=8, top_k=3, budget_s=0.2)
    assert not ({p.pid for p in _workers_alive()} - before)
    profile = load_profile(result.profile_path)
    assert set(profile.devices) == {"camera", "edge", "cloud"}
    plans = plan_from_json(result.plan_path.read_text())
    objectives = [p.objective for p in plans]
    assert objectives[:3] == ["latency"] * 3 and "throughput" in objectives
    assert [p.latency_s for p in plans[:3]] == sorted(p.latency_s for p in plans[:3])
    bench = load_bench(result.bench_path)
    assert bench.num_requests == 8 and bench.plan.stages == plans[0].stages
    assert bench.latency_median_s > 0
    assert load_cluster(result.cluster_path) == demo_cluster()
    html = result.report_path.read_text()
    assert result.report_path.name == "index.html" and "<img" in html
    assert all((result.out_dir / f).stat().st_size > 0 for f in ("blocks.csv", "plans.csv"))


def test_demo_command_rejects_an_unknown_model(capsys, tmp_path):
    out = tmp_path / "never"
    assert main(["demo", "--model", "nosuchnet", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nosuchnet" in err and "mobilenetv2" in err
    assert err.count("\n") == 1  # one line
    assert not out.exists()  # nothing written for a bad request


@pytest.mark.parametrize(("args", "message"), [
    (["-o", "{file}"], "-o {file} is a file, not a folder"),
    (["--budget-s", "nan"], "--budget-s is nan. use a finite number > 0"),
    (["--budget-s", "-1"], "--budget-s is -1.0"),
])
def test_demo_command_refuses_a_bad_folder_or_budget_before_anything_runs(capsys, tmp_path, monkeypatch, args,
                                                                           message):
    import splitinfer.demo

    monkeypatch.setattr(splitinfer.demo, "run_demo", lambda *a, **k: pytest.fail("ran"))
    (tmp_path / "file").write_text("a file")
    paths = {"file": str(tmp_path / "file")}
    assert main(["demo", *[a.format(**paths) for a in args]]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: ") and message.format(**paths) in err and "Traceback" not in err
