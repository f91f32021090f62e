"""``splitinfer convert --report``: the sample models of each installed framework converted and
verified, as a Markdown and a CSV table (a framework not installed is a row that says so)."""

from __future__ import annotations

import csv

from helpers.cli import run_cli

from splitinfer.convert.samples import available


def test_the_report_converts_and_verifies_every_sample(tmp_path, capsys, convert_cache):
    code, out, err = run_cli(capsys, "convert", "--report", tmp_path / "report")
    assert code == 0, err
    assert "conversions.md" in out
    rows = list(csv.DictReader((tmp_path / "report" / "conversions.csv").open()))
    markdown = (tmp_path / "report" / "conversions.md").read_text()
    assert markdown.startswith("| model | format | converter | converted | verified | max_abs_diff |")
    by_model = {r["model"]: r for r in rows}
    for framework, sample in (("torch", "torch_cnn.pt2"), ("tf", "keras_cnn.keras")):
        if not available(framework):
            note = by_model[f"({framework} samples)"]["note"]
            assert f"not installed: pip install 'splitinfer[{framework}]'" in note
            continue
        assert by_model[sample]["converted"] == "yes" and by_model[sample]["verified"] == "yes"
    if available("torch"):
        torch_rows = [r for r in rows if r["model"].startswith("torch_")]
        assert len(torch_rows) == 4 and all(r["verified"] == "yes" for r in torch_rows)
        assert (tmp_path / "report" / "onnx" / "torch_cnn_pt2.onnx").is_file()
    if available("tf"):
        tf_rows = [r for r in rows if r["model"].startswith(("keras_", "tf_"))]
        assert len(tf_rows) == 6 and all(r["converted"] == "yes" for r in tf_rows)
        # float models agree to float rounding; TFLite's int8-weight kernels quantise activations too
        assert all(r["verified"] == "yes" for r in tf_rows if "int8" not in r["model"])
        int8 = next(r for r in tf_rows if "int8" in r["model"])
        assert float(int8["max_abs_diff"]) > float(int8["tolerance"]) and int8["verified"] == "no"
