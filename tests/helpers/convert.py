"""Framework models through the whole loop from the command line: inspect -> split -> profile -> plan
-> run on a local cluster of two workers (``TWO_DEVICES``), the outputs compared with the framework's."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers.cli import TWO_DEVICES, run_cli
from splitinfer.convert.samples import available

needs_torch = pytest.mark.skipif(not available("torch"), reason="PyTorch is not installed: pip install "
                                                                "'splitinfer[torch]' (torch, onnxscript)")
needs_tf = pytest.mark.skipif(not available("tf"), reason="TensorFlow is not installed: pip install "
                                                          "'splitinfer[tf]' (tensorflow-cpu, tf2onnx)")


def cli_loop(capsys, folder: Path, model: Path, shape_flags: list[str], x: np.ndarray,
             framework: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``model`` (a framework file or an .onnx) through inspect, split, profile, plan (a stage on each
    device) and run with input ``x``; asserts each step and that run's output equals ``framework(x)``.
    Returns that output."""
    cluster = folder / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(TWO_DEVICES))
    code, out, err = run_cli(capsys, "inspect", model, *shape_flags, "--json")
    assert code == 0, err
    assert json.loads(out)["num_blocks"] >= 3  # JSON on stdout stays JSON: the conversion line is on stderr
    if model.suffix != ".onnx":
        assert "converted" in err and ", verified (tolerance" in err, err
    code, _, err = run_cli(capsys, "split", model, *shape_flags, "--blocks", "2", "-o", folder / "parts")
    assert code == 0, err
    assert len(json.loads((folder / "parts" / "manifest.json").read_text())["partitions"]) == 2
    code, _, err = run_cli(capsys, "profile", model, *shape_flags, "--cluster", cluster, "--budget-s", "0.5",
                           "-o", folder / "profile.json")
    assert code == 0, err
    blocks = json.loads((folder / "profile.json").read_text())["blocks"]
    code, _, err = run_cli(capsys, "plan", folder / "profile.json", "--cluster", cluster, "--pin", "0=a",
                           "--pin", f"{len(blocks) - 1}=b", "-o", folder / "plan.json")
    assert code == 0, err
    assert len(json.loads((folder / "plan.json").read_text())["plans"][0]["stages"]) == 2
    np.save(folder / "x.npy", x)
    code, out, err = run_cli(capsys, "run", folder / "plan.json", "--input", folder / "x.npy",
                             "-o", folder / "y.npy")
    assert code == 0, err
    got = np.load(folder / "y.npy")
    np.testing.assert_allclose(got, framework(x), atol=1e-4, rtol=1e-4)
    return got
