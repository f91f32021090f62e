"""Which framework a model comes from, told by its file name (or folder, or Python type) alone: no
framework is imported to tell."""

from __future__ import annotations

from pathlib import Path

# format -> what it is, in words
FORMATS = {
    "torch": "PyTorch module",
    "torch.export": "PyTorch exported program",
    "torchscript": "TorchScript",
    "keras": "Keras",
    "savedmodel": "TensorFlow SavedModel",
    "tflite": "TFLite",
}
SUFFIXES = {
    ".pt2": "torch.export",
    ".pt": "torchscript",
    ".pth": "torchscript",
    ".ts": "torchscript",
    ".keras": "keras",
    ".h5": "keras",
    ".hdf5": "keras",
    ".tflite": "tflite",
}
# the extra that installs each format's converter
EXTRAS = {"torch": "torch", "torch.export": "torch", "torchscript": "torch", "keras": "tf",
          "savedmodel": "tf",
          "tflite": "tf"}


def detect_format(source: object) -> str | None:
    """The format of a framework model (a key of :data:`FORMATS`), or None for anything else (an
    ``.onnx`` file, ONNX bytes or proto, a path that does not exist)."""
    if isinstance(source, str | Path):
        path = Path(source)
        if path.is_dir():
            saved = any((path / n).is_file() for n in ("saved_model.pb", "saved_model.pbtxt"))
            return "savedmodel" if saved else None
        return SUFFIXES.get(path.suffix.lower())
    from splitinfer.convert import _tf, _torch

    if _torch.is_module(source):
        import torch

        return "torch.export" if isinstance(source, torch.export.ExportedProgram) else (
            "torchscript" if isinstance(source, torch.jit.ScriptModule) else "torch")
    if _tf.is_keras(source):
        return "keras"
    return None


def is_framework_model(source: object) -> bool:
    """Whether ``source`` is a model :func:`splitinfer.convert.convert` takes (not ONNX)."""
    return detect_format(source) is not None
