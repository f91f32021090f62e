"""A framework model file converted once: :func:`convert_file` writes the verified ONNX model to a given
path or to the cache (``$SPLITINFER_CACHE_DIR``, else ``$XDG_CACHE_HOME/splitinfer``, else
``~/.cache/splitinfer``; under ``converted/``), named by the model's name and a key of its bytes, the
shapes asked for and the converter's versions. The same file asked for again is read back, its
verification from the ONNX model's metadata: the same bytes every time, so a profile or plan made with
it names the model that later runs."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

import onnx

from splitinfer.convert.conversion import Conversion, check, convert, from_metadata
from splitinfer.convert.formats import EXTRAS, detect_format
from splitinfer.convert.verify import DEFAULT_TOLERANCE
from splitinfer.errors import ModelError
from splitinfer.host import cache_root

CONVERTER_VERSION = 1  # raise when a change here makes other ONNX bytes of the same model
_PACKAGES = {"torch": ("torch", "onnxscript", "onnx"),
             "tf": ("tensorflow-cpu", "tensorflow", "tf2onnx", "onnx")}


def cache_dir() -> Path:
    """Where converted models are kept."""
    return cache_root() / "converted"


def source_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's files (their relative paths and bytes)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _versions(fmt: str) -> dict[str, str]:
    found = {}
    for name in _PACKAGES[EXTRAS[fmt]]:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def cache_key(path: Path, fmt: str, input_shapes: Mapping[str, Sequence[int]] | None, batch: int | None,
              seed: int) -> str:
    doc = {"source": source_digest(path), "format": fmt, "batch": batch, "seed": seed,
           "input_shapes": {k: [int(d) for d in v] for k, v in sorted((input_shapes or {}).items())},
           "versions": _versions(fmt), "converter": CONVERTER_VERSION}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def convert_file(path: str | Path, input_shapes: Mapping[str, Sequence[int]] | None = None,
                 batch: int | None = None, *, output: str | Path | None = None,
                 tolerance: float = DEFAULT_TOLERANCE, seed: int = 0, accept_unverified: bool = False,
                 use_cache: bool = True) -> Conversion:
    """Convert the framework model at ``path`` (:func:`~splitinfer.convert.conversion.convert`) and write
    it to ``output``, or to the cache, unless the cache holds it already. A conversion that does not
    verify is kept in the cache (asked for again, it fails again at once, or is taken with
    ``accept_unverified``) but written to ``output`` only when accepted."""
    path = Path(path)
    fmt = detect_format(path)
    if not path.exists():
        raise ModelError(f"model '{path}' does not exist", "check the path")
    if fmt is None:
        raise ModelError(f"'{path}' is not a framework model splitinfer converts",
                         "give a .pt2, TorchScript .pt, .keras, .h5, SavedModel folder or .tflite")
    target = Path(output) if output is not None else \
        cache_dir() / f"{path.stem or 'model'}-{cache_key(path, fmt, input_shapes, batch, seed)[:16]}.onnx"
    if output is None and use_cache and target.is_file():
        cached = from_metadata(onnx.load(str(target)), tolerance, target)
        if cached is not None:
            return check(cached, accept_unverified)
    conversion = convert(path, input_shapes, batch, tolerance=tolerance, seed=seed, accept_unverified=True)
    conversion.path = target
    if output is not None:
        check(conversion, accept_unverified)
    _write(conversion.proto, target)
    return check(conversion, accept_unverified)


def _write(proto: onnx.ModelProto, target: Path) -> None:
    """Atomically: a reader never sees half a file, and two writers of one key leave one whole file."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
        os.replace(tmp, target)
    except OSError as e:
        raise ModelError(f"cannot write the converted model to {target}: {e.strerror or e}",
                         "choose a writable path (or set SPLITINFER_CACHE_DIR to a writable folder)"
                         ) from None
