"""The report page: one self-contained HTML file (inline CSS, images as base64 PNG, no external files).

A small inline script records, after ``load``, every image's natural and shown size
and any page error into DOM attributes (``data-natural-size`` on each image,
``data-report-checked`` and ``data-report-problems`` on ``<body>``), so a headless
browser's DOM dump tells whether the page really rendered (see :mod:`.browser`).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitinfer.report.tables import Table, bytes_label, count_label

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:1em 2em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right;white-space:nowrap}
th{background:#f3f3f3;position:sticky;top:0}td.text,th.text{text-align:left}
tbody tr:nth-child(even){background:#fafafa}
.scroll{max-height:32em;overflow:auto;display:inline-block;max-width:100%}
.wide{overflow-x:auto;max-width:100%}.note{color:#666;font-size:.85em;margin-top:0}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}nav a{margin-right:1em}
.kv td:first-child{text-align:left;font-weight:600}.kv td{text-align:left}
"""

# Runs before the images load: a capturing listener sees failed images and script errors.
CHECK_SCRIPT = """
(function () {
  var problems = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && t.tagName) {
      problems.push("cannot load " + t.tagName.toLowerCase() + " " + (t.getAttribute("alt") || ""));
    } else {
      problems.push("script error: " + e.message);
    }
  }, true);
  window.addEventListener("load", function () {
    var images = document.images;
    for (var i = 0; i < images.length; i++) {
      var img = images[i], box = img.getBoundingClientRect();
      img.setAttribute("data-natural-size", img.naturalWidth + "x" + img.naturalHeight);
      img.setAttribute("data-shown-size", Math.round(box.width) + "x" + Math.round(box.height));
    }
    document.body.setAttribute("data-report-problems", problems.join(" | "));
    document.body.setAttribute("data-report-checked", String(images.length));
  });
})();
"""


@dataclass(frozen=True)
class FigureFile:
    """One figure written to the report folder."""

    stem: str
    title: str
    caption: str
    png: Path
    svg: Path


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def format_cell(column: str, value: Any) -> str:
    """A table value for people: seconds in ms, bytes and counts with units, errors in percent."""
    if value == "" or value is None:
        return "-"
    if isinstance(value, (str, bool)):
        return value
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if column.endswith("_bytes") or column == "bytes_sent":
        return bytes_label(value)
    if column in ("flops", "num_params"):
        return count_label(value)
    if column.endswith("gain"):  # how many times better, as the demo's lines say it
        return f"{value:.2f}x"
    if column == "quality_cost":  # a fraction of top-1 agreement lost, like --max-quality-drop 1%
        return f"{value:.2%}"
    if column == "rel_error" or column == "gap":
        return f"{value:+.1%}" if column == "rel_error" else f"{value:.2%}"
    if column.endswith("_s"):
        return f"{value * 1e3:.3g} ms" if abs(value) < 1 else f"{value:.3g} s"
    if column.endswith(("_rps", "_j")) or column == "bound":  # a plan's bound: its objective's unit
        return f"{value:.4g}"
    if isinstance(value, float):
        if column == "cosine":
            return f"{value:.6f}"
        if column == "snr_db":
            return f"{value:.1f} dB"
        if column.endswith(("accuracy", "agreement", "precision", "sensitivity", "g_mean")):
            return f"{value:.4f}"
        if column.endswith("_diff"):
            return f"{value:.3g}"
    return str(value)


def render_table(table: Table, title: str, *, raw_csv: str | None = None, scroll: bool = False,
                 note: str = "") -> str:
    """An HTML table with human units; ``raw_csv`` links the CSV file with the exact numbers."""
    header, rows = table
    numeric = [all(not isinstance(r[i], str) or r[i] == "" for r in rows) for i in range(len(header))]
    head = "".join(f'<th class="{"" if n else "text"}">{_esc(h)}</th>' for h, n in zip(header, numeric,
                                                                                       strict=True))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"" if n else "text"}">{_esc(format_cell(h, v))}</td>'
                         for h, n, v in zip(header, numeric, row, strict=True)) + "</tr>"
        for row in rows
    )
    link = f' <a href="{_esc(raw_csv)}">(CSV)</a>' if raw_csv else ""
    table_html = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    table_html = f'<div class="{"scroll" if scroll else "wide"}">{table_html}</div>'
    note_html = f'<p class="note">{_esc(note)}</p>' if note else ""
    return f"<h3>{_esc(title)}{link}</h3>{table_html}{note_html}"


def render_key_values(pairs: Sequence[tuple[str, object]]) -> str:
    """A two-column table of labels and values."""
    rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def render_figure(fig: FigureFile) -> str:
    """A figure with its PNG inlined as base64 and links to the PNG and SVG files next to the page."""
    data = base64.b64encode(fig.png.read_bytes()).decode("ascii")
    return (
        f'<figure id="{_esc(fig.stem)}"><img src="data:image/png;base64,{data}" alt="{_esc(fig.title)}">'
        f"<figcaption><b>{_esc(fig.title)}.</b> {_esc(fig.caption)} "
        f'<a href="{_esc(fig.svg.name)}">SVG</a> · <a href="{_esc(fig.png.name)}">PNG</a>'
        "</figcaption></figure>"
    )


def render_page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole page; ``sections``: (anchor, heading, inner HTML)."""
    nav = "".join(f'<a href="#{_esc(a)}">{_esc(h)}</a>' for a, h, _ in sections)
    body = "".join(f'<section id="{_esc(a)}"><h2>{_esc(h)}</h2>{inner}</section>' for a, h, inner in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{STYLE}</style><script>{CHECK_SCRIPT}</script></head>"
        f'<body><h1>{_esc(title)}</h1><p class="sub">{_esc(subtitle)}</p><nav>{nav}</nav>{body}'
        "</body></html>\n"
    )
