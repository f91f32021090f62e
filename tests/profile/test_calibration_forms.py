"""``calibration`` of prepare_model / profile_model / profile_cluster as a data set: its first samples
make one batch of the model's single input, cycled when there are fewer, the very batch
``splitinfer profile --calibration DATA`` profiles on; any other form is an InputError that names
``calibration`` and lists the forms it takes."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import graph_models

from splitinfer.cli._inputs import dataset_feeds
from splitinfer.data import Dataset
from splitinfer.errors import InputError
from splitinfer.graph import load_model
from splitinfer.profile.device import profile_model
from splitinfer.profile.profiler import ProfileSettings, load_calibration, prepare_model

SHAPES = {"x": (4, 3, 16, 16)}  # batch 4 of the dynamic model


def _samples(n: int) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((n, 3, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return load_model(graph_models.dynamic(), input_shapes=SHAPES)


@pytest.mark.parametrize("num_samples", [3, 4, 9])
def test_a_data_set_makes_one_batch_of_its_first_samples(model, num_samples):
    data = Dataset(_samples(num_samples), source="samples")
    (x,) = load_calibration(model, data).values()
    expected = data.x[np.arange(4) % num_samples]  # 3 samples: 0, 1, 2, 0
    np.testing.assert_array_equal(x, expected)
    assert x.flags.c_contiguous
    np.testing.assert_array_equal(x, dataset_feeds(data, model.inputs[0], 1)[0]["x"])  # as the CLI makes it


def test_prepare_and_profile_take_a_data_set(model):
    data = Dataset(_samples(5))
    prepared = prepare_model(graph_models.dynamic(), calibration=data, input_shapes=SHAPES, max_blocks=2)
    np.testing.assert_array_equal(prepared.block_feeds[0]["x"], data.x[:4])
    fast = ProfileSettings(budget_s=0.1, num_warmup=1, min_runs=2, max_runs=5)
    profile = profile_model(graph_models.dynamic(), calibration=data, input_shapes=SHAPES, max_blocks=2,
                            num_threads=1, settings=fast)
    assert all(b is not None for b in profile.devices["local"].blocks)


def test_a_data_set_that_does_not_fit_names_calibration(model):
    with pytest.raises(InputError, match=r"^calibration: data small has samples of shape \[3, 8, 8\]"):
        load_calibration(model, Dataset(_samples(2)[:, :, :8, :8], source="small"))
    with pytest.raises(InputError, match=r"^calibration: .* float64"):
        load_calibration(model, Dataset(_samples(2).astype(np.float64)))


def test_a_data_set_cannot_feed_a_model_of_two_inputs():
    two = load_model(graph_models.two_input())
    with pytest.raises(InputError, match=r"calibration is a data set .* model has 2 inputs \(ids, mask\)"):
        load_calibration(two, Dataset(np.zeros((1, 6), np.int64)))


@pytest.mark.parametrize("given", [[{"x": _samples(4)}], 3, b"not a path", (_samples(4),)],
                         ids=["list-of-feeds", "int", "bytes", "tuple"])
def test_another_form_is_one_error_listing_the_forms(model, given):
    with pytest.raises(InputError) as caught:
        load_calibration(model, given)
    problem = caught.value.problem
    assert problem.startswith(f"calibration is a {type(given).__name__}; it takes None")
    for form in (".npz", "an array", "dict of arrays by input name", "splitinfer.data.Dataset"):
        assert form in problem
