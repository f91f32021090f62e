"""Shared CLI helpers: consoles, debug flag, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

DEBUG = False
console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    """Machine output: plain JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def format_bytes(num_bytes: float) -> str:
    """Bytes in binary units: 802816 -> '784.0 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(num_bytes) < 1024 or unit == "GiB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")


def format_count(count: float) -> str:
    """A count with a K/M/G suffix: 25557032 -> '25.6M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(count) >= scale:
            return f"{count / scale:.1f}{unit}"
    return f"{count:.0f}"
