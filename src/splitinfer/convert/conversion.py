"""A framework model to ONNX, verified: :func:`convert` exports it with its framework's converter, loads
the result as splitinfer loads any model, and runs both on the same seeded inputs
(:mod:`splitinfer.convert.verify`). A conversion that does not verify raises
:class:`UnverifiedConversion` unless ``accept_unverified``."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from splitinfer.convert import _tf, _torch
from splitinfer.convert._common import Exported, quiet
from splitinfer.convert.formats import FORMATS, detect_format
from splitinfer.convert.verify import DEFAULT_TOLERANCE, Verification, verify
from splitinfer.errors import ModelError, VerifyError
from splitinfer.graph import load_model
from splitinfer.graph.inference import create_inference_session
from splitinfer.graph.shapes import fix_input_shapes

META = "splitinfer.conversion"  # the metadata key of a converted model: where it came from, how close


@dataclass
class Conversion:
    """A framework model as ONNX (``proto``), how it was made and how close it is to the original."""

    proto: onnx.ModelProto
    format: str
    converter: str
    source: str
    input_shapes: dict[str, tuple[int, ...]]
    verification: Verification
    tolerance: float = DEFAULT_TOLERANCE
    seconds: float = 0.0
    path: Path | None = None
    cached: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.verification.verified(self.tolerance)

    def line(self) -> str:
        """The one line a conversion prints: what, with what, where, and how close."""
        where = f" -> {self.path}" if self.path is not None else ""
        how = f"{self.converter}, cached" if self.cached else f"{self.converter}, {self.seconds:.1f} s"
        return (f"converted {self.source} ({FORMATS[self.format]}; {how}){where}: "
                f"{self.verification.describe(self.tolerance)}")

    def metadata(self) -> str:
        """What the converted model's metadata keeps of the conversion (JSON)."""
        v = self.verification
        return json.dumps({"format": self.format, "converter": self.converter, "source": self.source,
                           "input_shapes": {k: list(s) for k, s in self.input_shapes.items()},
                           "max_abs_diff": v.max_abs_diff, "scale": v.scale, "num_outputs": v.num_outputs,
                           "num_draws": v.num_draws, "problem": v.problem}, sort_keys=True)


def from_metadata(proto: onnx.ModelProto, tolerance: float, path: Path) -> Conversion | None:
    """The conversion a converted model's metadata records (None if it records none)."""
    text = next((p.value for p in proto.metadata_props if p.key == META), None)
    if text is None:
        return None
    try:
        doc = json.loads(text)
        verification = Verification(float(doc["max_abs_diff"]), float(doc["scale"]), int(doc["num_outputs"]),
                                    int(doc["num_draws"]), str(doc["problem"]))
        return Conversion(proto, str(doc["format"]), str(doc["converter"]), str(doc["source"]),
                          {k: tuple(v) for k, v in doc["input_shapes"].items()}, verification, tolerance,
                          path=path, cached=True)
    except (ValueError, KeyError, TypeError):
        return None


class UnverifiedConversion(VerifyError):
    """A converted model's outputs differ from its framework's by more than the tolerance."""

    def __init__(self, conversion: Conversion) -> None:
        self.conversion = conversion
        v = conversion.verification
        problem = v.problem or (f"max abs difference {v.max_abs_diff:.1e} > tolerance "
                                f"{v.tolerance(conversion.tolerance):.1e}")
        super().__init__(f"{conversion.source} converted with {conversion.converter} does not give the "
                         f"{FORMATS[conversion.format]} outputs: {problem}",
                         "check the model's ops against the converter; raise tolerance=, or pass "
                         "accept_unverified=True to use it anyway")


def check(conversion: Conversion, accept_unverified: bool) -> Conversion:
    if not conversion.verified and not accept_unverified:
        raise UnverifiedConversion(conversion)
    return conversion


def convert(source: object, input_shapes: Mapping[str, Sequence[int]] | None = None,
            batch: int | None = None, *, tolerance: float = DEFAULT_TOLERANCE, seed: int = 0,
            accept_unverified: bool = False, label: str | None = None) -> Conversion:
    """``source`` (a ``torch.nn.Module``, an exported program, a Keras model, or the path of a ``.pt2``,
    TorchScript ``.pt``, ``.keras`` / ``.h5``, SavedModel folder or ``.tflite``) as ONNX at
    ``input_shapes`` (name -> dims; those the model declares where not given, a varying batch dim
    ``batch`` or 1), verified against the framework on seeded inputs. ModelError when it cannot be
    converted, ShapeError when a shape is needed, :class:`UnverifiedConversion` when it does not verify
    (unless ``accept_unverified``)."""
    if not tolerance > 0:
        raise ModelError(f"tolerance={tolerance} is not above 0", "give a tolerance such as 1e-4")
    fmt = detect_format(source)
    if fmt is None:
        raise ModelError(f"{source if isinstance(source, str | Path) else type(source).__name__} is not a "
                         "model of a framework splitinfer converts",
                         "give a torch.nn.Module, .pt2, TorchScript .pt, .keras, .h5, SavedModel folder or "
                         ".tflite")
    what = label or (str(source) if isinstance(source, str | Path) else f"the {FORMATS[fmt]}")
    start = time.perf_counter()
    with quiet():
        exported = _export(source, fmt, input_shapes, batch, seed, what)
        proto = exported.proto
        fix_input_shapes(proto.graph, exported.input_shapes, None)
        proto.producer_name = "splitinfer.convert"
        data = proto.SerializeToString()
        model = load_model(data, input_shapes=exported.input_shapes)
        session = create_inference_session(data, optimize=False)
        names = [o.name for o in proto.graph.output]

        def run_onnx(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            return list(session.run(names, dict(feeds)))

        verification = verify(run_onnx, exported.run, lambda s: model.make_feeds(seed=seed + s), names)
    conversion = Conversion(proto, fmt, exported.converter, what, exported.input_shapes, verification,
                            tolerance, time.perf_counter() - start, notes=exported.notes)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META, conversion.metadata()
    return check(conversion, accept_unverified)


def _export(source: object, fmt: str, input_shapes: Mapping[str, Sequence[int]] | None, batch: int | None,
            seed: int, what: str) -> Exported:
    if fmt in ("torch", "torch.export", "torchscript"):
        return _torch.convert(source, fmt, input_shapes, batch, seed, what)
    if fmt == "keras":
        return _tf.convert_keras(source, input_shapes, batch, what)
    if fmt == "savedmodel":
        return _tf.convert_saved_model(Path(str(source)), input_shapes, batch, what)
    return _tf.convert_tflite(Path(str(source)), input_shapes, batch, what)
