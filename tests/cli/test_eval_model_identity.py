"""``splitinfer eval`` names the model it evaluated: its path and the sha256 of its bytes, in the
JSON (``--json``, ``-o``) and the table, the digest plan.json's provenance records for the same file
(the report's side: tests/report/test_eval_model.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("skl2onnx")

from helpers.cli import run_cli
from helpers.digits import digits

from splitinfer.graph import load_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-sha-cli")
    d = digits()
    (root / "model.onnx").write_bytes(d.model_bytes)
    np.savez(root / "digits.npz", x=d.x[:64], y=d.y[:64])
    return root


def test_the_json_names_the_model_and_its_sha256(files, capsys):
    code, out, _ = run_cli(capsys, "eval", files / "model.onnx", "--data", files / "digits.npz", "--json",
                           "-o", files / "eval.json")
    assert code == 0
    sha = load_model(files / "model.onnx", batch=1).sha256  # as `splitinfer plan` records it
    for doc in (json.loads(out), json.loads((files / "eval.json").read_text())):
        assert doc["model"] == str(files / "model.onnx") and doc["model_sha256"] == sha
        assert list(doc)[:2] == ["model", "model_sha256"]  # side by side, first


def test_the_table_names_the_model_and_its_sha256(files, capsys, monkeypatch):
    monkeypatch.chdir(files)  # a short path: rich would wrap a long one inside its cell
    code, out, _ = run_cli(capsys, "eval", "model.onnx", "--data", "digits.npz")
    assert code == 0
    sha = load_model(files / "model.onnx", batch=1).sha256
    assert f"model │ model.onnx (sha256 {sha[:12]})" in " ".join(out.split())
