"""The results' JSON and table forms, their immutability, and the package's imports."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

import splitinfer.quality
from splitinfer.quality import classification_report, compare_outputs

REF = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])


def test_agreement_json_encodes_infinities_as_strings():
    result = compare_outputs({"same": REF, "zero_ref": np.zeros(3), "off": REF},
                             {"same": REF, "zero_ref": np.ones(3), "off": REF[:, ::-1]}, top_k=(1, 2))
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))  # strict JSON: no Infinity, no NaN
    assert data == result.to_dict()  # already JSON's own form: string keys, no tuples
    same, zero_ref, off = data["outputs"]
    assert [o["name"] for o in data["outputs"]] == ["same", "zero_ref", "off"] and data["top_k"] == [1, 2]
    assert same["snr_db"] == "inf" and same["cosine"] == 1.0
    assert same["top_k_agreement"] == {"1": 1.0, "2": 1.0}
    assert zero_ref["snr_db"] == "-inf" and zero_ref["cosine"] == 0.0 and zero_ref["num_classes"] is None
    assert zero_ref["top1_agreement"] is None and zero_ref["top_k_agreement"] == {}
    # off: rows reversed, [0,1,3] and [1,2,0]: argmax 2 vs 0 and 1 vs 1.
    r, c = REF.ravel(), REF[:, ::-1].ravel()
    assert off["snr_db"] == pytest.approx(10 * math.log10(r @ r / ((r - c) @ (r - c))))
    assert off["cosine"] == pytest.approx(r @ c / (r @ r))
    assert off["max_abs_diff"] == 3.0 and off["mean_abs_diff"] == pytest.approx(8 / 6)
    assert off["top1_agreement"] == 0.5 and off["top_k_agreement"] == {"1": 0.5, "2": 0.5}
    assert off["num_rows"] == 2 and off["num_classes"] == 3 and off["num_elements"] == 6


def test_agreement_table_has_a_row_per_output():
    text = compare_outputs({"logits": REF, "embedding": REF[:, :1]},
                           {"logits": REF, "embedding": REF[:, :1] + 0.5}, top_k=(1, 5)).format_table()
    lines = text.splitlines()
    assert lines[0].split() == ["output", "elements", "cosine", "SNR", "dB", "max", "|diff|", "mean",
                                "|diff|", "top-1", "top-5"]
    assert set(lines[1]) == {"-", " "} and len(lines) == 4
    assert lines[2].split() == ["logits", "6", "1.000000", "inf", "0", "0", "1.0000", "1.0000"]
    cells = lines[3].split()
    assert cells[0] == "embedding" and cells[-2:] == ["-", "-"] and cells[4:6] == ["0.5", "0.5"]
    assert float(cells[3]) == pytest.approx(10 * math.log10(9 / 0.5), abs=0.005)
    assert len({len(line) for line in lines[:2]}) == 1  # the rule is as wide as the header


def test_classification_json_and_table():
    y = np.array([0, 1, 1, 3])
    report = classification_report(y, [0, 1, 2, 2], class_names=["cat", "dog", "owl", "eel"], top_k=(1, 3))
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data == report.to_dict()
    assert data["confusion"] == [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0]]
    assert data["class_names"] == ["cat", "dog", "owl", "eel"] and data["top_k_accuracy"] == {}
    assert data["undefined_precision"] == [3] and data["undefined_sensitivity"] == [2]
    assert data["precision"] == [1.0, 1.0, 0.0, 0.0] and data["sensitivity"] == [1.0, 0.5, 0.0, 0.0]
    assert data["accuracy"] == 0.5 and data["support"] == [1, 2, 0, 1]
    assert data["macro_precision"] == 0.5 and data["macro_sensitivity"] == 0.375
    assert data["balanced_accuracy"] == 0.5 and data["g_mean"] == 0.0
    text = report.format_table()
    assert text.startswith("4 samples, 4 classes")
    assert "eel          1    0.0000*      0.0000" in text
    assert "owl          0    0.0000       0.0000*" in text
    assert "* undefined" in text
    assert text.splitlines()[-6].split() == ["true", "\\", "predicted", "cat", "dog", "owl", "eel"]
    assert text.splitlines()[-1].split() == ["eel", "0", "0", "1", "0"]  # the confusion matrix's last row


def test_classification_table_with_scores_and_many_classes():
    rng = np.random.default_rng(1)
    scores = rng.random((50, 25))
    report = classification_report(rng.integers(0, 25, 50), scores, top_k=(1, 5))
    text = report.format_table()
    assert f"top-5 accuracy     {report.top_k_accuracy[5]:.4f}" in text
    assert "confusion matrix of 25 classes: see the JSON report" in text and "true \\ predicted" not in text
    assert len(report.to_dict()["confusion"]) == 25


def test_results_are_frozen():
    agreement = compare_outputs({"a": REF}, {"a": REF})
    report = classification_report([0, 1], REF)
    with pytest.raises(dataclasses.FrozenInstanceError):
        agreement["a"].snr_db = 0.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.accuracy = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        report.confusion[0, 0] = 5


def test_the_package_imports_only_numpy_and_the_errors():
    allowed = {"numpy", "splitinfer.errors", "__future__"}
    root = Path(splitinfer.quality.__file__).parent
    for module in root.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert (name in allowed or top in allowed or name.startswith("splitinfer.quality")
                        or (top != "splitinfer" and top in _stdlib())), f"{module.name} imports {name}"


def _stdlib() -> frozenset[str]:
    import sys
    return frozenset(sys.stdlib_module_names)
