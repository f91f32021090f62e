"""``splitinfer quantize``: the digits classifier (scikit-learn's MLP, exported with skl2onnx) to int8 and
fp16 calibrated on an .npz, a zoo CNN on a folder of photographs; every bad input is one line, exit 2."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("skl2onnx")

from helpers.cli import one_error_line, run_cli
from helpers.digits import NUM_TRAIN, digits

from splitinfer.graph.inference import create_inference_session
from splitinfer.quality import classification_report


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """model.onnx (batch symbolic), calibration.npz (300 training digits), held_out.npz, and a folder of
    six photographs (scikit-image's) for a zoo CNN, r18.onnx (resnet18, small)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from splitinfer import zoo

    root = tmp_path_factory.mktemp("quantize_cli")
    d = digits()
    (root / "model.onnx").write_bytes(d.model_bytes)
    x, _ = load_digits(return_X_y=True)
    np.savez(root / "calibration.npz", x=(x[:300] / 16.0).astype(np.float32))
    assert NUM_TRAIN >= 300  # calibrated on training digits only
    np.savez(root / "narrow.npz", x=np.zeros((40, 32), np.float32))
    (root / "r18.onnx").write_bytes(zoo.build_small("resnet18").SerializeToString())
    import skimage.data

    (root / "photos").mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket", "cat", "colorwheel"):
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(root / "photos" / f"{name}.png")
    return root


def _accuracy(path) -> float:
    d = digits()
    scores = create_inference_session(path.read_bytes()).run(["probabilities"], {"x": d.x})[0]
    return classification_report(d.y, scores).accuracy


@pytest.mark.parametrize("method", ["static", "dynamic", "auto"])
def test_int8_digits_loses_at_most_one_point(files, capsys, tmp_path, method):
    out = tmp_path / "q.onnx"
    code, stdout, err = run_cli(capsys, "quantize", files / "model.onnx", "--calibration",
                                files / "calibration.npz", "--method", method, "-o", out)
    assert code == 0, err
    chosen = "dynamic" if method == "auto" else method
    assert f"to int8 {chosen}" in stdout and " MB -> " in stdout and "splitinfer eval" in stdout
    if chosen == "static":
        assert "calibrated on 288 samples" in stdout  # 9 batches of 32
    reference, accuracy = _accuracy(files / "model.onnx"), _accuracy(out)
    print(f"digits via the CLI: fp32 {reference:.4f}, int8 {method} {accuracy:.4f}")
    assert accuracy >= reference - 0.01
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert ("QuantizeLinear" if chosen == "static" else "MatMulInteger") in ops


def test_fp16_needs_no_calibration(files, capsys, tmp_path):
    out = tmp_path / "h.onnx"
    code, stdout, err = run_cli(capsys, "quantize", files / "model.onnx", "--precision", "fp16", "-o", out)
    assert code == 0, err
    assert "to fp16 in" in stdout
    assert _accuracy(out) >= _accuracy(files / "model.onnx") - 0.005


def test_zoo_cnn_calibrated_on_a_folder_of_photographs(files, capsys, tmp_path):
    out = tmp_path / "r18.int8.onnx"
    code, stdout, err = run_cli(capsys, "quantize", files / "r18.onnx", "--calibration", files / "photos",
                                "--limit", "5", "-o", out)
    assert code == 0, err
    assert "to int8 static, calibrated on 5 samples" in stdout  # auto: a CNN is calibrated


def test_help_teaches_with_examples(capsys):
    code, stdout, _ = run_cli(capsys, "quantize", "--help")
    assert code == 0
    assert "Examples" in stdout and "splitinfer quantize r18.onnx --calibration" in stdout
    assert "--precision" in stdout and "--method" in stdout and "--force" in stdout


def test_existing_output_needs_force(files, capsys, tmp_path):
    out = tmp_path / "q.onnx"
    out.write_bytes(b"keep me")
    args = ("quantize", files / "model.onnx", "--method", "dynamic", "-o", out)
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "exists" in one_error_line(err) and "--force" in one_error_line(err)
    assert out.read_bytes() == b"keep me"
    code, _, err = run_cli(capsys, *args, "--force")
    assert code == 0, err
    assert out.read_bytes() != b"keep me"


@pytest.mark.parametrize(("extra", "expected"), [
    (("--precision", "int4"), "--precision 'int4' is not a precision. use one of fp32, fp16, int8"),
    (("--precision", "fp32"), "--precision fp32 leaves the model as it is"),
    (("--method", "fancy"), "--method 'fancy' is not an int8 quantisation method"),
    (("--method", "static"), "static int8 needs calibration data (--method static), and no --calibration"),
    (("--calibration", "{root}/narrow.npz", "--method", "static"),
     "has samples of shape [32] float32, but model input 'x' takes [-1, 64] float32"),
    (("--calibration", "{root}/missing.npz", "--method", "static"), "does not exist"),
    (("--calibration", "{root}/calibration.npz", "--limit", "0"), "--limit"),
])
def test_bad_input_is_one_line(files, capsys, tmp_path, extra, expected):
    out = tmp_path / "q.onnx"
    args = [a.format(root=files) for a in extra]
    code, _, err = run_cli(capsys, "quantize", files / "model.onnx", *args, "-o", out)
    assert code == 2
    assert expected in one_error_line(err)
    assert not out.exists()


def test_a_cnn_without_calibration_says_why_it_needs_it(files, capsys, tmp_path):
    code, _, err = run_cli(capsys, "quantize", files / "r18.onnx", "-o", tmp_path / "q.onnx")
    assert code == 2
    assert "auto picks static: the model has Conv" in one_error_line(err)
    assert "--calibration DATA" in one_error_line(err)
