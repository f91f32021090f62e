"""The main job end to end on the emulated continuum (a small model, so it takes seconds)."""

from __future__ import annotations

import os
import statistics

import psutil
import pytest

from splitinfer import zoo
from splitinfer.cli import main
from splitinfer.cluster import load_cluster
from splitinfer.demo import demo_cluster
from splitinfer.plan import plan_from_json
from splitinfer.profile.files import load_profile
from splitinfer.records.bench import load_bench
from splitinfer.records.gain import gain_line, load_gain


def _workers_alive() -> list[psutil.Process]:
    """Worker processes this test process launched (others' test runs may share the machine)."""
    mine = f"--parent-pid {os.getpid()}"
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "splitinfer.runtime.device" in cmd and mine in cmd:
            found.append(p)
    return found


def test_demo_cluster_is_a_continuum_where_splitting_pays():
    c = demo_cluster()
    assert c.device_names == ("camera", "edge", "cloud")
    # a Raspberry-Pi-class camera 10x slower than the edge box's desktop core (README: demo numbers)
    assert [c.device(n).slowdown for n in c.device_names] == [10, 1, 1]
    assert all(c.device(n).num_threads == 1 for n in c.device_names)  # the demo machine may have 2 cores
    assert c.device("camera").power is not None and c.device("camera").power.battery  # energy, Pareto
    assert c.source == "camera" and c.sink == "camera"
    assert c.link("camera", "edge").bandwidth_bps == pytest.approx(40e6 / 8)
    assert c.link("cloud", "edge").latency_s == pytest.approx(0.020)


def test_demo_writes_everything_prints_the_measured_gain_and_stops_its_workers(tmp_path, capsys):
    model = tmp_path / "small.onnx"
    model.write_bytes(zoo.build_small("mobilenetv2").SerializeToString())
    out = tmp_path / "out"
    before = {p.pid for p in _workers_alive()}
    args = ["--model", str(model), "-o", str(out), "-n", "8", "-k", "3", "--budget-s", "0.2"]
    assert main(["demo", *args]) == 0
    printed = capsys.readouterr().out
    assert not ({p.pid for p in _workers_alive()} - before)
    profile = load_profile(out / "profile.json")
    assert set(profile.devices) == {"camera", "edge", "cloud"}
    plans = plan_from_json((out / "plan.json").read_text())
    objectives = [p.objective for p in plans]
    assert objectives[:3] == ["latency"] * 3 and "throughput" in objectives
    assert [p.latency_s for p in plans[:3]] == sorted(p.latency_s for p in plans[:3])
    bench = load_bench(out / "bench.json")
    assert bench.num_requests == 8 and bench.plan.stages == plans[0].stages
    assert bench.latency_median_s > 0
    assert load_cluster(out / "cluster.yaml") == demo_cluster()

    gain = load_gain(out / "gain.json")
    assert [g.objective for g in gain.gains] == ["latency", "throughput"]
    for g in gain.gains:
        best = next(p for p in plans if p.objective == g.objective)
        assert g.best.bench.plan.stages == best.stages  # the plans the demo planned, measured
        assert g.singles and all(len(s.bench.plan.stages) == 1 for s in g.singles)
        assert g.num_requests == 8 and all(e.bench.num_requests == 8 for e in (g.best, *g.singles))
        assert gain_line(g) in printed  # one line per objective, from the file's numbers
        # the figures are measurements: the median of the requests' latencies, completed requests / s
        if g.objective == "latency":
            assert g.concurrency == 1 and g.best.bench == bench  # bench.json is this measurement
            for entry in (g.best, *g.singles):
                assert entry.measured == statistics.median(entry.bench.latencies_s)
            assert g.single.measured == min(s.measured for s in g.singles)  # the fastest, measured
            expected = g.single.measured / g.best.measured
        else:
            assert g.concurrency > 1  # pipelined
            for entry in (g.best, *g.singles):
                assert entry.measured == entry.bench.throughput_rps
            assert g.single.measured == max(s.measured for s in g.singles)
            expected = g.best.measured / g.single.measured
        assert g.gain == pytest.approx(expected)
        if g.is_split:
            assert g.interleaved  # measured side by side, requests in turn
            assert f"split: {g.gain:.2f}x" in printed
        else:  # the best plan is a single device: said so, gain 1.0, measured once
            assert g.singles == (g.best,) and g.gain == 1.0
            assert f"no split: the best {g.objective} plan runs on one device" in printed

    html = (out / "index.html").read_text()
    assert "<img" in html and 'id="gain"' in html and gain_line(gain.gains[0]).split(" (")[0] in html
    assert all((out / f).stat().st_size > 0 for f in ("blocks.csv", "plans.csv", "gain.csv"))


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
