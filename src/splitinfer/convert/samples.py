"""Tiny framework models with seeded weights, written in every format :mod:`splitinfer.convert` takes:
what its tests convert and run, and what ``splitinfer convert --report`` tabulates. A few layers
each (convolutions, normalisation, pooling, a classifier), so a conversion takes seconds."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitinfer.convert._common import quiet

IMAGE_TORCH = (1, 3, 16, 16)  # NCHW
IMAGE_TF = (1, 16, 16, 3)  # NHWC
NUM_CLASSES = 10


@dataclass(frozen=True)
class Sample:
    """A model to convert: ``source`` a path or a Python object; ``input_shapes`` what to convert at
    (None: what the model declares); ``framework`` the extra it needs."""

    name: str
    framework: str
    source: Any
    input_shapes: dict[str, tuple[int, ...]] | None = None


def available(framework: str) -> bool:
    """Whether the packages of a framework's conversions are installed (``torch`` or ``tf``)."""
    needed = ("torch", "onnxscript") if framework == "torch" else ("tensorflow", "tf2onnx")
    return all(importlib.util.find_spec(name) is not None for name in needed)


def torch_cnn(seed: int = 0) -> Any:
    """A small CNN as a ``torch.nn.Module`` in eval mode: ``image`` [1,3,16,16] -> 10 logits."""
    import torch

    torch.manual_seed(seed)
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, NUM_CLASSES))
    with torch.no_grad():  # running statistics that are not the identity
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 1.5)
    return _Named(model).eval()


def _Named(body: Any) -> Any:
    import torch

    class ImageClassifier(torch.nn.Module):
        """``forward(image)``: the input is named ``image`` in the converted model."""

        def __init__(self, body: torch.nn.Module) -> None:
            super().__init__()
            self.body = body

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.body(image)

    return ImageClassifier(body)


def torch_two_heads(seed: int = 0) -> Any:
    """Two inputs (``image``, ``scale``) and two named outputs (``logits``, ``features``)."""
    import torch

    torch.manual_seed(seed)

    class TwoHeads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.head = torch.nn.Linear(8, NUM_CLASSES)

        def forward(self, image: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
            features = torch.relu(self.conv(image)).mean(dim=(2, 3)) * scale
            return {"logits": self.head(features), "features": features}

    return TwoHeads().eval()


def write_torch(folder: Path) -> list[Sample]:
    import torch

    model = torch_cnn()
    image = torch.randn(*IMAGE_TORCH)
    torch.export.save(torch.export.export(model, (image,)), str(folder / "torch_cnn.pt2"))
    with quiet():
        torch.jit.save(torch.jit.trace(model, image), str(folder / "torch_cnn.pt"))
    shapes = {"image": IMAGE_TORCH}
    return [Sample("torch_cnn (nn.Module)", "torch", model, shapes),
            Sample("torch_cnn.pt2", "torch", folder / "torch_cnn.pt2"),
            Sample("torch_cnn.pt (TorchScript)", "torch", folder / "torch_cnn.pt", shapes),
            Sample("torch_two_heads (nn.Module)", "torch", torch_two_heads(),
                   {"image": IMAGE_TORCH, "scale": (1, 1)})]


def keras_cnn(seed: int = 0) -> Any:
    """A small CNN as a Keras model: ``image`` [?,16,16,3] -> 10 logits."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    image = keras.Input(IMAGE_TF[1:], name="image")
    x = layers.Conv2D(8, 3, padding="same")(image)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(image, layers.Dense(NUM_CLASSES)(x), name="keras_cnn")
    norm = model.layers[2]
    norm.moving_mean.assign(keras.random.uniform((8,), -0.5, 0.5, seed=seed))
    norm.moving_variance.assign(keras.random.uniform((8,), 0.5, 1.5, seed=seed + 1))
    return model


def saved_model(folder: Path, seed: int = 0) -> Path:
    """A TensorFlow module (no Keras) with a ``serving_default`` signature: ``features`` [?,12] ->
    ``logits`` and ``norm``."""
    import tensorflow as tf

    class Scorer(tf.Module):
        def __init__(self) -> None:
            generator = tf.random.Generator.from_seed(seed)
            self.w1 = tf.Variable(generator.normal((12, 16)))
            self.w2 = tf.Variable(generator.normal((16, NUM_CLASSES)))

        @tf.function(input_signature=[tf.TensorSpec((None, 12), tf.float32, name="features")])
        def __call__(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
            hidden = tf.nn.relu(features @ self.w1)
            return {"logits": hidden @ self.w2, "norm": tf.norm(hidden, axis=1)}

    module = Scorer()
    path = folder / "tf_scorer"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.__call__})
    return path


def write_tf(folder: Path) -> list[Sample]:
    import tensorflow as tf

    model = keras_cnn()
    with quiet():
        model.save(folder / "keras_cnn.keras")
        model.save(folder / "keras_cnn.h5")
        model.export(str(folder / "keras_cnn_savedmodel"))
        (folder / "keras_cnn.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        dynamic = tf.lite.TFLiteConverter.from_keras_model(model)
        dynamic.optimizations = [tf.lite.Optimize.DEFAULT]  # int8 weights, float activations
        (folder / "keras_cnn_int8_weights.tflite").write_bytes(dynamic.convert())
        scorer = saved_model(folder)
    return [Sample("keras_cnn.keras", "tf", folder / "keras_cnn.keras"),
            Sample("keras_cnn.h5", "tf", folder / "keras_cnn.h5"),
            Sample("keras_cnn_savedmodel/ (Keras export)", "tf", folder / "keras_cnn_savedmodel"),
            Sample("tf_scorer/ (tf.Module SavedModel)", "tf", scorer),
            Sample("keras_cnn.tflite", "tf", folder / "keras_cnn.tflite"),
            Sample("keras_cnn_int8_weights.tflite (dynamic range)", "tf",
                   folder / "keras_cnn_int8_weights.tflite")]


WRITERS: dict[str, Callable[[Path], list[Sample]]] = {"torch": write_torch, "tf": write_tf}


def write_samples(folder: str | Path,
                  frameworks: tuple[str, ...] = ("torch", "tf")) -> dict[str, list[Sample]]:
    """Every sample of the frameworks installed, written under ``folder``: framework -> samples (an
    empty list for a framework not installed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with quiet():
        return {name: WRITERS[name](folder) if available(name) else [] for name in frameworks}
