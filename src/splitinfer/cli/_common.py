"""Shared CLI helpers: consoles, debug flag, JSON output, reading a flag's quantity."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console, ConsoleDimensions

from splitinfer.errors import SplitinferError

T = TypeVar("T")

# Output to a file or pipe is not cut to fit: rich would assume 80 columns there and cut table cells
# ("800.0 K…") or drop columns. COLUMNS still sets the width when given.
PIPED_WIDTH = 1000


class _Console(Console):
    """A rich console that is as wide as its terminal, and PIPED_WIDTH wide when not on one."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self.is_terminal or self.is_jupyter or os.environ.get("COLUMNS", "").isdigit():
            return size
        return ConsoleDimensions(PIPED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


DEBUG = False
console = _Console()
err_console = _Console(stderr=True)


def print_json(data: Any) -> None:
    """Machine output: plain JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def check_writable(path: Path | None, flag: str) -> None:
    """Before any work: ``path`` (an output file, None = none) can be written: its folder exists and
    is writable, and the path is not a folder. Else one line naming ``flag``."""
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise SplitinferError(f"{flag} {path} is a folder", f"give a file path for {flag}")
    if not folder.is_dir():
        raise SplitinferError(f"{flag} {path}: folder {folder} does not exist",
                              f"create it first (mkdir -p {folder}) or write elsewhere")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise SplitinferError(f"{flag} {path} is not writable", "write to a folder you may write to")


def check_folder(path: Path, flag: str) -> None:
    """Before any work: ``path`` is a folder, or can be made one (its nearest existing parent is a
    writable folder). Else one line naming ``flag``."""
    if path.exists() and not path.is_dir():
        raise SplitinferError(f"{flag} {path} is a file, not a folder",
                              f"give {flag} a folder (it is made if missing)")
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise SplitinferError(f"{flag} {path}: {existing} is a file, not a folder",
                              f"give {flag} another folder")
    if not os.access(existing, os.W_OK):
        raise SplitinferError(f"{flag} {path}: {existing} is not writable",
                              "write to a folder you may write to")


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


def parse_flag(parse: Callable[[str], T], text: str, flag: str, error: type[SplitinferError]) -> T:
    """``parse(text)`` (a duration, a size, ...), its error reworded as ``error`` naming ``flag``: the
    parsers name no flag, since the Python API calls them too."""
    try:
        return parse(text)
    except SplitinferError as e:
        raise error(f"{flag}: {e.problem}", e.fix) from None
