"""The report page in a real headless Chromium: it loads with no console errors and every image has a size.

Skips when no Chromium is on PATH (``apt-get install chromium``; CI installs it).
The negative tests feed the same checker pages with a broken image, a script
error and a console error, so the check is shown to fail when it should.
"""

from __future__ import annotations

import base64

import psutil
import pytest

from splitinfer.report import check_page, find_browser
from splitinfer.report.html import render_page

pytestmark = pytest.mark.skipif(
    find_browser() is None,
    reason="no chromium, chromium-browser or google-chrome on PATH (apt-get install chromium)",
)

# A 1x1 PNG: a real image the browser can decode.
PIXEL = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a1f2a3a90000000049454e44ae426082"
)).decode()


def _browsers() -> set[int]:
    found = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "splitinfer-chromium-" in cmdline:
            found.add(proc.info["pid"])
    return found


def _page(tmp_path, body: str):
    path = tmp_path / "page.html"
    path.write_text(render_page("test", "a page for the checker", [("s", "section", body)]))
    return path


def test_report_loads_without_errors_and_every_image_has_a_size(report_dir):
    before = _browsers()
    check = check_page(report_dir / "index.html")
    assert check.ok, check.problems
    assert check.console == []
    assert len(check.images) == 9  # report_dir's figures (test_writer.FIGURES)
    for alt, width, height in check.images:
        assert alt and width > 300 and height > 200
    assert _browsers() <= before  # no Chromium process left behind


def test_a_good_image_passes(tmp_path):
    check = check_page(_page(tmp_path, f'<img alt="pixel" src="data:image/png;base64,{PIXEL}">'))
    assert check.ok, check.problems
    assert check.images == [("pixel", 1, 1)]


def test_a_broken_image_is_caught(tmp_path):
    body = (f'<img alt="good" src="data:image/png;base64,{PIXEL}">'
            '<img alt="broken" src="data:image/png;base64,AAAA">')
    check = check_page(_page(tmp_path, body))
    assert not check.ok
    assert ("broken", 0, 0) in check.images
    assert any("broken" in p for p in check.problems)


def test_a_missing_image_file_is_caught(tmp_path):
    check = check_page(_page(tmp_path, '<img alt="gone" src="missing.png">'))
    assert not check.ok
    assert any("gone" in p for p in check.problems)


def test_a_script_error_is_caught(tmp_path):
    check = check_page(_page(tmp_path, "<script>undefinedFunction();</script>"))
    assert not check.ok
    assert any("undefinedFunction" in p for p in check.problems)


def test_a_console_error_is_caught(tmp_path):
    check = check_page(_page(tmp_path, '<script>console.error("something broke");</script>'))
    assert not check.ok
    assert any("something broke" in m for m in check.console)


def test_a_page_without_the_check_script_fails(tmp_path):
    path = tmp_path / "bare.html"
    path.write_text(f'<!DOCTYPE html><html><body><img alt="x" src="data:image/png;base64,{PIXEL}">'
                    "</body></html>")
    check = check_page(path)
    assert not check.ok
    assert any("check script did not run" in p for p in check.problems)


def test_cli_check_opens_the_written_page(profile, tmp_path, capsys):
    from splitinfer.cli import main
    from splitinfer.profile.files import save_profile

    save_profile(profile, tmp_path / "profile.json")
    rc = main(["report", str(tmp_path / "profile.json"), "-o", str(tmp_path / "rep"), "--check"])
    assert rc == 0
    assert "checked in Chromium: 2 images, no console errors" in capsys.readouterr().out
