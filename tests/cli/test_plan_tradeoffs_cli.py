"""`splitinfer plan` with trade-offs: --max-quality-drop, --precisions, --compressions, the Pareto
front and --check-quality, on a real trained classifier (scikit-learn's digits) profiled with its
trade-offs; plan.json records each stage's precision and each hop's compression."""

from __future__ import annotations

import json
import re

import msgspec
import numpy as np
import pytest
from helpers.cli import one_error_line, run_cli
from helpers.digits import digits

from splitinfer.plan import plan_from_json
from splitinfer.profile.device import profile_model
from splitinfer.profile.files import load_profile, save_profile
from splitinfer.profile.profiler import LocalRunner, prepare_model
from splitinfer.profile.tradeoff_profile import (
    sensitivity_of,
    time_on_device,
    tradeoff_profile,
    with_tradeoffs,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = digits()
    root = tmp_path_factory.mktemp("tradeoffs")
    model = root / "digits.onnx"
    model.write_bytes(d.model_bytes)
    prepared = prepare_model(model, batch=32, calibration=d.x[:32])
    profile = profile_model(None, prepared=prepared, budget_s=0.5, device_name="cam")
    sens = sensitivity_of(prepared, d.x[:128], ["int8"], ["int8", "lz4"], limit=128)
    timed = time_on_device(LocalRunner(), prepared, sens, budget_s=0.5)
    cam = profile.devices["cam"]
    def slower(stats):
        return None if stats is None else msgspec.structs.replace(stats, median_s=stats.median_s * 500)

    slow = msgspec.structs.replace(  # a camera 500x slower in everything it runs
        cam, blocks=tuple(slower(b) for b in cam.blocks), whole_model=slower(cam.whole_model),
        run_overhead=slower(cam.run_overhead))
    profile = with_tradeoffs(
        msgspec.structs.replace(profile, devices={"cam": slow, "edge": cam}),
        tradeoff_profile(sens, {"cam": timed, "edge": timed}, "digits[:128]"),
    )
    save_profile(profile, root / "profile.json")
    (root / "cluster.yaml").write_text(
        "devices:\n  - {name: cam}\n  - {name: edge}\nlinks:\n"
        "  - {from: cam, to: edge, bandwidth: 200KB/s, latency: 1ms}\n"
        "  - {from: edge, to: cam, bandwidth: 200KB/s, latency: 1ms}\nsource: cam\n"
    )
    np.savez(root / "held_out.npz", x=d.x[128:], y=d.y[128:])
    np.savez(root / "calibration.npz", x=d.x[:128])
    return root


def _plan(capsys, files, *flags):
    code, out, err = run_cli(
        capsys, "plan", str(files / "profile.json"), "--cluster", str(files / "cluster.yaml"), *flags
    )
    return code, out, err


def test_a_budget_lets_the_planner_choose_compressions_and_records_them(capsys, files):
    code, out, err = _plan(capsys, files, "--max-quality-drop", "2%", "-o", str(files / "plan.json"))
    assert code == 0, err
    assert re.search(r"#1  cam\[0-\d+\]", out), out
    (plan,) = plan_from_json((files / "plan.json").read_text())
    assert plan.quality_cost is not None and plan.quality_cost <= 0.02
    raw = json.loads((files / "plan.json").read_text())["plans"][0]
    assert {"precision"} <= set(raw["stages"][0]) and {"compression", "codec_s"} <= set(raw["hops"][0])
    code, _, err = _plan(capsys, files, "-o", str(files / "plain.json"))
    (plain,) = plan_from_json((files / "plain.json").read_text())
    assert code == 0 and not plain.has_tradeoffs and plain.quality_cost is None
    assert plan.latency_s <= plain.latency_s


def test_zero_budget_uses_only_options_measured_to_change_nothing(capsys, files):
    code, _, err = _plan(
        capsys, files, "--max-quality-drop", "0%", "--compressions", "int8", "-o", str(files / "strict.json")
    )
    assert code == 0, err
    (plan,) = plan_from_json((files / "strict.json").read_text())
    assert plan.quality_cost == 0.0
    # every int8 hop and stage is where int8 was measured to change no row
    section = load_profile(files / "profile.json").tradeoffs
    cut_costs = section.compressions["int8"].quality_cost
    block_costs = section.precisions["int8"].quality_cost
    cuts = [h for h in plan.hops if h.kind == "cut"]
    assert len(cuts) == len(plan.stages) - 1
    for stage, hop in zip(plan.stages, cuts, strict=False):
        assert hop.compression == "none" or cut_costs[stage.last_block] == 0.0
    for stage in plan.stages:
        blocks = block_costs[stage.first_block : stage.last_block + 1]
        assert stage.precision == "fp32" or all(q == 0.0 for q in blocks)


def test_the_pareto_front_lists_latency_against_quality(capsys, files):
    code, _out, err = _plan(
        capsys,
        files,
        "--objective",
        "pareto",
        "--precisions",
        "int8",
        "--compressions",
        "int8",
        "-o",
        str(files / "front.json"),
    )
    assert code == 0, err
    front = plan_from_json((files / "front.json").read_text())
    assert all(p.objective == "pareto-quality" for p in front)
    assert [p.quality_cost for p in front] == sorted((p.quality_cost for p in front), reverse=True)


def test_check_quality_measures_the_plan_and_holds_the_budget(capsys, files):
    code, out, err = _plan(
        capsys,
        files,
        "--max-quality-drop",
        "1%",
        "--check-quality",
        str(files / "held_out.npz"),
        "--calibration",
        str(files / "calibration.npz"),
    )
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("measured drop"))
    assert float(line.split()[2].rstrip("%")) <= 1.0


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--max-quality-drop", "150%"], "--max-quality-drop"),
        (["--max-quality-drop", "lots"], "not a fraction"),
        (["--precisions", "int4"], "did not measure precision int4"),
        (["--compressions", "zstd"], "did not measure compression zstd"),
        (["--check-quality", "x.npz"], "add --max-quality-drop"),
    ],
)
def test_bad_tradeoff_flags_are_one_line(capsys, files, flags, words):
    code, _, err = _plan(capsys, files, *flags)
    assert code == 2
    assert words in one_error_line(err)


def test_a_profile_without_tradeoffs_says_how_to_measure_them(capsys, files, tmp_path):
    from splitinfer.profile.files import load_profile

    profile = load_profile(files / "profile.json")
    save_profile(msgspec.structs.replace(profile, tradeoffs=None), tmp_path / "p.json")
    code, _, err = run_cli(capsys, "plan", str(tmp_path / "p.json"), "--max-quality-drop", "1%")
    assert code == 2 and "--tradeoffs" in one_error_line(err)


def test_eval_runs_a_tradeoff_plan_on_workers_and_in_process(capsys, files):
    code, _, err = _plan(capsys, files, "--max-quality-drop", "100%", "--precisions", "int8",
                         "-o", str(files / "lossy.json"))
    assert code == 0, err
    (plan,) = plan_from_json((files / "lossy.json").read_text())
    assert plan.has_tradeoffs, "with any drop allowed the slow camera should take int8 or compress"
    common = ["eval", str(files / "digits.onnx"), "--data", str(files / "held_out.npz"), "--plan",
              str(files / "lossy.json"), "--cluster", str(files / "cluster.yaml"), "--profile",
              str(files / "profile.json"), "--calibration", str(files / "calibration.npz"), "--json"]
    results = []
    for extra in (["--in-process"], []):
        code, out, err = run_cli(capsys, *common, *extra)
        assert code == 0, err
        results.append(json.loads(out))
    for doc in results:
        outputs = doc["agreement"]["outputs"]
        top1 = next(o["top1_agreement"] for o in outputs if o["top1_agreement"] is not None)
        assert 0.9 <= top1 <= 1.0
    assert results[0]["agreement"] == results[1]["agreement"]  # workers run what the chain runs
