"""The gateway's settings: defaults and allowed ranges, checked alike for the Python API and ``serve``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from splitinfer.errors import SplitinferError
from splitinfer.generation.tokenizer import Tokenizer, load_tokenizer
from splitinfer.runtime.wire.client import MAX_RESOURCE_INTERVAL_S, MIN_RESOURCE_INTERVAL_S
from splitinfer.types import TensorSpec

DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_IN_FLIGHT_PER_CLIENT = 8
DEFAULT_BODY_TIMEOUT_S = 30.0

# (lowest, highest) allowed; whole numbers for bytes, counts and ports
MAX_BODY_BYTES_RANGE = (1, 16 * 1024**3)
MAX_IN_FLIGHT_PER_CLIENT_RANGE = (1, 10_000)
BODY_TIMEOUT_S_RANGE = (0.01, 3600.0)
TIMEOUT_S_RANGE = (0.001, 86_400.0)
PORT_RANGE = (1, 65_535)
RESOURCE_INTERVAL_S_RANGE = (MIN_RESOURCE_INTERVAL_S, MAX_RESOURCE_INTERVAL_S)  # or 0: the workers unsampled


class SettingError(SplitinferError, ValueError):
    """A setting outside its allowed range; the message names the argument (or the flag) and the range."""


def check_whole(value: object, name: str, allowed: tuple[int, int], unit: str = "") -> int:
    """``value`` if it is a whole number (not a bool) within ``allowed``, else :class:`SettingError`."""
    low, high = allowed
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        what = f"whole number of {unit}" if unit else "whole number"
        raise SettingError(f"{name} {value!r} is out of range", f"give a {what} from {low} to {high}")
    return value


def check_seconds(value: object, name: str, allowed: tuple[float, float]) -> float:
    """``value`` as a float if it is a finite number of seconds within ``allowed`` (NaN never is)."""
    low, high = allowed
    number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    if not low <= number <= high:  # false for NaN
        raise SettingError(f"{name} {value!r} is out of range",
                           f"give a number of seconds from {low:g} to {high:g}")
    return number


def check_token(token: object, name: str) -> bytes | None:
    """The bearer token as bytes (``None``: no authentication); visible ASCII without spaces."""
    if token is None:
        return None
    if not isinstance(token, str) or not token or not all(33 <= ord(c) <= 126 for c in token):
        raise SettingError(f"{name} is not a usable bearer token",
                           "give a non-empty string of visible ASCII characters without spaces")
    return token.encode("ascii")


def check_tokenizer(tokenizer: object, outputs: Sequence[TensorSpec] | None, name: str) -> Tokenizer | None:
    """A :class:`Tokenizer` (given, or loaded from a ``tokenizer.json`` path) whose ids the model's logits
    (``outputs``, when known) cover; ``None``: answers in token ids only. A bad file is an InputError."""
    if tokenizer is None:
        return None
    if isinstance(tokenizer, str | Path):
        tokenizer = load_tokenizer(tokenizer)
    if not isinstance(tokenizer, Tokenizer):
        raise SettingError(f"{name} is {type(tokenizer).__name__}",
                           "give the path of a tokenizer.json, or a load_tokenizer() result")
    tokenizer.check_fits(outputs)
    return tokenizer
