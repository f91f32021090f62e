"""Running the CLI in process, and reading the one line an error must be."""

from __future__ import annotations

from splitinfer.cli import main


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``splitinfer ARGS`` in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    """The single ``error: ...`` line a failing command prints (asserted to be the only line)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# Two local devices, "a" twice as slow as "b", on a fast link: a cluster small CLI tests deploy to.
TWO_DEVICES = {
    "schema": 1,
    "source": "a",
    "devices": [{"name": "a", "num_threads": 1, "slowdown": 2.0}, {"name": "b", "num_threads": 1}],
    "links": [{"from": "a", "to": "b", "bandwidth": "1GB/s", "latency": "0.2ms"}],
}
