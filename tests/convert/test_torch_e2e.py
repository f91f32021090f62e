"""A PyTorch model through the whole loop (issue 19, item 2): a ``torch.nn.Module`` converted in Python,
and its exported program (``.pt2``) given to every command as it is; run on two local workers gives
the module's own outputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers.cli import run_cli
from helpers.convert import cli_loop, needs_torch

from splitinfer.convert import convert, convert_file
from splitinfer.convert.samples import IMAGE_TORCH, torch_cnn

pytestmark = [needs_torch, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def _module_output(module):
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return run


def test_an_nn_module_converted_in_python_runs_split_on_two_workers(tmp_path, capsys, convert_cache):
    module = torch_cnn()
    conversion = convert(module, {"image": IMAGE_TORCH})
    assert conversion.verified and conversion.format == "torch"
    assert "verified (tolerance 1.0e-04)" in conversion.line()
    assert [i.name for i in conversion.proto.graph.input] == ["image"]
    onnx.save(conversion.proto, tmp_path / "cnn.onnx")
    x = np.random.default_rng(7).standard_normal(IMAGE_TORCH).astype(np.float32)
    cli_loop(capsys, tmp_path, tmp_path / "cnn.onnx", ["--input-shape", "image=1,3,16,16"], x,
             _module_output(module))


def test_an_exported_program_goes_through_every_command_as_it_is(tmp_path, capsys, convert_cache):
    import torch

    module = torch_cnn()
    torch.export.save(torch.export.export(module, (torch.zeros(IMAGE_TORCH),)), str(tmp_path / "cnn.pt2"))
    x = np.random.default_rng(8).standard_normal(IMAGE_TORCH).astype(np.float32)
    cli_loop(capsys, tmp_path, tmp_path / "cnn.pt2", [], x, _module_output(module))
    assert len(list(convert_cache.glob("converted/cnn-*.onnx"))) == 1  # converted once, then read back


def test_torchscript_needs_its_shape_and_converts_with_it(tmp_path, capsys, convert_cache):
    import torch

    module = torch_cnn()
    torch.jit.save(torch.jit.trace(module, torch.zeros(IMAGE_TORCH)), str(tmp_path / "cnn.pt"))
    code, _, err = run_cli(capsys, "inspect", tmp_path / "cnn.pt")
    assert code == 2 and "--input-shape image=1,3,224,224" in err and err.count("\n") == 1
    code, out, err = run_cli(capsys, "convert", tmp_path / "cnn.pt", "--input-shape", "image=1,3,16,16",
                             "-o", tmp_path / "cnn.onnx")
    assert code == 0, err
    assert "converted" in out and "TorchScript" in out and ", verified" in out
    c = convert_file(tmp_path / "cnn.pt", {"image": IMAGE_TORCH})
    assert c.verified and c.path is not None and c.path.parent == convert_cache / "converted"
