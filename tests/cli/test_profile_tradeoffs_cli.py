"""`splitinfer profile --tradeoffs`: quality costs on a real data set (scikit-learn's digits, with a
classifier trained on it) and each option's seconds on every device, here and through workers; then
`plan --max-quality-drop` plans on the file it wrote."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.cli import one_error_line, run_cli
from helpers.digits import digits

from splitinfer.profile.files import load_profile


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = digits()
    root = tmp_path_factory.mktemp("profile_tradeoffs")
    (root / "digits.onnx").write_bytes(d.model_bytes)
    np.savez(root / "calibration.npz", x=d.x[:128], y=d.y[:128])
    np.savez(root / "named.npz", **{"input": d.x[:32]})
    (root / "cluster.yaml").write_text(
        "devices:\n  - {name: cam, slowdown: 3}\n  - {name: edge}\nlinks:\n"
        "  - {from: cam, to: edge, bandwidth: 100KB/s, latency: 1ms}\nsource: cam\n"
    )
    return root


def _profile(capsys, files, *flags):
    return run_cli(capsys, "profile", files / "digits.onnx", "--batch", "32", "--budget-s", "0.5", *flags)


def test_profile_here_measures_quality_and_times_then_plans_under_a_budget(capsys, files):
    out_file = files / "here.json"
    code, out, err = _profile(
        capsys,
        files,
        "--calibration",
        files / "calibration.npz",
        "--tradeoffs",
        "int8,lz4,int8:per_channel",
        "--limit",
        "64",
        "--device-name",
        "cam",
        "-o",
        out_file,
    )
    assert code == 0, err
    section = load_profile(out_file).tradeoffs
    assert section is not None and section.num_rows == 64 and section.calibration == "calibration.npz"
    assert list(section.precisions) == ["int8"]  # int8 alone: a precision and a compression
    assert set(section.compressions) == {"int8", "lz4", "int8:per_channel:axis=1"}
    assert section.compressions["lz4"].input_quality_cost == 0.0  # the upload, measured too
    assert section.compressions["int8"].input_bytes * 3.5 < load_profile(out_file).input_bytes
    int8 = section.precisions["int8"]
    assert set(int8.devices) == {"cam"} and len(int8.quality_cost) == 15
    assert all(q is None or 0 <= q <= 1 for q in int8.quality_cost)
    timed = [s for s in int8.devices["cam"] if s is not None]
    assert timed and all(s.median_s > 0 for s in timed)
    lz4 = section.compressions["lz4"]
    assert lz4.quality_cost == (0.0,) * 14  # lossless
    assert all(c > 0 for c in lz4.devices["cam"].compress_s)
    channel = section.compressions["int8:per_channel:axis=1"]
    raw = [b.cut_bytes for b in load_profile(out_file).blocks[:-1]]
    assert all(w < r for w, r in zip(channel.cut_bytes, raw, strict=True))  # int8 is smaller than fp32

    code, out, err = run_cli(capsys, "profile", "show", out_file)
    assert code == 0 and "compression lz4" in out and "precision int8" in out, err


def test_profile_through_workers_times_every_device(capsys, files):
    out_file = files / "cluster.json"
    code, _, err = _profile(
        capsys,
        files,
        "--cluster",
        files / "cluster.yaml",
        "--calibration",
        files / "calibration.npz",
        "--tradeoffs",
        "int8,zstd",
        "-o",
        out_file,
    )
    assert code == 0, err
    profile = load_profile(out_file)
    assert set(profile.tradeoffs.precisions["int8"].devices) == {"cam", "edge"}
    zstd = profile.tradeoffs.compressions["zstd"].devices
    assert set(zstd) == {"cam", "edge"}
    # cam runs 3x slower than edge: its timings carry the slowdown
    cam, edge = np.median(zstd["cam"].compress_s), np.median(zstd["edge"].compress_s)
    assert cam > 1.5 * edge
    code, _, err = run_cli(
        capsys,
        "plan",
        out_file,
        "--cluster",
        files / "cluster.yaml",
        "--max-quality-drop",
        "1%",
        "-o",
        files / "plan.json",
    )
    assert code == 0, err
    plan = json.loads((files / "plan.json").read_text())["plans"][0]
    assert plan["quality_cost"] <= 0.01


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--tradeoffs", "int8"], "--calibration must give one"),
        (["--tradeoffs", "int8", "--calibration", "named.npz"], "--calibration must give one"),
        (["--tradeoffs", "int3", "--calibration", "calibration.npz"], "int3"),
        (["--tradeoffs", "int8", "--calibration", "calibration.npz", "--limit", "0"], "--limit"),
    ],
)
def test_bad_tradeoff_options_are_one_line(capsys, files, flags, expected):
    flags = [str(files / f) if f.endswith(".npz") else f for f in flags]
    code, out, err = _profile(capsys, files, *flags, "-o", files / "never.json")
    assert code == 2, (out, err)
    assert expected in one_error_line(err)
    assert not (files / "never.json").exists()


def test_a_model_without_class_scores_cannot_measure_tradeoffs(capsys, tmp_path):
    from splitinfer import zoo

    (tmp_path / "det.onnx").write_bytes(zoo.build_small("detector").SerializeToString())
    from splitinfer.graph import load_model

    spec = load_model(tmp_path / "det.onnx").inputs[0]
    np.savez(tmp_path / "x.npz", x=np.zeros((4, *spec.shape[1:]), dtype=np.float32))
    code, _, err = run_cli(
        capsys,
        "profile",
        tmp_path / "det.onnx",
        "--calibration",
        tmp_path / "x.npz",
        "--tradeoffs",
        "int8",
        "--budget-s",
        "0.2",
        "-o",
        tmp_path / "p.json",
    )
    assert code == 2
    assert "no output of the model is class scores" in one_error_line(err)
