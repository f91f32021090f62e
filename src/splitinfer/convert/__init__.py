"""Models from other frameworks as ONNX, verified before use.

PyTorch (a ``torch.nn.Module``, an exported program ``.pt2``, TorchScript ``.pt``) through
``torch.onnx``; Keras (``.keras``, ``.h5``), a TensorFlow SavedModel (a folder) and TFLite (``.tflite``)
through tf2onnx. Each conversion is checked against the framework's own outputs on seeded inputs
(:mod:`splitinfer.convert.verify`); one that does not verify is an error unless accepted.

    from splitinfer.convert import convert, convert_file
    conversion = convert(module, input_shapes={"image": (1, 3, 224, 224)})
    print(conversion.line())             # converted ...: max abs difference 2.4e-07 ..., verified
    model = load_model(conversion.proto)
    convert_file("net.pt2", output="net.onnx")

The frameworks are imported inside the converters, when one runs: importing this package (and
splitinfer) loads neither torch nor TensorFlow. Extras: ``splitinfer[torch]``, ``splitinfer[tf]``.
"""

from __future__ import annotations

from splitinfer.convert.cache import cache_dir, convert_file
from splitinfer.convert.conversion import Conversion, UnverifiedConversion, convert
from splitinfer.convert.formats import FORMATS, detect_format, is_framework_model
from splitinfer.convert.verify import DEFAULT_TOLERANCE, Verification

__all__ = [
    "DEFAULT_TOLERANCE",
    "FORMATS",
    "Conversion",
    "UnverifiedConversion",
    "Verification",
    "cache_dir",
    "convert",
    "convert_file",
    "detect_format",
    "is_framework_model",
]
