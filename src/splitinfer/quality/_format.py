"""JSON numbers and plain-text tables for the quality results.

JSON has no infinity or NaN, and ``json.dumps`` would write the non-standard ``Infinity``:
every float goes through :func:`json_float`, which writes +inf as the string ``"inf"``, -inf
as ``"-inf"`` and NaN as ``null`` (an SNR is +inf when the candidate is exact, -inf when the
reference is all zeros and the candidate is not).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

INF = "inf"
NEG_INF = "-inf"


def json_float(value: float) -> float | str | None:
    """A float as JSON can carry it: itself, ``"inf"``, ``"-inf"``, or ``None`` for NaN."""
    value = float(value)
    if math.isnan(value):
        return None
    if math.isinf(value):
        return INF if value > 0 else NEG_INF
    return value


def fixed(value: float | None, digits: int = 4) -> str:
    """A number for a table cell: fixed point, ``inf``, or ``-`` when there is none."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def short(value: float) -> str:
    """A difference for a table cell: 3 significant digits, exponent when small or large."""
    return f"{value:.3g}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned by padding: the first left, the others right (they hold numbers)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [str(c).ljust(w) if i == 0 else str(c).rjust(w)
                  for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])
