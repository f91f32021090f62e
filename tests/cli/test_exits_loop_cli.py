"""A model with early exits through the whole loop from the command line (issue 17): profile measures
how often each exit answers, plan predicts expected figures, bench reports each exit's share."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import yaml
from helpers.cli import TWO_DEVICES, run_cli

from splitinfer import zoo
from splitinfer.plan import plan_from_json
from splitinfer.profile.exit_choice import mix_at
from splitinfer.profile.exit_profile import leave_fractions
from splitinfer.profile.files import load_profile


def test_a_sample_leaves_at_the_first_exit_it_passes():
    passed = np.array([[True, True], [False, True], [False, False], [True, False]])
    assert leave_fractions(passed) == [0.5, 0.25]
    assert leave_fractions(np.zeros((0, 2), dtype=bool)) == [0.0, 0.0]


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exits_loop")
    onnx.save(zoo.build_small("resnet18_exits"), folder / "rx.onnx")
    (folder / "cluster.yaml").write_text(yaml.safe_dump(TWO_DEVICES))
    return folder


def test_profile_plan_bench_with_exits(capsys, loop):
    from splitinfer.cli import main

    f = loop
    assert main(["profile", str(f / "rx.onnx"), "--cluster", str(f / "cluster.yaml"), "--budget-s", "1",
                 "-o", str(f / "p.json")]) == 0
    profile = load_profile(f / "p.json")
    assert [e.output for e in profile.exits] == ["exit1", "exit2"] and profile.exits[0].num_samples == 32
    assert 0 < sum(e.probability for e in profile.exits) <= 1
    assert profile.model.exits == ("exit1", "exit2")  # deploy cuts the blocks at them again
    cluster = f / "cluster.yaml"
    code, out, err = run_cli(capsys, "plan", f / "p.json", "--cluster", cluster, "-o", f / "plan.json")
    assert code == 0, err
    (plan,) = plan_from_json((f / "plan.json").read_text())
    assert set(plan.exit_mix) == {"exit1", "exit2"}
    assert plan.full_depth is not None and plan.latency_s < plan.worst_latency_s
    assert "early exits answer exit1" in out
    code, out, err = run_cli(capsys, "bench", f / "plan.json", "-n", "16", "-o", f / "bench.json")
    assert code == 0, err
    bench = json.loads((f / "bench.json").read_text())
    assert [e["output"] for e in bench["exits"]] == ["exit1", "exit2", ""]
    assert sum(e["count"] for e in bench["exits"]) == 16
    assert "answered at" in out and "mean ms" in out
    code, out, err = run_cli(capsys, "bench", f / "plan.json", "-n", "8", "--full-depth",
                             "-o", f / "full.json")
    assert code == 0, err
    full = json.loads((f / "full.json").read_text())
    assert full["exits"] == [] and full["predicted_latency_s"] == pytest.approx(plan.worst_latency_s)
    code, _, err = run_cli(capsys, "plan", f / "p.json", "--cluster", f / "cluster.yaml", "--full-depth")
    assert code == 0 and "early exits answer" not in err
    # no agreement may be lost: the thresholds chosen let only samples that agree leave early
    code, out, err = run_cli(capsys, "plan", f / "p.json", "--cluster", cluster, "--exit-quality-drop", "0%",
                             "-o", f / "strict.json")
    assert code == 0, err
    (strict,) = plan_from_json((f / "strict.json").read_text())
    assert "exit thresholds chosen" in out and (strict.quality_cost or 0.0) == 0.0
    shares, lost = mix_at(profile.exits, [strict.exit_thresholds[e.output] for e in profile.exits])
    assert lost == 0.0 and list(strict.exit_mix.values()) == shares
