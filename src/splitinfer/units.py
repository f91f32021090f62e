"""Parse human quantities in files and flags: '20Mbit/s', '5ms', '2GiB'.

A bare number is taken in the base unit of the field (bytes/s, seconds, bytes).
"""

from __future__ import annotations

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
    if value < 0 or value != value:
        raise SplitinferError(f"{what} {text!r} is negative or NaN", f"write it like {example}")
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
