"""An evaluation names its model: the reference's file and the sha256 of its bytes, the same digest a
plan's provenance and a profile record (``load_model``'s), so a result traces to the exact model."""

from __future__ import annotations

import hashlib
import json

import pytest

pytest.importorskip("skl2onnx")

from helpers.digits import digits

from splitinfer.data import Dataset
from splitinfer.graph import load_model
from splitinfer.runtime.evaluate import Runner, evaluate, reference_runner


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval-sha") / "digits.onnx"
    path.write_bytes(digits().model_bytes)
    return path


def test_a_reference_from_a_file_names_the_file_and_its_sha256(model_file):
    runner = reference_runner(model_file, num_threads=1)
    assert runner.model == str(model_file)
    assert runner.model_sha256 == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert runner.model_sha256 == load_model(model_file, batch=1).sha256  # as plan.json and profile.json


def test_a_reference_from_bytes_has_their_sha256_and_no_file():
    runner = reference_runner(digits().model_bytes, num_threads=1)
    assert runner.model == "" and runner.model_sha256 == load_model(digits().model_bytes, batch=1).sha256


def test_the_evaluation_and_its_json_carry_the_model(model_file):
    d = digits()
    result = evaluate(reference_runner(model_file, num_threads=1), None, Dataset(d.x[:40], d.y[:40]))
    assert result.model == str(model_file)
    assert result.model_sha256 == load_model(model_file, batch=1).sha256
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["model"] == str(model_file) and doc["model_sha256"] == result.model_sha256


def test_a_runner_that_does_not_say_leaves_them_empty():
    d = digits()
    reference = reference_runner(d.model_bytes, num_threads=1)
    bare = Runner(reference.run, reference.inputs, reference.outputs)  # made by hand: no model named
    result = evaluate(bare, None, Dataset(d.x[:8]))
    assert result.model == "" and result.model_sha256 == ""
