"""``evaluate``: a real classifier (scikit-learn's MLP on the digits, exported with skl2onnx) split by
splitinfer, run in process and on workers, against the whole model and scikit-learn's own metrics."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

pytest.importorskip("skl2onnx")

from helpers.digits import digits, split_after_relus
from helpers.runtime_models import local_cluster
from sklearn import metrics

from splitinfer.data import Dataset
from splitinfer.errors import InputError, PlanError
from splitinfer.graph.inference import create_inference_session
from splitinfer.runtime import deploy_stages
from splitinfer.runtime.evaluate import (
    Runner,
    chain_runner,
    evaluate,
    reference_runner,
    session_runner,
    with_hop_compression,
)

DEVICES = ["a", "b", "c"]  # three partitions: cut after each of the two hidden ReLUs


@pytest.fixture(scope="module")
def model():
    return digits()


@pytest.fixture(scope="module")
def data(model):
    return Dataset(model.x, model.y, source="digits")


@pytest.fixture(scope="module")
def reference(model):
    return reference_runner(model.model_bytes, num_threads=1)


@pytest.fixture(scope="module")
def stages(model):
    return split_after_relus(model.model_bytes, DEVICES)


def _onnx_predictions(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """The whole model's class per sample, straight from ONNX Runtime (all samples in one batch)."""
    session = create_inference_session(model_bytes, num_threads=1)
    (probabilities,) = session.run(["probabilities"], {"x": x})
    return probabilities.argmax(axis=1)


def _predictions(runner, x: np.ndarray) -> np.ndarray:
    return np.array([runner({"x": x[i:i + 1]})["probabilities"].argmax() for i in range(len(x))])


def test_a_lossless_split_agrees_fully_and_scores_what_sklearn_scores(model, data, reference, stages):
    result = evaluate(reference, chain_runner(stages, num_threads=1), data)
    expected = metrics.accuracy_score(model.y, _onnx_predictions(model.model_bytes, model.x))
    assert 0.85 < expected < 1.0  # a real, imperfect classifier
    assert result.num_samples == len(model.y) and result.batch_size == 1 and result.num_padded == 0
    assert result.classifier_output == "probabilities"
    probabilities = result.agreement["probabilities"]
    assert probabilities.top1_agreement == 1.0 and probabilities.num_rows == len(model.y)
    assert result.reference_classification.accuracy == pytest.approx(expected, abs=1e-12)
    assert result.classification.accuracy == pytest.approx(expected, abs=1e-12)
    assert result.accuracy_drop == 0.0
    text = result.format_table()
    assert "397 samples, batch 1" in text
    assert f"accuracy: reference {expected:.4f}, candidate {expected:.4f}" in text
    assert "agreement with the reference" in text and "true \\ predicted" in text
    assert json.loads(json.dumps(result.to_dict()))["agreement"]["outputs"][1]["snr_db"] == "inf"


def test_hop_compression_leaves_the_uplink_alone_and_refuses_unknown_codecs(stages):
    assert [s.compression for s in with_hop_compression(stages, "int8:per_channel")] == \
        ["", "int8:per_channel", "int8:per_channel"]
    with pytest.raises(PlanError, match="unknown compression 'gzip'"):
        with_hop_compression(stages, "gzip")


def test_int8_on_the_cut_hops_costs_at_most_half_a_point(model, data, reference, stages):
    candidate = chain_runner(with_hop_compression(stages, "int8"), num_threads=1)
    result = evaluate(reference, candidate, data)
    probabilities = result.agreement["probabilities"]
    # The hops were really compressed: the outputs differ from the reference's...
    assert math.isfinite(probabilities.snr_db) and probabilities.max_abs_diff > 1e-4
    # ...and the goal holds: the accuracy drops by half a point at most.
    assert result.accuracy_drop <= 0.005
    expected = metrics.accuracy_score(model.y, _onnx_predictions(model.model_bytes, model.x)) - \
        metrics.accuracy_score(model.y, _predictions(candidate, model.x))
    assert result.accuracy_drop == pytest.approx(expected, abs=1e-12)  # reference minus candidate
    assert probabilities.top1_agreement >= 0.99
    print(f"digits: reference {result.reference_classification.accuracy:.4f}, int8 cut hops "
          f"{result.classification.accuracy:.4f}, top-1 agreement {probabilities.top1_agreement:.4f}, "
          f"SNR {probabilities.snr_db:.1f} dB")


def test_the_classification_metrics_are_scikit_learns(model, data, reference, stages):
    candidate = chain_runner(with_hop_compression(stages, "int8"), num_threads=1)
    report = evaluate(reference, candidate, data).classification
    predicted = _predictions(candidate, model.x)
    y = model.y
    np.testing.assert_array_equal(report.confusion, metrics.confusion_matrix(y, predicted, labels=range(10)))
    np.testing.assert_allclose(report.precision, metrics.precision_score(y, predicted, average=None,
                                                                         zero_division=0), atol=1e-12)
    np.testing.assert_allclose(report.sensitivity, metrics.recall_score(y, predicted, average=None,
                                                                        zero_division=0), atol=1e-12)
    assert report.macro_precision == pytest.approx(metrics.precision_score(y, predicted, average="macro",
                                                                           zero_division=0), abs=1e-12)
    assert report.balanced_accuracy == pytest.approx(metrics.balanced_accuracy_score(y, predicted), abs=1e-12)
    assert report.support == tuple(np.bincount(y, minlength=10))


@pytest.mark.parametrize("compression", ["zstd", "int8"])
def test_real_workers_give_the_in_process_numbers(data, reference, stages, compression):
    compressed = with_hop_compression(stages, compression)
    in_process = evaluate(reference, chain_runner(compressed, num_threads=1), data)
    # local_cluster's devices run 1 ONNX Runtime thread each, as chain_runner(num_threads=1) here.
    with deploy_stages(compressed, local_cluster(DEVICES), timeout_s=20) as session:
        on_workers = evaluate(reference, session_runner(session), data)
    assert on_workers.candidate == "workers a -> b -> c"
    assert on_workers.classification.to_dict() == in_process.classification.to_dict()
    assert on_workers.agreement.to_dict() == in_process.agreement.to_dict()
    exact = math.isinf(in_process.agreement["probabilities"].snr_db)
    assert exact == (compression == "zstd")  # lossless: the reference's numbers; int8: not, on both


def test_a_fixed_batch_pads_the_last_batch_and_counts_only_the_real_samples(model, data, reference, stages):
    assert len(data) % 4 == 1  # 397 digits: the last batch of 4 is 1 sample and 3 copies of it
    by_four = evaluate(reference, chain_runner(split_after_relus(model.model_bytes, DEVICES, batch=4),
                                               num_threads=1), data)
    by_one = evaluate(reference, chain_runner(stages, num_threads=1), data)
    assert (by_four.batch_size, by_four.num_padded, by_four.num_samples) == (4, 3, len(data))
    assert by_four.agreement["probabilities"].num_rows == len(data)
    assert by_four.classification.to_dict() == by_one.classification.to_dict()
    assert by_four.agreement["probabilities"].top1_agreement == 1.0


def test_progress_counts_samples_after_every_batch(data, reference):
    seen = []
    result = evaluate(reference, None, data, batch_size=100, progress=lambda done, total: seen.append((done,
                                                                                                       total)))
    assert seen == [(100, 397), (200, 397), (300, 397), (397, 397)]
    assert result.num_padded == 0  # a dynamic batch dimension: the last batch is just shorter


def test_without_a_candidate_the_model_alone_is_scored(model, data, reference):
    result = evaluate(reference, None, data)
    assert result.agreement is None and result.reference_classification is None
    assert result.accuracy_drop is None and result.candidate is None
    assert result.batch_size == 32  # the batch dimension is symbolic: the default
    expected = metrics.accuracy_score(model.y, _onnx_predictions(model.model_bytes, model.x))
    assert result.classification.accuracy == pytest.approx(expected, abs=1e-12)
    assert result.to_dict()["classification"]["accuracy"] == result.classification.accuracy


def test_data_without_labels_is_compared_but_not_scored(model, reference, stages):
    result = evaluate(reference, chain_runner(stages, num_threads=1), Dataset(model.x[:20]))
    assert result.classification is None and result.reference_classification is None
    assert result.agreement["probabilities"].num_rows == 20


def test_the_uplink_is_always_compressed_a_hop_within_one_device_never(model, data, reference):
    same_device = split_after_relus(model.model_bytes, ["a", "a", "a"])
    within = evaluate(reference, chain_runner(with_hop_compression(same_device, "int8"), num_threads=1), data)
    assert math.isinf(within.agreement["probabilities"].snr_db)  # a free hop carries the raw tensor
    uplink = [dataclasses.replace(same_device[0], compression="int8"), *same_device[1:]]
    through = evaluate(reference, chain_runner(uplink, num_threads=1), data)
    assert math.isfinite(through.agreement["probabilities"].snr_db)


def _counting(runner: Runner, calls: list) -> Runner:
    return Runner(lambda feeds: calls.append(1) or runner(feeds), runner.inputs, runner.outputs, runner.name)


@pytest.mark.parametrize(("change", "match"), [
    (lambda d: Dataset(d.x.reshape(-1, 8, 8), d.y), r"shape \[8, 8\] float32, but model input 'x'"),
    (lambda d: Dataset(d.x.astype(np.float64), d.y), "float64, but model input 'x' takes"),
    (lambda d: Dataset(d.x, d.y + 10), "has label 19, but the model's output 'probabilities' has 10 classes"),
    (lambda d: Dataset(d.x, d.y, [str(i) for i in range(12)]), "names 12 classes, but the model's output"),
], ids=["shape", "dtype", "labels out of range", "too many class names"])
def test_data_that_does_not_fit_is_refused_before_anything_runs(data, reference, stages, change, match):
    calls: list = []
    candidate = _counting(chain_runner(stages, num_threads=1), calls)
    with pytest.raises(InputError, match=match) as info:
        evaluate(_counting(reference, calls), candidate, change(data))
    assert calls == [] and "\n" not in str(info.value)


def test_a_batch_size_against_the_models_fixed_batch_is_refused(data, reference, stages):
    with pytest.raises(InputError, match="batch_size 8, but the model takes batches of exactly 1"):
        evaluate(reference, chain_runner(stages, num_threads=1), data, batch_size=8)


def test_a_candidate_of_another_model_is_refused(data, reference, stages):
    other = Runner(lambda feeds: {}, stages[0].inputs, stages[0].outputs, "first stage only")
    with pytest.raises(InputError, match=r"the candidate's outputs .* are not the reference's"):
        evaluate(reference, other, data)
