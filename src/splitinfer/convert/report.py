"""The conversion table: each sample model (:mod:`splitinfer.convert.samples`) converted and verified,
with the converter, the largest difference from its framework and the time it took, as Markdown and
CSV (``splitinfer convert --report FOLDER``)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from splitinfer.convert.cache import convert_file
from splitinfer.convert.conversion import convert
from splitinfer.convert.formats import FORMATS, detect_format
from splitinfer.convert.samples import Sample, write_samples
from splitinfer.convert.verify import DEFAULT_TOLERANCE
from splitinfer.errors import SplitinferError

COLUMNS = ("model", "format", "converter", "converted", "verified", "max_abs_diff", "tolerance", "seconds",
           "note")


@dataclass(frozen=True)
class Row:
    model: str
    format: str
    converter: str = ""
    converted: bool = False
    verified: bool = False
    max_abs_diff: float | None = None
    tolerance: float | None = None
    seconds: float | None = None
    note: str = ""


def convert_sample(sample: Sample, folder: Path, tolerance: float) -> Row:
    fmt = detect_format(sample.source) or "?"
    label = FORMATS.get(fmt, fmt)
    try:
        if isinstance(sample.source, Path):
            c = convert_file(sample.source, sample.input_shapes, tolerance=tolerance, accept_unverified=True,
                             output=folder / f"{sample.source.name.replace('.', '_')}.onnx")
        else:
            c = convert(sample.source, sample.input_shapes, tolerance=tolerance, accept_unverified=True,
                        label=sample.name)
    except SplitinferError as e:
        return Row(sample.name, label, note=e.line())
    v = c.verification
    return Row(sample.name, label, c.converter, True, c.verified, v.max_abs_diff, v.tolerance(tolerance),
               c.seconds, v.problem)


def conversion_report(folder: str | Path, tolerance: float = DEFAULT_TOLERANCE) -> list[Row]:
    """Write the samples under ``folder``, convert each (ONNX files under ``folder/onnx``); one row per
    sample, and one per framework not installed."""
    folder = Path(folder)
    rows: list[Row] = []
    for framework, samples in write_samples(folder / "models").items():
        if not samples:
            rows.append(Row(f"({framework} samples)", "-", note=f"not installed: pip install "
                                                                 f"'splitinfer[{framework}]'"))
        out = folder / "onnx"
        out.mkdir(parents=True, exist_ok=True)
        rows.extend(convert_sample(s, out, tolerance) for s in samples)
    return rows


def cells(row: Row) -> list[str]:
    def num(x: float | None, form: str) -> str:
        return "" if x is None else format(x, form)

    return [row.model, row.format, row.converter, "yes" if row.converted else "no",
            "yes" if row.verified else "no", num(row.max_abs_diff, ".1e"), num(row.tolerance, ".1e"),
            num(row.seconds, ".1f"), row.note]


def to_markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(cells(r) for r in rows)
    return buffer.getvalue()
