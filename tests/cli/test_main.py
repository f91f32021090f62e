"""The CLI frame: help, usage errors, and the one-line error contract."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

from splitinfer.cli import app, main
from splitinfer.errors import CutError


def test_help_lists_the_loop(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "inspect -> split -> profile -> plan" in out


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_library_errors_become_one_line_and_exit_2(capsys):
    @app.command("_raise_for_test", hidden=True)
    def _raise() -> None:
        raise CutError("tensor 'x' is not in the model", "pick a tensor listed by inspect")

    try:
        assert main(["_raise_for_test"]) == 2
        err = capsys.readouterr().err
        assert "error: tensor 'x' is not in the model. pick a tensor listed by inspect" in err
        assert "Traceback" not in err
        assert main(["--debug", "_raise_for_test"]) == 2
        assert "Traceback" in capsys.readouterr().err
    finally:
        app.registered_commands[:] = [c for c in app.registered_commands
                                      if c.name != "_raise_for_test"]


def test_console_script_runs():
    """The installed `splitinfer` command is cli.main; `python -m splitinfer.cli` exits with main's code."""
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "splitinfer"]
    assert script.load() is main
    out = subprocess.run([sys.executable, "-m", "splitinfer.cli", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "inspect -> split -> profile -> plan" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "splitinfer.cli", "no-such-command"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "No such command" in bad.stderr


def test_help_paragraphs_wrap_at_the_terminal_not_at_the_source():
    from typer.testing import CliRunner

    from splitinfer.cli import app, reflow

    assert reflow("""First line
    goes on.

      splitinfer example --keep
      --lines

    Last.""") == "First line goes on.\n\n  splitinfer example --keep\n  --lines\n\nLast."
    wide = CliRunner().invoke(app, ["k8s", "--help"], env={"COLUMNS": "300"}, terminal_width=300)
    assert "labelled splitinfer.io/device=NAME, and a Service named after the device;" in wide.output
