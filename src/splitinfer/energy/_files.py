"""Reading a power log within bounds: its size checked before a byte is read, each line's length while
reading, each number through ``check_number``; every error names the file and the line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from splitinfer.errors import ProfileError
from splitinfer.units import check_number

MAX_LOG_BYTES = 512 * 1024 * 1024  # a day at 1 kHz of the widest format fits many times over
MAX_LINE_BYTES = 64 * 1024


def log_lines(path: str | Path, what: str, *, max_bytes: int = MAX_LOG_BYTES) -> Iterator[tuple[int, str]]:
    """(line number from 1, text without its line end) of each line of ``path``, a ``what`` log.

    Refuses a file over ``max_bytes`` (before reading it) or a line over 64 KiB, and text that is
    not UTF-8 (a binary file given by mistake), with a ProfileError naming the file and line.
    """
    path = Path(path)
    check_number(max_bytes, "max_bytes", low=1, whole=True, error=ProfileError)
    try:
        size = path.stat().st_size
        handle = path.open("rb")
    except OSError as e:
        raise ProfileError(f"cannot read {what} {path}: {e.strerror or e}",
                           "check the path and its permissions") from None
    if size > max_bytes:
        handle.close()
        raise ProfileError(f"{what} {path} has {size} bytes, over the limit of {max_bytes}",
                           "cut the log to the time the profile ran (or pass a larger max_bytes)")
    with handle:
        number = 0
        while True:
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise ProfileError(f"{path}:{number}: line is over {MAX_LINE_BYTES} bytes, not a {what}",
                                   "give the power log itself")
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise ProfileError(f"{path}:{number}: not UTF-8 text, not a {what}",
                                   "give the power log itself (a text file)") from None
            yield number, text.rstrip("\r\n")


def number_at(text: str, where: str, what: str, *, low: float = -float("inf"), fix: str = "") -> float:
    """``text`` as a finite number >= ``low``, or a ProfileError: "{where}: {what} is ..." (``where``
    is "file:line")."""
    try:
        value = float(text)
    except ValueError:
        raise ProfileError(f"{where}: {what} {text.strip()!r} is not a number",
                           fix or "fix or remove the line") from None
    return check_number(value, f"{where}: {what}", low=low, error=ProfileError, fix=fix)
