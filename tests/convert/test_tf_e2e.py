"""Keras (``.keras``), a TensorFlow SavedModel (a folder) and TFLite (``.tflite``) through the whole
loop (issue 19, item 2): each given to every command as it is, converted by tf2onnx and verified; run
on two local workers gives the framework's own outputs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.cli import run_cli
from helpers.convert import cli_loop, needs_tf

from splitinfer.convert.samples import IMAGE_TF, keras_cnn

pytestmark = [needs_tf, pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """The sample CNN as .keras, as a SavedModel (keras' export) and as .tflite; and the model."""
    import tensorflow as tf

    from splitinfer.convert._common import quiet

    folder = tmp_path_factory.mktemp("keras")
    model = keras_cnn()
    with quiet():
        model.save(folder / "cnn.keras")
        model.export(str(folder / "cnn_savedmodel"))
        (folder / "cnn.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return folder, model


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(IMAGE_TF).astype(np.float32)


def test_a_keras_model_runs_split_on_two_workers(tmp_path, capsys, convert_cache, keras_files):
    folder, model = keras_files
    want = cli_loop(capsys, tmp_path, folder / "cnn.keras", [], _image(1),
                    lambda x: model(x, training=False).numpy())
    # --model names the Keras file itself: converted again at the profile's shapes, the same model
    code, _, err = run_cli(capsys, "run", tmp_path / "plan.json", "--model", folder / "cnn.keras", "--input",
                           tmp_path / "x.npy", "-o", tmp_path / "again.npy")
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), want)


def test_a_saved_model_runs_split_on_two_workers(tmp_path, capsys, convert_cache, keras_files):
    import tensorflow as tf

    folder, _ = keras_files
    serve = tf.saved_model.load(str(folder / "cnn_savedmodel")).signatures["serving_default"]
    cli_loop(capsys, tmp_path, folder / "cnn_savedmodel", ["--batch", "1"], _image(2),
             lambda x: serve(image=tf.constant(x))["output_0"].numpy())


def test_a_tflite_model_runs_split_on_two_workers(tmp_path, capsys, convert_cache, keras_files):
    import tensorflow as tf

    folder, _ = keras_files
    interpreter = tf.lite.Interpreter(model_path=str(folder / "cnn.tflite"))
    runner = interpreter.get_signature_runner("serving_default")
    cli_loop(capsys, tmp_path, folder / "cnn.tflite", [], _image(3), lambda x: runner(image=x)["output_0"])
