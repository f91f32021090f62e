"""Compressions by name: from settings (`get_compression`), from their text form in a flag or
plan.json (`parse_compression`), and from a peer's message (`decompress`)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from splitinfer.compression._base import DEFAULT_MAX_BYTES, Compressed, Compression, fault
from splitinfer.compression._lossless import LZ4_LEVELS, ZSTD_LEVELS, Lz4, NoCompression, Zstd
from splitinfer.compression._lossy import Fp16, Int8
from splitinfer.errors import PlanError

_CLASSES: dict[str, type[Compression]] = {
    cls.name: cls for cls in (NoCompression, Fp16, Int8, Lz4, Zstd)}
COMPRESSIONS: tuple[str, ...] = tuple(_CLASSES)
# The settings each takes (besides int8's per_channel flag, which only says whether axis applies).
_SETTINGS: dict[str, tuple[str, ...]] = {"none": (), "fp16": (), "int8": ("per_channel", "axis"),
                                         "lz4": ("level",), "zstd": ("level",)}
_LEVELS = {"lz4": LZ4_LEVELS, "zstd": ZSTD_LEVELS}
_DEFAULT_CHANNEL_AXIS = 1  # NCHW
_FIX = "write NAME or NAME:SETTING=VALUE:..., e.g. fp16, int8:per_channel:axis=1, zstd:level=3"


def get_compression(name: str, **settings: Any) -> Compression:
    """The compression ``name`` (one of :data:`COMPRESSIONS`) with its settings: ``int8``
    (``per_channel: bool``, ``axis: int``, 1 by default when per channel), ``lz4`` (``level``
    0-16), ``zstd`` (``level`` -7 to 22). A :class:`PlanError` for an unknown name or setting."""
    cls = _CLASSES.get(name)
    if cls is None:
        raise PlanError(f"unknown compression {str(name)[:40]!r}", f"use one of {', '.join(COMPRESSIONS)}")
    unknown = sorted(set(settings) - set(_SETTINGS[name]))
    if unknown:
        known = ", ".join(_SETTINGS[name]) or "none"
        raise PlanError(f"compression {name} has no setting {', '.join(unknown)}", f"its settings: {known}")
    if name == "int8":
        return Int8(axis=_int8_axis(settings))
    if "level" in settings:
        low, high = _LEVELS[name]
        level = settings["level"]
        if type(level) is not int or not low <= level <= high:
            raise PlanError(f"compression {name} has level {level!r}", f"use an integer from {low} to {high}")
        return cls(level=level)
    return cls()


def _int8_axis(settings: dict[str, Any]) -> int | None:
    axis = settings.get("axis")
    per_channel = settings.get("per_channel", axis is not None)
    if type(per_channel) is not bool:
        raise PlanError(f"int8's per_channel is {per_channel!r}", "use true or false")
    if not per_channel:
        if axis is not None:
            raise PlanError("int8 per tensor has no axis", "write int8:per_channel:axis=N, or int8")
        return None
    axis = _DEFAULT_CHANNEL_AXIS if axis is None else axis
    if type(axis) is not int:
        raise PlanError(f"int8's axis is {axis!r}", "use an integer (1: the channels of NCHW)")
    return axis


def parse_compression(text: str) -> Compression:
    """A compression from its text form: ``NAME[:SETTING[=VALUE]]...``, e.g. ``fp16``,
    ``int8:per_channel:axis=1``, ``zstd:level=3``; a bare setting means true. ``str()`` of a
    compression is this form again."""
    if not isinstance(text, str) or not text.strip():
        raise PlanError(f"compression {text!r} is empty", _FIX)
    name, *parts = (part.strip() for part in text.split(":"))
    settings: dict[str, Any] = {}
    for part in parts:
        key, has_value, value = part.partition("=")
        key = key.strip()
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", key) or key in settings:
            raise PlanError(f"compression {text!r} has setting {part!r}", _FIX)
        settings[key] = _value(value.strip()) if has_value else True
    if name not in _CLASSES:
        raise PlanError(f"unknown compression {name[:40]!r} in {text[:80]!r}",
                        f"use one of {', '.join(COMPRESSIONS)}")
    return get_compression(name, **settings)


def _value(text: str) -> Any:
    if re.fullmatch(r"[+-]?\d{1,6}", text):
        return int(text)
    return {"true": True, "false": False}.get(text.lower(), text)


def decompress(c: Compressed, *, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """The tensor a peer sent, by its compression's name; at most ``max_bytes`` bytes of tensor, and a
    :class:`TransportError` (code ``malformed``) for anything wrong in it. Lossless compressions return
    a read-only view over the payload or the decompressed bytes."""
    if not isinstance(c, Compressed):
        raise fault(f"expected a Compressed, got {type(c).__name__}")
    cls = _CLASSES.get(c.name) if type(c.name) is str else None
    if cls is None:
        raise fault(f"unknown compression {str(c.name)[:40]!r}", f"send one of {', '.join(COMPRESSIONS)}")
    # The settings are the sender's business: what the receiver needs rides in the params.
    return _DECODERS[c.name].decompress(c, max_bytes=max_bytes)


_DECODERS: dict[str, Compression] = {name: cls() for name, cls in _CLASSES.items()}
