"""Runtime commands: ``splitinfer worker`` (a device worker process).

The worker's flags are declared once, on :class:`splitinfer.runtime.worker.WorkerConfig`;
this command hands its arguments to the same parser as ``python -m splitinfer.runtime.worker``.
"""

from __future__ import annotations

import logging

import typer


def worker(ctx: typer.Context) -> None:
    """Run a device worker: hosts stages, answers health, info, profile and echo requests.

    Example: splitinfer worker --name edge --listen tcp://0.0.0.0:5555 --token-file token.txt
    (run with --help for all flags).
    """
    from splitinfer.runtime.worker import parse_config, serve_worker

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s worker %(message)s")
    try:
        config = parse_config(list(ctx.args))
    except SystemExit as e:  # argparse's --help (0) and usage errors (2): already printed
        raise typer.Exit(int(e.code or 0)) from None
    serve_worker(config)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the main app."""
    app.command("worker", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                            "help_option_names": []})(worker)
