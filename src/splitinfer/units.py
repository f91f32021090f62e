"""Parse human quantities in files and flags: '20Mbit/s', '5ms', '2GiB'.

A bare number is taken in the base unit of the field (bytes/s, seconds, bytes).
"""

from __future__ import annotations

import math
import numbers
import re

from splitinfer.errors import SplitinferError

_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

_RATE = {  # bytes per second
    "b/s": 1 / 8, "bit/s": 1 / 8, "bps": 1 / 8,
    "kbit/s": 1e3 / 8, "kbps": 1e3 / 8,
    "mbit/s": 1e6 / 8, "mbps": 1e6 / 8,
    "gbit/s": 1e9 / 8, "gbps": 1e9 / 8,
    "B/s": 1.0, "kB/s": 1e3, "KB/s": 1e3, "MB/s": 1e6, "GB/s": 1e9,
    "KiB/s": 1024.0, "MiB/s": 1024.0**2, "GiB/s": 1024.0**3,
}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_SIZE = {
    "B": 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
    "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4,
}


def _parse(text: str | float | int, table: dict[str, float], what: str, example: str) -> float:
    if isinstance(text, bool):
        raise SplitinferError(f"{what} {text!r} is not a quantity", f"write it like {example}")
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = re.fullmatch(_NUMBER + r"\s*([A-Za-zµ/]*)", text.strip())
        if not m:
            raise SplitinferError(f"cannot read {what} {text!r}", f"write it like {example}")
        number, unit = float(m.group(1)), m.group(2)
        if not unit:
            value = number
        else:
            # Bit rates are case-insensitive ('Mbps', 'mbit/s'); byte units are not.
            factor = table.get(unit, table.get(unit.lower()) if "bit" in unit.lower()
                               or unit.lower().endswith("bps") else None)
            if factor is None:
                raise SplitinferError(
                    f"unknown unit {unit!r} in {what} {text!r}",
                    f"use one of {', '.join(sorted(table))}, e.g. {example}",
                )
            value = number * factor
    if value < 0 or not math.isfinite(value):
        raise SplitinferError(f"{what} {text!r} is negative, infinite or NaN",
                              f"write a finite, non-negative value like {example}")
    return value


def parse_rate_bps(text: str | float | int) -> float:
    """Bandwidth in bytes per second ('20Mbit/s', '2.5MB/s', or a number of bytes/s)."""
    return _parse(text, _RATE, "bandwidth", "'20Mbit/s' or '2.5MB/s'")


def parse_time_s(text: str | float | int) -> float:
    """Duration in seconds ('5ms', '0.2s', or a number of seconds)."""
    return _parse(text, _TIME, "duration", "'5ms' or '0.005'")


def parse_size_bytes(text: str | float | int) -> int:
    """Size in bytes ('2GiB', '512MB', or a number of bytes)."""
    return int(_parse(text, _SIZE, "size", "'2GiB' or '512MB'"))


def _show(number: float) -> str:
    return str(int(number)) if float(number).is_integer() and abs(number) < 1e18 else f"{number:g}"


def allowed_range(low: float = -math.inf, high: float = math.inf, *, low_open: bool = False,
                  whole: bool = False) -> str:
    """Words for a range of numbers: 'a finite number >= 1', 'a whole number from 0 to 64'."""
    kind = "a whole number" if whole else "a finite number"
    above = f"> {_show(low)}" if low_open else f">= {_show(low)}"
    if math.isinf(high):
        return kind if math.isinf(low) else f"{kind} {above}"
    if math.isinf(low):
        return f"{kind} <= {_show(high)}"
    if low_open:
        return f"{kind} {above} and <= {_show(high)}"
    return f"{kind} from {_show(low)} to {_show(high)}"


def check_number(value: object, what: str, *, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, whole: bool = False, error: type[SplitinferError] = SplitinferError,
                 fix: str = "") -> float:
    """``value`` when it is a finite number in [low, high] (``low_open``: above ``low``; ``whole``: an
    integer), else ``error`` with one line naming ``what`` and the value, then the allowed range
    (and ``fix``).

    NaN and infinities are never in range; neither are booleans.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        number = float(value)  # type: ignore[arg-type]
        ok = (number > low if low_open else number >= low) and number <= high and \
            (not whole or number.is_integer())
    if not ok:
        allowed = allowed_range(low, high, low_open=low_open, whole=whole)
        raise error(f"{what} is {value!r}", f"use {allowed}" + (f"; {fix}" if fix else ""))
    return value  # type: ignore[return-value]


_HOST_PORT = re.compile(r"(?:([a-z]+)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9._-]*):([0-9]{1,5})")


def check_address(text: object, what: str, *, words: tuple[str, ...] = (),
                  schemes: tuple[str, ...] = ("tcp",), bare: bool = False,
                  error: type[SplitinferError] = SplitinferError) -> str:
    """``text`` when it is SCHEME://HOST:PORT (a scheme of ``schemes``; ``bare``: HOST:PORT too) with a
    port from 1 to 65535, ``ipc://PATH`` when ``schemes`` has ``ipc``, or one of ``words``; else
    ``error`` with one line naming ``what`` and the forms allowed."""
    ok = isinstance(text, str) and text in words
    if isinstance(text, str) and not ok:
        m = _HOST_PORT.fullmatch(text)
        ok = (m is not None and (m.group(1) in schemes or (m.group(1) is None and bare))
              and 1 <= int(m.group(3)) <= 65535) or ("ipc" in schemes and len(text) > 6
                                                     and text.startswith("ipc://"))
    if not ok:
        forms = [f"{s}://HOST:PORT" for s in schemes if s != "ipc"] + (["HOST:PORT"] if bare else [])
        forms += ["ipc://PATH"] if "ipc" in schemes else []
        forms += [repr(w) for w in words]
        raise error(f"{what} {text!r} is not an address",
                    f"use {' or '.join(forms)}, with a port from 1 to 65535")
    return text  # type: ignore[return-value]
