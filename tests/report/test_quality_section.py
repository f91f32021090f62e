"""The report's Quality section from a real eval: scikit-learn's MLP on the digits (exported to ONNX),
alone (``splitinfer eval -o eval.json``) and split with int8 hops against the whole model; the
numbers on the page are the ones scikit-learn computes; a bad --eval file is one line, exit 2."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

pytest.importorskip("skl2onnx")

from helpers.cli import one_error_line, run_cli
from helpers.digits import digits, split_after_relus
from sklearn import metrics

from splitinfer.data import Dataset
from splitinfer.graph.inference import create_inference_session
from splitinfer.profile.files import save_profile
from splitinfer.report import check_page, find_browser, write_report
from splitinfer.report.quality import load_eval
from splitinfer.runtime.evaluate import chain_runner, evaluate, reference_runner, with_hop_compression

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _rows(path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _predictions() -> np.ndarray:
    d = digits()
    session = create_inference_session(d.model_bytes, num_threads=1)
    (probabilities,) = session.run(["probabilities"], {"x": d.x})
    return probabilities.argmax(axis=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory, profile):
    """profile.json (the report's sample profile), model.onnx and digits.npz, and three eval files:
    the model alone with labels (from the CLI), int8 hops against the whole model (the library), and
    the same without labels."""
    root = tmp_path_factory.mktemp("quality")
    d = digits()
    save_profile(profile, root / "profile.json")
    (root / "model.onnx").write_bytes(d.model_bytes)
    np.savez(root / "digits.npz", x=d.x, y=d.y)
    (root / "labels.txt").write_text("\n".join(NAMES) + "\n")
    code = run_cli_plain("eval", root / "model.onnx", "--data", root / "digits.npz", "--labels",
                         root / "labels.txt", "-o", root / "alone.json", "--json")
    assert code == 0
    reference = reference_runner(d.model_bytes, num_threads=1)
    candidate = chain_runner(with_hop_compression(split_after_relus(d.model_bytes, ["a", "b", "c"]), "int8"),
                             num_threads=1)
    for name, data in (("int8.json", Dataset(d.x, d.y, NAMES, "digits")),
                       ("unlabelled.json", Dataset(d.x, source="digits"))):
        result = evaluate(reference, candidate, data)
        (root / name).write_text(json.dumps({"model": "model.onnx", "compress": "int8", **result.to_dict()}))
    return root


def run_cli_plain(*args) -> int:
    from splitinfer.cli import main

    return main([str(a) for a in args])


def test_the_model_alone_shows_accuracy_confusion_and_per_class_numbers_sklearn_agrees_with(files, tmp_path):
    written = []
    index = write_report(files / "profile.json", tmp_path, evaluation=files / "alone.json",
                         on_file=written.append)
    names = {p.name for p in written}
    assert {"confusion.png", "confusion.svg", "accuracy.csv", "classes.csv"} <= names
    assert "agreement.csv" not in names  # nothing to agree with: no candidate
    d, predicted = digits(), _predictions()
    (accuracy,) = _rows(tmp_path / "accuracy.csv")
    assert accuracy["classifier"] == "model"
    assert float(accuracy["accuracy"]) == pytest.approx(metrics.accuracy_score(d.y, predicted), abs=1e-12)
    classes = _rows(tmp_path / "classes.csv")
    assert [r["class"] for r in classes] == NAMES
    precision = metrics.precision_score(d.y, predicted, average=None, zero_division=0)
    sensitivity = metrics.recall_score(d.y, predicted, average=None, zero_division=0)
    np.testing.assert_allclose([float(r["precision"]) for r in classes], precision, atol=1e-12)
    np.testing.assert_allclose([float(r["sensitivity"]) for r in classes], sensitivity, atol=1e-12)
    assert [int(r["support"]) for r in classes] == np.bincount(d.y, minlength=10).tolist()
    page = index.read_text()
    assert '<section id="quality"><h2>Quality</h2>' in page and '<a href="#quality">Quality</a>' in page
    assert '<figure id="confusion">' in page and page.count("<img ") == 3  # the profile's two, the matrix
    assert f'<td class="">{metrics.accuracy_score(d.y, predicted):.4f}</td>' in page and "seven" in page
    assert (tmp_path / "confusion.png").stat().st_size > 5000


def test_a_split_with_int8_hops_shows_agreement_and_the_accuracy_drop(files, tmp_path):
    index = write_report(files / "profile.json", tmp_path, evaluation=files / "int8.json")
    doc = load_eval(files / "int8.json")
    rows = _rows(tmp_path / "accuracy.csv")
    assert [r["classifier"] for r in rows] == ["reference", "candidate"]
    drop = float(rows[0]["accuracy"]) - float(rows[1]["accuracy"])
    assert drop == pytest.approx(doc.accuracy_drop, abs=1e-12) and drop <= 0.005
    agreement = {r["output"]: r for r in _rows(tmp_path / "agreement.csv")}
    assert set(agreement) == {"label", "probabilities"}
    assert 0.99 < float(agreement["probabilities"]["cosine"]) < 1.0  # int8 hops: close, not equal
    assert float(agreement["probabilities"]["top1_agreement"]) > 0.98
    classes = _rows(tmp_path / "classes.csv")
    assert set(classes[0]) == {"class", "support", "precision", "sensitivity", "reference_precision",
                               "reference_sensitivity"}
    page = index.read_text()
    assert f"{doc.accuracy_drop * 100:+.2f} points" in page and "hops compressed int8" in page


def test_without_labels_there_is_agreement_and_no_confusion_matrix(files, tmp_path):
    written = []
    index = write_report(files / "profile.json", tmp_path, evaluation=files / "unlabelled.json",
                         on_file=written.append)
    names = {p.name for p in written}
    assert "agreement.csv" in names and not names & {"confusion.png", "accuracy.csv", "classes.csv"}
    assert "No accuracy or confusion matrix" in index.read_text()


def test_report_eval_from_the_command_line_and_in_chromium(files, tmp_path, capsys):
    check = ["--check"] if find_browser() is not None else []
    code, out, _ = run_cli(capsys, "report", files / "profile.json", "--eval", files / "alone.json",
                           "-o", tmp_path, *check)
    assert code == 0 and "confusion.png" in out and "classes.csv" in out
    if check:
        assert "checked in Chromium: 3 images" in out
        assert check_page(tmp_path / "index.html").ok


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"cannot read eval file .*missing\.json: No such file"),
        ("not json", r"eval file .*bad\.json is not JSON"),
        ('{"schema": 1, "plans": []}', r"is not an eval result: Object missing required field `num_samples`"),
        ('{"num_samples": 3, "data": "d", "reference": "r", "classification": {"num_samples": 3, '
         '"num_classes": 2, "accuracy": 0.5, "confusion": [[1, 0]], "support": [1, 2], "precision": [1, 0], '
         '"sensitivity": [1, 0]}}', r"classification has 2 classes but 1 entries in confusion"),
    ],
)
def test_a_bad_eval_file_is_one_line_and_exit_2(files, tmp_path, capsys, content, message):
    path = tmp_path / ("missing.json" if content is None else "bad.json")
    if content is not None:
        path.write_text(content)
    code, _, err = run_cli(capsys, "report", files / "profile.json", "--eval", path, "-o", tmp_path / "out")
    assert code == 2 and re.search(message, one_error_line(err))
    assert "splitinfer eval" in err and not (tmp_path / "out").exists()  # the fix; nothing written
