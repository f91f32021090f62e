"""The Quality section names the evaluated model: its file and sha256 from the eval file, and says
when it is not the profiled model (an eval of the int8 version, say); an eval file written before
``model_sha256`` existed still reads."""

from __future__ import annotations

import json

import pytest

from splitinfer.report import write_report
from splitinfer.report.quality import load_eval, summary_pairs

EVAL = {"num_samples": 3, "data": "digits.npz (npz)", "reference": "whole model m.onnx", "batch_size": 3,
        "model": "m.onnx"}


@pytest.fixture
def eval_file(tmp_path):
    def write(**fields) -> object:
        path = tmp_path / "eval.json"
        path.write_text(json.dumps({**EVAL, **fields}))
        return path

    return write


def _model_cell(page: str) -> str:
    """The Quality section's model (the Summary names the profiled model in a row of the same name)."""
    quality = page.index('<section id="quality">')
    start = page.index("<td>model</td><td>", quality) + len("<td>model</td><td>")
    return page[start:page.index("</td>", start)]


def test_the_profiled_model_is_named_with_its_sha256(profile, eval_file, tmp_path):
    index = write_report(profile, tmp_path / "out", evaluation=eval_file(model_sha256=profile.model.sha256))
    assert _model_cell(index.read_text()) == f"m.onnx (sha256 {profile.model.sha256[:12]})"


def test_another_model_is_said_to_be_another(profile, eval_file, tmp_path):
    index = write_report(profile, tmp_path / "out", evaluation=eval_file(model_sha256="ab" * 32))
    assert _model_cell(index.read_text()) == \
        f"m.onnx (sha256 {'ab' * 6}); not the profiled model ({profile.model.sha256[:12]})"


def test_an_eval_file_without_a_sha256_still_reads(eval_file):
    doc = load_eval(eval_file())
    assert doc.model_sha256 == ""
    assert dict(summary_pairs(doc, "cd" * 32))["model"] == "m.onnx"  # nothing to compare: no claim made
    bare = load_eval(eval_file(model=""))
    assert "model" not in dict(summary_pairs(bare))
