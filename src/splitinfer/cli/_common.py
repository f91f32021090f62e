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
