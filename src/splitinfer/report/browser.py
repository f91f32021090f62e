"""Open a report page in headless Chromium and say what went wrong: console errors, broken images.

No extra dependency: Chromium prints the page's console messages on stderr
(``--enable-logging=stderr``) and the DOM after ``load`` on stdout (``--dump-dom``);
the page's own check script (see :mod:`splitinfer.report.html`) has written each
image's natural size and any page error into DOM attributes by then.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from splitinfer.errors import SplitinferError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# "[pid:tid:time:INFO:CONSOLE:12] "msg", source: ..." (newer) or "...:CONSOLE(12)] ..." (older).
_CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\] (.*)")


@dataclass
class PageCheck:
    """What headless Chromium saw: ``ok`` when the page loaded silently and every image has a size."""

    images: list[tuple[str, int, int]] = field(default_factory=list)  # (alt, natural width, height)
    console: list[str] = field(default_factory=list)  # console messages (a report page prints none)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str] = {}
        self.images: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = values
        elif tag == "img":
            self.images.append(values)


def find_browser() -> str | None:
    """The first of chromium, chromium-browser, google-chrome on PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _run_browser(browser: str, url: str, timeout_s: float) -> tuple[str, str]:
    with tempfile.TemporaryDirectory(prefix="splitinfer-chromium-") as profile_dir:
        cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-extensions", f"--user-data-dir={profile_dir}", "--enable-logging=stderr", "--v=0",
               "--virtual-time-budget=5000", "--dump-dom", url]
        # Own process group: on a timeout every helper process Chromium started goes too.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.communicate()
            raise SplitinferError(f"{browser} did not finish loading {url} in {timeout_s:g} s",
                                  "check that the page opens in a browser") from None
        finally:
            _kill_group(proc.pid)
    return out, err


def _kill_group(pgid: int) -> None:
    """End what is left of Chromium's process group (its zygote and helpers may outlive it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def check_page(path: str | Path, *, browser: str | None = None, timeout_s: float = 60.0) -> PageCheck:
    """Load ``path`` in headless Chromium; list console messages, failed images and script errors."""
    browser = browser or find_browser()
    if browser is None:
        raise SplitinferError("no Chromium on PATH (chromium, chromium-browser or google-chrome)",
                              "install it, e.g. apt-get install chromium")
    page = Path(path).resolve()
    if not page.is_file():
        raise SplitinferError(f"no page at {page}", "write the report first (splitinfer report)")
    out, err = _run_browser(browser, page.as_uri(), timeout_s)
    check = PageCheck(console=[m.group(1) for m in _CONSOLE.finditer(err)])
    check.problems += [f"console: {msg}" for msg in check.console]
    dom = _Dom()
    dom.feed(out)
    if "data-report-checked" not in dom.body:
        check.problems.append("the page's check script did not run (no data-report-checked on <body>)")
    elif dom.body["data-report-checked"] != str(len(dom.images)):
        check.problems.append(f"the check script saw {dom.body['data-report-checked']} images, "
                              f"the DOM has {len(dom.images)}")
    if dom.body.get("data-report-problems"):
        check.problems.append(f"page errors: {dom.body['data-report-problems']}")
    for img in dom.images:
        w, h = _size(img.get("data-natural-size", ""))
        sw, sh = _size(img.get("data-shown-size", ""))
        alt = img.get("alt", "")
        check.images.append((alt, w, h))
        if w == 0 or h == 0 or sw == 0 or sh == 0:
            check.problems.append(f"image {alt!r} has size {w}x{h} (shown {sw}x{sh})")
    return check
