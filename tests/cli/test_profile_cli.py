"""``splitinfer profile``: this machine, a cluster of local workers, show, merge, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from splitinfer import zoo
from splitinfer.cli import main
from splitinfer.plan import plan_from_json
from splitinfer.profile.files import load_profile

FAST = ["--budget-s", "0.5", "--max-blocks", "5"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "r18.onnx"
    path.write_bytes(zoo.build_small("resnet18").SerializeToString())
    return path


def test_profile_this_machine_then_show(tmp_path, model_path, capsys):
    out = tmp_path / "laptop.json"
    assert main(["profile", str(model_path), "-o", str(out), "--device-name", "laptop", "--num-threads", "1",
                 *FAST]) == 0
    profile = load_profile(out)
    assert list(profile.devices) == ["laptop"] and len(profile.blocks) == 5
    assert profile.devices["laptop"].num_threads == 1
    capsys.readouterr()
    assert main(["profile", "show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "laptop" in text and "whole/one stage" in text and "trivial run" in text and "GFLOPs" in text


def test_pairs_give_the_joins_the_plan_adds_to_its_stages(tmp_path, model_path, capsys):
    out = tmp_path / "pairs.json"
    assert main(["profile", str(model_path), "-o", str(out), "--device-name", "one", "--pairs", *FAST]) == 0
    device = load_profile(out).devices["one"]
    assert len(device.pairs) == 4 and all(p is not None and p.median_s > 0 for p in device.pairs)
    plan_out = tmp_path / "plan.json"
    assert main(["plan", str(out), "-o", str(plan_out)]) == 0
    (plan,) = plan_from_json(plan_out.read_text())
    joins = [max(p.median_s - a.median_s - b.median_s, -(a.median_s + b.median_s) / 2)
             for p, a, b in zip(device.pairs, device.blocks, device.blocks[1:], strict=False)]
    blocks = sum(b.median_s for b in device.blocks)
    # one stage: its blocks and its inner joins (never positive, at most half a pair: plan/joins.py)
    assert plan.stages[0].compute_s == pytest.approx(blocks + sum(min(j, 0.0) for j in joins))


def test_profile_a_cluster_then_plan(tmp_path, model_path, capsys):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("devices:\n  - {name: camera, num_threads: 1, slowdown: 4}\n"
                       "  - {name: edge, num_threads: 1}\n"
                       "links:\n  - {from: camera, to: edge, bandwidth: 20Mbit/s, latency: 5ms}\n")
    out = tmp_path / "p.json"
    assert main(["profile", str(model_path), "--cluster", str(cluster), "-o", str(out), *FAST]) == 0
    profile = load_profile(out)
    assert set(profile.devices) == {"camera", "edge"}
    assert {(x.src, x.dst, x.source) for x in profile.links} == {("camera", "edge", "declared"),
                                                                 ("edge", "camera", "declared")}
    plan_out = tmp_path / "plan.json"
    assert main(["plan", str(out), "--cluster", str(cluster), "-o", str(plan_out)]) == 0
    (plan,) = plan_from_json(plan_out.read_text())
    assert plan.stages[0].first_block == 0 and plan.stages[-1].last_block == 4


def test_refine_writes_a_plan_that_bench_can_check(tmp_path, model_path, capsys):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("devices:\n  - {name: camera, num_threads: 1, slowdown: 4}\n"
                       "  - {name: edge, num_threads: 1}\n"
                       "links:\n  - {from: camera, to: edge, bandwidth: 20Mbit/s, latency: 5ms}\n")
    out, plan_out = tmp_path / "p.json", tmp_path / "plan.json"
    assert main(["profile", str(model_path), "--cluster", str(cluster), "-o", str(out), *FAST,
                 "--refine", "latency", "--plan-output", str(plan_out)]) == 0
    (plan,) = plan_from_json(plan_out.read_text())
    profile = load_profile(out)
    assert plan.provenance.model_sha256 == profile.model.sha256
    for stage in plan.stages:  # every stage was timed as it ran
        assert (stage.first_block, stage.last_block) in {
            (g.first_block, g.last_block) for g in profile.devices[stage.device].segments}
    assert "refined plan:" in capsys.readouterr().out
    assert main(["profile", str(model_path), "--refine", "latency", *FAST]) == 2
    assert "--refine needs --cluster" in capsys.readouterr().err


def test_merge_two_machines(tmp_path, model_path, capsys):
    files = []
    for name in ("a", "b"):
        files.append(tmp_path / f"{name}.json")
        # --threads: the old name of --num-threads, still taken (hidden from the help)
        args = ["profile", str(model_path), "-o", str(files[-1]), "--device-name", name, "--threads", "2"]
        assert main([*args, *FAST]) == 0
    merged = tmp_path / "ab.json"
    assert main(["profile", "merge", *map(str, files), "-o", str(merged)]) == 0
    assert {n: d.num_threads for n, d in load_profile(merged).devices.items()} == {"a": 2, "b": 2}
    assert "2 devices: a, b" in capsys.readouterr().out


def test_bad_input_is_one_line(tmp_path, model_path, capsys):
    bad = tmp_path / "x.npz"
    np.savez(bad, image=np.zeros((1, 3, 8, 8), np.float32))
    assert main(["profile", str(model_path), "--calibration", str(bad), *FAST]) == 2
    err = capsys.readouterr().err
    assert "calibration input 'image' has shape [1, 3, 8, 8]" in err and len(err.strip().splitlines()) == 1
    assert main(["profile", "merge", str(bad)]) == 2
    assert "needs two or more files and -o" in capsys.readouterr().err
    assert main(["profile", "show", str(tmp_path / "missing.json")]) == 2
    assert "cannot read profile" in capsys.readouterr().err
    assert main(["profile", "a.onnx", "b.onnx"]) == 2
    assert "profile takes one MODEL" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget-s", "nan"], "--budget-s is nan. use a finite number > 0"),
        (["--budget-s", "inf"], "--budget-s is inf"),
        (["--budget-s", "-1"], "--budget-s is -1.0"),
        (["--budget-s", "0"], "--budget-s is 0.0"),
        (["--num-threads", "100000"], "--num-threads is 100000. use a whole number from 0 to"),
        (["--threads", "-2"], "--num-threads is -2"),
        (["--max-blocks", "-1"], "--max-blocks is -1. use a whole number >= 0"),
        (["--max-cut-tensors", "0"], "--max-cut-tensors is 0. use a whole number >= 1"),
        (["--batch", "0"], "--batch is 0"),
        (["-o", "/nonexistent/dir/p.json"], "-o /nonexistent/dir/p.json: folder /nonexistent/dir does not"),
        (["-o", "{tmp}"], "is a folder. give a file path for -o"),
        (["--plan-output", "/nonexistent/plan.json"], "--plan-output /nonexistent/plan.json: folder"),
        (["--rest", "soon"], "--rest: "),
        (["--rest", "2s"], "--rest is 2.0. use a finite number from 0 to 1"),
    ],
)
def test_bad_numbers_and_output_paths_are_one_line_before_any_work(tmp_path, model_path, capsys, monkeypatch,
                                                                   args, message):
    from splitinfer.cli import profile_cmds

    monkeypatch.setattr(profile_cmds, "_measure", lambda *a: pytest.fail("measured"))
    assert main(["profile", str(model_path), *[a.format(tmp=tmp_path) for a in args]]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: ") and message.format(tmp=tmp_path) in err and err.count("error:") == 1


def test_help_teaches_the_three_forms(capsys):
    assert main(["profile", "--help"]) == 0
    text = capsys.readouterr().out
    assert "profile show" in text and "profile merge" in text and "--cluster" in text
    assert "--num-threads" in text and "--threads" not in text.replace("--num-threads", "")
