"""splitinfer.convert without a cluster: formats, shapes, the verification and its one line, a
conversion that does not verify (an error unless accepted), the cache, and the frameworks kept out of
``import splitinfer``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers.cli import one_error_line, run_cli
from helpers.convert import needs_torch
from onnx import helper

from splitinfer.convert import convert_file, detect_format, is_framework_model
from splitinfer.convert._common import Declared, canonical_names, shapes_for
from splitinfer.convert.verify import compare
from splitinfer.errors import ModelError, ShapeError


def test_importing_splitinfer_and_its_cli_loads_no_framework():
    code = ("import sys, splitinfer, splitinfer.convert, splitinfer.cli; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'tf2onnx', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_format_is_told_by_the_name_alone(tmp_path):
    for name, fmt in (("a.pt2", "torch.export"), ("a.pt", "torchscript"), ("a.keras", "keras"),
                      ("a.H5", "keras"), ("a.tflite", "tflite"), ("a.onnx", None)):
        assert detect_format(tmp_path / name) == fmt
    (tmp_path / "sm").mkdir()
    assert detect_format(tmp_path / "sm") is None
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    assert detect_format(tmp_path / "sm") == "savedmodel" and is_framework_model(tmp_path / "sm")
    assert not is_framework_model(b"bytes") and not is_framework_model(onnx.ModelProto())


def test_shapes_come_from_the_flags_else_the_model_with_a_batch():
    declared = [Declared("image", (None, 16, 16, 3)), Declared("mask", (1, 4), "int64")]
    assert shapes_for(declared, None, None, "m") == {"image": (1, 16, 16, 3), "mask": (1, 4)}
    assert shapes_for(declared, None, 4, "m")["image"] == (4, 16, 16, 3)
    assert shapes_for(declared, {"image": (2, 16, 16, 3)}, None, "m")["image"] == (2, 16, 16, 3)
    with pytest.raises(ShapeError, match=r"gives 'image' the shape 2,8,8,3, but m declares \(\?,16,16,3\)"):
        shapes_for(declared, {"image": (2, 8, 8, 3)}, None, "m")
    with pytest.raises(ShapeError, match=r"not an input of m\. the inputs are: image, mask"):
        shapes_for(declared, {"x": (1,)}, None, "m")
    with pytest.raises(ShapeError, match=r"input_shapes=\{'x': \(1, 3, 224, 224\)\}"):
        shapes_for([Declared("x", None)], None, None, "the module")
    with pytest.raises(ShapeError, match=r"dims that vary \(1,\?\)"):
        shapes_for([Declared("t", (None, None))], None, None, "m")


def test_the_difference_is_absolute_up_to_1_and_relative_above():
    small = compare(["y"], [np.array([0.5, 0.00005])], [np.array([0.5, 0.0])])
    assert small.max_abs_diff == pytest.approx(5e-5) and small.verified(1e-4)
    large = compare(["y"], [np.array([1000.05])], [np.array([1000.0])])
    assert large.tolerance(1e-4) == pytest.approx(0.1) and large.verified(1e-4)
    assert not compare(["y"], [np.array([1.0])], [np.array([1.1])]).verified(1e-4)
    nan = compare(["y"], [np.array([np.nan, 1.0])], [np.array([np.nan, 1.0])])
    assert nan.max_abs_diff == 0.0 and nan.verified()
    assert not compare(["y"], [np.array([np.nan])], [np.array([1.0])]).verified()
    shape = compare(["y"], [np.zeros((1, 2))], [np.zeros((2, 1))])
    assert shape.problem == "output 'y' has shape [1, 2], the framework gives [2, 1]" and not shape.verified()
    assert "NOT verified (tolerance 1.0e-04)" in compare(["y"], [np.ones(1)], [np.zeros(1)]).describe()


def test_names_numbered_by_a_converters_counter_are_numbered_again_in_graph_order():
    def graph(k: int, order: int) -> onnx.GraphProto:
        constants = [helper.make_tensor(f"c__{k + 3}", onnx.TensorProto.FLOAT, [1], [1.0]),
                     helper.make_tensor(f"d__{k + 4}", onnx.TensorProto.FLOAT, [1], [2.0])]
        return helper.make_graph(
            [helper.make_node("Relu", ["x"], [f"a__{k}:0"], name=f"relu__{k}"),
             helper.make_node("Mul", [f"a__{k}:0", f"d__{k + 4}"], [f"a__{k + 9}:0"], name=f"relu__{k + 9}"),
             helper.make_node("Add", [f"a__{k + 9}:0", f"c__{k + 3}"], ["y"], name="add")],
            "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])], constants[::order])

    first, second = graph(15, 1), graph(57, -1)  # the constants listed in either order
    canonical_names(first)
    canonical_names(second)
    assert first == second
    assert [list(n.output) for n in first.node] == [["a:0"], ["a__1:0"], ["y"]]
    assert [n.name for n in first.node] == ["relu", "relu__1", "add"]
    assert [t.name for t in first.initializer] == ["c", "d"]


def test_a_framework_that_is_not_installed_is_named_with_its_extra(tmp_path, capsys, monkeypatch,
                                                                   convert_cache):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails, as where it is not installed
    (tmp_path / "m.pt2").write_bytes(b"PK")
    with pytest.raises(ModelError, match=r"needs torch, which is not installed\. pip install 'splitinfer\["):
        convert_file(tmp_path / "m.pt2")
    code, _, err = run_cli(capsys, "inspect", tmp_path / "m.pt2")
    assert code == 2 and "pip install 'splitinfer[torch]'" in one_error_line(err)


def test_convert_needs_a_model_and_an_output(tmp_path, capsys):
    code, _, err = run_cli(capsys, "convert", tmp_path / "m.pt2")
    assert code == 2 and "convert needs MODEL and -o OUTPUT.onnx" in one_error_line(err)
    code, _, err = run_cli(capsys, "--tolerance", "0", "convert", tmp_path / "m.pt2", "-o",
                           tmp_path / "m.onnx")
    assert code == 2 and "--tolerance" in one_error_line(err)


@pytest.fixture
def pt2(tmp_path):
    import torch

    from splitinfer.convert.samples import IMAGE_TORCH, torch_cnn

    path = tmp_path / "cnn.pt2"
    torch.export.save(torch.export.export(torch_cnn(), (torch.zeros(IMAGE_TORCH),)), str(path))
    return path


@pytest.fixture
def off_by_one(monkeypatch):
    """The framework's side of the verification gives its outputs plus 1: no conversion verifies."""
    from splitinfer.convert import _torch

    runner = _torch._runner

    def shifted(*args, **kwargs):
        run = runner(*args, **kwargs)
        return lambda feeds: [y + 1 for y in run(feeds)]

    monkeypatch.setattr(_torch, "_runner", shifted)


@needs_torch
def test_a_conversion_that_does_not_verify_is_an_error_unless_accepted(tmp_path, capsys, pt2, off_by_one,
                                                                       convert_cache):
    code, _, err = run_cli(capsys, "inspect", pt2)
    line = one_error_line(err)
    assert code == 2 and "does not give the PyTorch exported program outputs: max abs difference" in line
    assert "--accept-unverified" in line
    code, _, err = run_cli(capsys, "convert", pt2, "-o", tmp_path / "out.onnx")
    assert code == 2 and "out.onnx was not written" in one_error_line(err)
    assert not (tmp_path / "out.onnx").exists()
    code, out, err = run_cli(capsys, "--accept-unverified", "inspect", pt2)  # from the cache, accepted
    assert code == 0 and "cached" in err and "max abs difference 1.0e+00 over 1 output, NOT verified" in err
    code, out, err = run_cli(capsys, "convert", pt2, "-o", tmp_path / "out.onnx", "--tolerance", "2")
    assert code == 0 and ", verified (tolerance" in out and (tmp_path / "out.onnx").is_file()


@needs_torch
def test_a_converted_model_is_read_back_from_the_cache_with_its_verification(pt2, convert_cache):
    first = convert_file(pt2)
    again = convert_file(pt2)
    assert not first.cached and again.cached and again.path == first.path
    assert again.verification == first.verification and again.input_shapes == {"image": (1, 3, 16, 16)}
    assert first.path is not None and first.path.read_bytes() == again.path.read_bytes()
    meta = {p.key for p in onnx.load(str(first.path)).metadata_props}
    assert "splitinfer.conversion" in meta


@needs_torch
def test_a_pickled_module_is_refused_with_the_ways_to_save_it(tmp_path, capsys, convert_cache):
    import torch

    torch.save(torch.nn.Linear(4, 2), tmp_path / "whole.pt")
    code, _, err = run_cli(capsys, "inspect", tmp_path / "whole.pt", "--input-shape", "input=1,4")
    line = one_error_line(err)
    assert code == 2 and "is not a TorchScript module" in line and "torch.export.save" in line
