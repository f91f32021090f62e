"""`run` and `bench` with a trade-off plan whose stage runs int8: static int8 is calibrated on real
inputs, given with --calibration (bench: its --data by default); without any, one line says so."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
import yaml
from helpers import deploy as helpers
from helpers.cli import one_error_line, run_cli

from splitinfer.cluster import parse_cluster
from splitinfer.plan import plan_from_json, plan_to_json
from splitinfer.profile.files import save_profile

CLUSTER = {
    "source": "a",
    "devices": [{"name": "a", "num_threads": 1}, {"name": "b", "num_threads": 1}],
    "links": [{"from": "a", "to": "b", "bandwidth": "1GB/s", "latency": "0.2ms"}],
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibration_cli")
    data = helpers.model_bytes("resnet18")
    (root / "model.onnx").write_bytes(data)
    (root / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
    profile = helpers.fake_profile(data, parse_cluster(CLUSTER))
    save_profile(profile, root / "profile.json")
    code = run_cli_plain(
        [
            "plan",
            root / "profile.json",
            "--cluster",
            root / "cluster.yaml",
            "-o",
            root / "plan.json",
            "--pin",
            "0=b",
        ]
    )
    assert code == 0
    (plan,) = plan_from_json((root / "plan.json").read_text())
    stages = tuple(msgspec.structs.replace(s, precision="int8") for s in plan.stages)
    (root / "int8.json").write_text(plan_to_json(msgspec.structs.replace(plan, stages=stages)))
    from splitinfer.graph import load_model

    spec = load_model(data).inputs[0]
    rng = np.random.default_rng(0)
    np.save(root / "images.npy", rng.random((8, *spec.shape[1:]), dtype=np.float32))
    return root


def run_cli_plain(args) -> int:
    from splitinfer.cli import main

    return main([str(a) for a in args])


def _flags(files):
    return [
        "--cluster",
        files / "cluster.yaml",
        "--model",
        files / "model.onnx",
        "--profile",
        files / "profile.json",
    ]


def test_without_calibration_an_int8_plan_is_one_line(files, capsys):
    code, _, err = run_cli(capsys, "run", files / "int8.json", *_flags(files))
    assert code == 2
    assert "give --calibration DATA" in one_error_line(err)


def test_run_and_bench_calibrate_int8_stages_on_the_data_given(files, capsys):
    code, out, err = run_cli(
        capsys, "run", files / "int8.json", *_flags(files), "--calibration", files / "images.npy"
    )
    assert code == 0, err
    code, out, err = run_cli(
        capsys,
        "bench",
        files / "int8.json",
        *_flags(files),
        "--data",
        files / "images.npy",
        "--requests",
        "3",
        "--num-warmup",
        "1",
    )
    assert code == 0, err
    assert "int8" in out  # the stage table names the stage's precision
