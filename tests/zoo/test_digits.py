"""The digits classifier (:mod:`splitinfer.zoo.digits`): one recipe for the tests and the benchmarks,
the same model every time, the digits split 1400/397 as scikit-learn orders them; importing it
needs no scikit-learn, and without scikit-learn or skl2onnx it says what to install."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from splitinfer.errors import ModelError
from splitinfer.zoo import digits as zoo_digits

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_importing_it_loads_no_scikit_learn():
    code = "import sys, splitinfer.zoo.digits; print(sorted({'sklearn', 'skl2onnx'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("missing", [("skl2onnx",), ("sklearn", "skl2onnx")])
def test_without_the_packages_the_error_says_what_to_install(monkeypatch, missing):
    found = importlib.util.find_spec
    monkeypatch.setattr(zoo_digits, "find_spec", lambda name: None if name in missing else found(name))
    with pytest.raises(ModelError) as caught:
        zoo_digits.digits()
    named = "scikit-learn, skl2onnx are" if len(missing) == 2 else "skl2onnx is"
    assert f"{named} not installed" in caught.value.problem
    assert "splitinfer[digits]" in caught.value.fix and "skl2onnx" in caught.value.fix


def test_the_same_model_and_held_out_digits_every_time():
    pytest.importorskip("skl2onnx")
    from sklearn.datasets import load_digits

    first, second = zoo_digits.digits(), zoo_digits.digits()
    assert first.model_bytes == second.model_bytes
    x, y = load_digits(return_X_y=True)
    assert zoo_digits.NUM_TRAIN == 1400 and len(first.x) == len(x) - 1400 == 397
    np.testing.assert_array_equal(first.x, (x[1400:] / 16.0).astype(np.float32))
    np.testing.assert_array_equal(first.y, y[1400:])
    assert first.x.dtype == np.float32 and first.y.dtype == np.int64


def test_tests_and_benchmarks_take_the_one_recipe(monkeypatch):
    pytest.importorskip("skl2onnx")
    from helpers import digits as helper

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.delitem(sys.modules, "_digits", raising=False)
    import _digits as bench

    assert bench.digits is zoo_digits.digits and bench.Digits is zoo_digits.Digits
    assert helper.Digits is zoo_digits.Digits and helper.NUM_TRAIN == bench.NUM_TRAIN == zoo_digits.NUM_TRAIN
    assert helper.digits() is helper.digits()  # trained once per test process
    assert helper.digits().model_bytes == bench.digits().model_bytes
