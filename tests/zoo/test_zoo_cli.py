"""`splitinfer zoo list` and `splitinfer zoo build`, through the real CLI entry point."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort

from splitinfer import zoo
from splitinfer.cli import main


def test_list_shows_every_model_with_sizes(capsys):
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    for name in zoo.names():
        assert name in out
    assert "25.6M" in out and "138.4M" in out  # ResNet-50, VGG-16


def test_list_json_parses(capsys):
    assert main(["zoo", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == zoo.names()
    bert = next(r for r in rows if r["name"] == "bert")
    assert [i["name"] for i in bert["inputs"]] == ["input_ids", "attention_mask"]
    assert bert["inputs"][0]["dtype"] == "int64" and bert["inputs"][0]["shape"] == [1, 128]
    assert bert["num_params"] == zoo.summarize("bert").num_params


def test_build_small_writes_a_runnable_model(tmp_path, capsys):
    path = tmp_path / "det.onnx"
    assert main(["zoo", "build", "detector", "--small", "--seed", "3", "-o", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {path}" in out and "detector (small)" in out and "p4:float32[1,24,4,4]" in out
    model = onnx.load(path)
    assert model.SerializeToString() == zoo.build_small("detector", seed=3).SerializeToString()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    p4, p5 = session.run(None, {"image": image})
    assert p4.shape == (1, 24, 4, 4) and p5.shape == (1, 24, 2, 2)


def test_build_with_multipliers_and_opset(tmp_path):
    path = tmp_path / "vit.onnx"
    args = ["zoo", "build", "vit_b16", "--width", "0.125", "--depth", "0.1", "--resolution", "32",
            "--opset", "16", "-o", str(path)]
    assert main(args) == 0
    model = onnx.load(path)
    assert model.opset_import[0].version == 16
    assert not any(n.op_type == "LayerNormalization" for n in model.graph.node)  # decomposed below 17
    onnx.checker.check_model(model, full_check=True)


def error_text(capsys) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(capsys.readouterr().err.split())


def test_bad_name_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["zoo", "build", "resnet", "-o", str(tmp_path / "x.onnx")]) == 2
    err = error_text(capsys)
    assert "error: unknown zoo model 'resnet'" in err and "pick one of: vgg16" in err
    assert "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()


def test_unwritable_paths_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["zoo", "build", "vgg16", "--small", "-o", str(tmp_path / "missing" / "x.onnx")]) == 2
    assert "does not exist" in error_text(capsys)
    assert main(["zoo", "build", "vgg16", "--small", "-o", str(tmp_path)]) == 2
    assert "is a directory" in error_text(capsys)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["zoo", "build", "vgg16", "--small", "-o", str(blocker / "x.onnx")]) == 2
    assert "error:" in error_text(capsys)


def test_small_with_multipliers_is_refused(tmp_path, capsys):
    assert main(["zoo", "build", "bert", "--small", "--width", "0.5", "-o", str(tmp_path / "b.onnx")]) == 2
    assert "--small sets its own" in error_text(capsys)


def test_external_data_writes_both_files_and_names_them(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    assert main(["zoo", "build", "mlp", "--small", "--external-data", "-o", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    data = tmp_path / "m.data"
    assert f"wrote {path}" in out and f"in {data}" in out and "keep the two files together" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.data", "m.onnx"]
    x = np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32)
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    memory = zoo.build_small("mlp").SerializeToString()
    (want,) = ort.InferenceSession(memory, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(got, want)


def test_small_models_stay_in_one_file_by_default(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    assert main(["zoo", "build", "mlp", "--small", "-o", str(path)]) == 0
    assert ".data" not in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    assert path.read_bytes() == zoo.build_small("mlp").SerializeToString()


def test_bad_external_data_requests_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["zoo", "build", "mlp", "--inline-data", "-o", str(tmp_path / "m.onnx")]) == 2
    err = error_text(capsys)
    assert "error: mlp at width 1 holds 2.4 GB" in err and "--inline-data" in err and "Traceback" not in err
    assert main(["zoo", "build", "mlp", "--small", "--external-data", "-o", str(tmp_path / "m.data")]) == 2
    assert "same name" in error_text(capsys)
    missing = tmp_path / "missing" / "m.onnx"
    assert main(["zoo", "build", "mlp", "--small", "--external-data", "-o", str(missing)]) == 2
    assert "does not exist" in error_text(capsys)
    assert not list(tmp_path.iterdir())
