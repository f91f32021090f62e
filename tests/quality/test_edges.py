"""The edge cases the module docs promise: k above the class count, ties, all-zero outputs,
non-float inputs, scalar outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from splitinfer.quality import AgreementAccumulator, classification_report, compare_outputs

# Row 0: the true class 3 scores lowest; row 1: class 0 ties with 2 for the top.
SCORES = np.array([[0.4, 0.3, 0.2, 0.1], [0.5, 0.0, 0.5, 0.0]])


def test_k_at_or_above_the_class_count_counts_every_row():
    report = classification_report([3, 0], SCORES, top_k=(1, 3, 4, 9))
    assert report.top_k_accuracy == {1: 0.5, 3: 0.5, 4: 1.0, 9: 1.0}
    # The reference's top class 3 is the candidate's last.
    agreement = compare_outputs({"y": np.eye(4)[[3]]}, {"y": SCORES[:1]}, top_k=(1, 3, 4, 9))["y"]
    assert agreement.top_k_agreement == {1: 0.0, 3: 0.0, 4: 1.0, 9: 1.0} and agreement.top1_agreement == 0.0


def test_ties_go_to_the_lower_class_index():
    # Row 1 ties classes 0 and 2: class 0 is the prediction and ranks first, class 2 second.
    assert classification_report([0, 0], SCORES, top_k=(1,)).top_k_accuracy == {1: 1.0}
    assert classification_report([0, 2], SCORES, top_k=(1, 2)).top_k_accuracy == {1: 0.5, 2: 1.0}
    assert classification_report([0, 2], SCORES).confusion[2].tolist() == [1, 0, 0, 0]


def test_all_zero_outputs():
    zeros = np.zeros((2, 3))
    both = compare_outputs({"z": zeros}, {"z": zeros})["z"]
    assert both.cosine == 1.0 and both.snr_db == math.inf and both.top1_agreement == 1.0
    ref_only = compare_outputs({"z": zeros}, {"z": zeros + 1})["z"]
    assert ref_only.cosine == 0.0 and ref_only.snr_db == -math.inf and ref_only.max_abs_diff == 1.0
    cand_only = compare_outputs({"z": zeros + 1}, {"z": zeros})["z"]
    assert cand_only.cosine == 0.0 and cand_only.snr_db == 0.0  # the error is as large as the signal
    opposite = compare_outputs({"z": zeros + 1}, {"z": zeros - 1})["z"]
    assert opposite.cosine == -1.0 and opposite.snr_db == pytest.approx(10 * math.log10(1 / 4))


def test_integer_bool_and_scalar_outputs():
    result = compare_outputs({"ids": np.array([1, 2, 3]), "flag": np.array(True), "count": np.int64(4)},
                             {"ids": np.array([1, 2, 4], dtype=np.int32), "flag": np.array(False),
                              "count": np.int64(4)})
    assert result["ids"].max_abs_diff == 1.0 and result["ids"].snr_db == pytest.approx(10 * math.log10(14))
    assert result["flag"].cosine == 0.0 and result["count"].snr_db == math.inf
    acc = AgreementAccumulator()
    for value in (1.0, 2.0, 3.0):  # a scalar output per batch
        acc.add({"loss": np.float32(value)}, {"loss": np.float32(value + 1)})
    loss = acc.result()["loss"]
    assert loss.num_elements == 3 and loss.mean_abs_diff == 1.0
    assert loss.snr_db == pytest.approx(10 * math.log10(14 / 3))


def test_labels_as_floats_and_k_as_an_int():
    report = classification_report(np.array([0.0, 1.0, 2.0]), np.array([0, 1, 1]), top_k=1)
    assert report.accuracy == pytest.approx(2 / 3) and report.num_classes == 3
    assert compare_outputs({"y": SCORES}, {"y": SCORES}, top_k=2).top_k == (2,)
