"""The report layer: figures (PNG and SVG), CSV tables and one self-contained HTML page.

Typical use::

    from splitinfer.report import write_report
    index = write_report("profile.json", "splitinfer-report", plans="plan.json", bench="bench.json")

:func:`check_page` opens a written page in headless Chromium and lists what went wrong.
Modules: ``inputs`` (what a report shows, colours), ``figures`` and ``plan_figures``
(matplotlib), ``quality`` and ``quality_figures`` (an eval file: its tables and the
confusion matrix), ``tables`` (terminal and CSV), ``html`` (the page), ``writer`` (all
of it into a folder), ``browser`` (the Chromium check), ``scission`` (Scission's graph of a
scenario). Importing it loads neither ZeroMQ nor ONNX Runtime.
"""

from splitinfer.report.browser import PageCheck, check_page, find_browser
from splitinfer.report.writer import write_report

__all__ = ["PageCheck", "check_page", "find_browser", "write_report"]
