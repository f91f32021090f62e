"""``splitinfer plan``: from a hand-written profile, in Scission's form, and on bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from splitinfer.cli import main
from splitinfer.plan import plan_from_json

SCISSION = Path(__file__).parents[2] / ".." / "shared" / "data" / "scission"
BINARY = Path(sys.executable).parent / "splitinfer"


def _stats(median: float) -> dict:
    return {"median_s": median, "mean_s": median, "p10_s": median, "p90_s": median, "std_s": 0.0, "n": 10}


def write_profile(path: Path) -> Path:
    """Four blocks on camera, edge and cloud, written by hand in the documented format."""
    camera = [0.05, 0.2, 0.2, 0.1]
    doc = {
        "schema": 1,
        "model": {"sha256": "ab" * 32, "name": "handmade"},
        "input_bytes": 600_000,
        "output_bytes": 4_000,
        "blocks": [
            {"index": i, "nodes": [f"n{i}"], "cut_bytes": c, "output_bytes": c, "param_bytes": 1_000_000}
            for i, c in enumerate([800_000, 400_000, 100_000, 4_000])
        ],
        "devices": {
            name: {"blocks": [_stats(t * f) for t in camera], "date": "2026-01-01T00:00:00Z"}
            for name, f in (("camera", 1.0), ("edge", 0.25), ("cloud", 0.05))
        },
        "links": [],
    }
    path.write_text(json.dumps(doc))
    return path


CLUSTER = """
schema: 1
source: camera
devices:
  - {name: camera, power: {busy_w: 4, idle_w: 1, radio_w: 2, battery: true}}
  - {name: edge}
  - {name: cloud, memory: 2MB}
links:
  - {from: camera, to: edge, bandwidth: 80Mbit/s, latency: 2ms}
  - {from: edge, to: cloud, bandwidth: 40Mbit/s, latency: 20ms}
  - {from: camera, to: cloud, bandwidth: 8Mbit/s, latency: 40ms}
"""


@pytest.fixture
def files(tmp_path):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(CLUSTER)
    return write_profile(tmp_path / "profile.json"), cluster, tmp_path


def test_plan_prints_a_table_and_writes_plan_json(files, capsys):
    profile, cluster, tmp = files
    out = tmp / "plan.json"
    assert main(["plan", str(profile), "--cluster", str(cluster), "--top", "3", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    plans = plan_from_json(out.read_text())
    assert [p.rank for p in plans] == [1, 2, 3]
    assert plans[0].latency_s <= plans[1].latency_s <= plans[2].latency_s
    assert plans[0].provenance.model_sha256 == "ab" * 32 and plans[0].provenance.cluster == str(cluster)
    first = re.escape(plans[0].stages[0].device)
    assert "latency plans of handmade" in text and re.search(first, text)
    assert f"{plans[0].latency_s:.4f}" in text


@pytest.mark.parametrize("objective", ["throughput", "energy", "pareto"])
def test_other_objectives(files, capsys, objective):
    profile, cluster, _ = files
    assert main(["plan", str(profile), "--cluster", str(cluster), "--objective", objective]) == 0
    text = capsys.readouterr().out
    assert f"{objective} plans of handmade" in text
    if objective == "pareto":
        assert "energy" in text and "upload" in text


def test_constraints_reach_the_planner(files):
    profile, cluster, tmp = files
    out = tmp / "p.json"
    args = [
        "plan",
        str(profile),
        "--cluster",
        str(cluster),
        "--pin",
        "0-1=camera",
        "--exclude",
        "cloud",
        "--max-latency",
        "5s",
        "--max-upload-bytes",
        "1MB",
        "-o",
        str(out),
    ]
    assert main(args) == 0
    plan = plan_from_json(out.read_text())[0]
    assert plan.assignment[:2] == ("camera", "camera") and "cloud" not in plan.assignment
    assert plan.upload_bytes <= 1_000_000


def test_without_cluster_the_profile_devices_are_used(files, capsys):
    profile, _, _ = files
    doc = json.loads(profile.read_text())
    doc["links"] = [
        {"src": "camera", "dst": "edge", "latency_s": 0.001, "bandwidth_bps": 1e7},
        {"src": "edge", "dst": "camera", "latency_s": 0.001, "bandwidth_bps": 1e7},
    ]
    profile.write_text(json.dumps(doc))
    assert main(["plan", str(profile), "--no-revisits", "--max-stages", "2"]) == 0
    assert "edge" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--pin", "2=phone"], "--pin 2=phone names unknown device 'phone'"),
        (["--pin", "two=edge"], "is not BLOCK=DEVICE"),
        (["--forbid", "9=edge"], "block 9 does not exist"),
        (["--max-latency", "fast"], "--max-latency: cannot read duration"),
        (["--objective", "cheap"], "unknown objective 'cheap'"),
        (["--pin", "0=cloud", "--exclude", "cloud"], "--pin 0=cloud conflicts with --exclude cloud"),
        (["--max-stages", "1", "--exclude", "camera", "--exclude", "edge"], "no plan satisfies --exclude"),
        (["--require", "cloud", "--max-upload-bytes", "10"], "no plan satisfies"),
        (["--top", "0"], "--top is 0. use a whole number from 1 to 1000"),
        (["--top", "1000000000"], "--top is 1000000000. use a whole number from 1 to 1000"),
        (["--time-limit", "nan"], "--time-limit is nan. use a finite number > 0"),
        (["--time-limit", "-1"], "--time-limit is -1.0"),
        (["--time-limit", "inf"], "--time-limit is inf"),
        (["--min-throughput", "inf"], "--min-throughput is inf. use a finite number >= 0"),
        (["--min-throughput", "nan"], "--min-throughput is nan"),
        (["--max-energy", "inf"], "--max-energy is inf"),
        (["--max-latency", "inf"], "--max-latency: cannot read duration 'inf'"),
        (["--max-upload-bytes", "1e400"], "--max-upload-bytes: size '1e400' is negative, infinite or NaN"),
        (["--result-count", "0"], "--result-count is 0"),
        (["-o", "/nonexistent/dir/plan.json"], "-o /nonexistent/dir/plan.json: folder /nonexistent/dir does"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(files, capsys, extra, match):
    profile, cluster, _ = files
    assert main(["plan", str(profile), "--cluster", str(cluster), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in " ".join(err.split()) and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2  # one line (rich may wrap a long one)


def test_bad_files(files, capsys):
    profile, _, tmp = files
    assert main(["plan", str(tmp / "missing.json")]) == 2
    assert "cannot read profile" in capsys.readouterr().err
    bad = tmp / "old.json"
    bad.write_text(json.dumps({**json.loads(profile.read_text()), "schema": 7}))
    assert main(["plan", str(bad)]) == 2
    assert "schema 7" in capsys.readouterr().err
    assert main(["plan", str(profile), "extra"]) == 2
    assert "takes 1 argument" in capsys.readouterr().err


def test_help_has_examples(capsys):
    assert main(["plan", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples" in out and "--scission" in out


needs_scission = pytest.mark.skipif(not SCISSION.is_dir(), reason=f"Scission fixture data not at {SCISSION}")


@needs_scission
def test_scission_output_is_byte_for_byte_the_published_top5(tmp_path):
    readme = (SCISSION / "README.md").read_text()
    block = readme.split("Published result", 1)[1].split("```", 2)[1]
    ranked = [line for line in block.splitlines() if re.match(r"\[\d+\] ", line)]
    # Scission's headlines around them (scission_predict.py), its graph named after the best: 9.0106 s.
    lines = ["[+] 5 systems loaded : 1 device, 2 edge, 2 cloud", "[+] vgg19 results", *ranked,
             "[+] Graph created: vgg19-9.01s"]
    expected = "".join(line + "\n" for line in lines)
    command = [
        str(BINARY),
        "plan",
        "--scission",
        str(SCISSION),
        str(SCISSION / "network_stats.csv"),
        "vgg19",
        "-d",
        "!-1",
        "-e",
        "10",
        "-c",
        "16",
    ]
    done = subprocess.run(command, capture_output=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected.encode()
    assert (tmp_path / "vgg19-9.01s.png").is_file()


@needs_scission
def test_scission_general_model_and_relative_csv(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where Scission's graph goes
    out = tmp_path / "general.json"
    args = [
        "plan",
        "--scission",
        str(SCISSION),
        "network_stats.csv",
        "vgg19",
        "--general",
        "--top",
        "2",
        "-o",
        str(out),
    ]
    assert main(args) == 0
    plans = plan_from_json(out.read_text())
    assert len(plans) == 2 and plans[0].provenance.model == "vgg19"
    assert (
        main(
            [
                "plan",
                "--scission",
                str(SCISSION),
                "network_stats.csv",
                "vgg19",
                "-e",
                "!-1",
                "--result-count",
                "2",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert [line[:4] for line in lines if re.match(r"\[\d+\] ", line)] == ["[1] ", "[2] "]
    assert main(["plan", "--scission", str(SCISSION), "network_stats.csv"]) == 2
