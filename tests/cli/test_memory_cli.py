"""Measured memory: a plan at 95% of a device's capacity deploys and runs; 10% over is refused in one
line naming the device, the need and the capacity (issue 15, item 3)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from helpers.cli import one_error_line, run_cli

from splitinfer import zoo
from splitinfer.plan import plan_from_json
from splitinfer.plan.memory import StageMemory
from splitinfer.plan.problem import prepare
from splitinfer.profile.files import load_profile
from splitinfer.profile.problem import build_problem


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    model = root / "r18.onnx"
    model.write_bytes(zoo.build_small("resnet18").SerializeToString())
    cluster = root / "free.yaml"
    cluster.write_text("devices:\n  - {name: cam, num_threads: 1}\n")
    from splitinfer.cli import main

    assert main(["profile", str(model), "--cluster", str(cluster), "-o", str(root / "p.json"),
                 "--budget-s", "0.5", "--max-blocks", "5"]) == 0
    profile = load_profile(root / "p.json")
    assert all(m is not None and m.weight_bytes > 0 for m in profile.devices["cam"].memory)
    inst = prepare(build_problem(profile))
    need = StageMemory.of(inst).stage(0, inst.num_blocks - 1)  # one stage: the only plan on one device
    return root, model, need


def _cluster(root, capacity: float):
    path = root / f"cam-{int(capacity)}.yaml"
    path.write_text(f"devices:\n  - {{name: cam, num_threads: 1, memory: {int(capacity)}B}}\n")
    return path


def test_a_plan_at_95_percent_of_the_capacity_deploys_and_runs(capsys, profiled):
    root, model, need = profiled
    cluster = _cluster(root, need / 0.95)
    code, _, err = run_cli(capsys, "plan", root / "p.json", "--cluster", cluster, "-o", root / "plan.json")
    assert code == 0, err
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.save(root / "x.npy", x)
    code, _, err = run_cli(capsys, "run", root / "plan.json", "--cluster", cluster, "--model", model,
                           "--input", root / "x.npy", "-o", root / "y.npy")
    assert code == 0, err
    assert np.load(root / "y.npy").shape[0] == 1


def test_ten_percent_over_is_refused_naming_the_device_the_need_and_the_capacity(capsys, profiled):
    root, _, need = profiled
    cluster = _cluster(root, need / 1.1)
    code, _, err = run_cli(capsys, "plan", root / "p.json", "--cluster", cluster)
    assert code == 2
    line = one_error_line(err)
    found = re.search(r"needs ([\d.]+) MB on cam, which has ([\d.]+) MB", line)
    assert found, line
    assert float(found.group(1)) == pytest.approx(need / 1e6, abs=0.01)
    assert float(found.group(2)) == pytest.approx(need / 1.1 / 1e6, abs=0.01)


def test_in_flight_counts_more_buffers_and_is_recorded_for_a_re_plan(capsys, profiled):
    root, _, need = profiled
    inst = prepare(build_problem(load_profile(root / "p.json")))
    mem = StageMemory.of(inst)
    buffers = inst.input_bytes + inst.output_bytes  # what each more request a one-stage plan holds adds
    running = sum(mem.terms(0, inst.num_blocks - 1))  # one request's; creating the session may need more
    cluster = _cluster(root, need + buffers / 2)  # room for one request's buffers and half another's
    code, _, err = run_cli(capsys, "plan", root / "p.json", "--cluster", cluster)
    assert code == 0, err
    more = math.ceil((need - running) / buffers) + 2  # requests whose buffers are more than that
    code, _, err = run_cli(capsys, "plan", root / "p.json", "--cluster", cluster, "--in-flight", str(more))
    assert code == 2 and "on cam" in one_error_line(err)
    roomy = _cluster(root, need + 8 * buffers)
    code, _, err = run_cli(capsys, "plan", root / "p.json", "--cluster", roomy, "--in-flight", "8",
                           "-o", root / "eight.json")
    assert code == 0, err
    assert plan_from_json((root / "eight.json").read_text())[0].provenance.in_flight == 8
    code, _, err = run_cli(capsys, "plan", root / "p.json", "--in-flight", "0")
    assert code == 2 and "--in-flight" in one_error_line(err)
