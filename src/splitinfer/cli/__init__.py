"""The ``splitinfer`` command. Thin: every command is a call into the library.

Each command group lives in its own module and registers itself on ``app``;
this module only turns :class:`SplitinferError` into one line and exit code 2, and Ctrl-C into
exit code 130 (``_interrupt``: a command that does not stop within seconds exits anyway).
Groups: ``zoo_cmds``, ``graph_cmds`` (inspect, split), ``profile_cmds``, ``plan_cmds``,
``runtime_cmds`` (worker, run), ``bench_cmds`` (bench), ``serve_cmds``, ``keys_cmds`` (keygen),
``report_cmds``, ``demo_cmds``, ``eval_cmds``, ``quantize_cmds``, ``energy_cmds`` (energy sweep),
``convert_cmds`` (convert: framework models to ONNX), ``k8s_cmds`` (k8s: Kubernetes manifests);
``_common`` and ``_model`` are their shared option parsing and formatting.
"""

from __future__ import annotations

import inspect
import sys
import traceback

import typer
from rich.markup import escape

from splitinfer.cli import _common, _model
from splitinfer.cli._interrupt import bounded_interrupts
from splitinfer.convert.verify import DEFAULT_TOLERANCE
from splitinfer.errors import SplitinferError
from splitinfer.graph.shapes import as_flags
from splitinfer.units import check_number

app = typer.Typer(
    name="splitinfer",
    help=(
        "Split deep neural network inference across devices and run it there.\n\n"
        "The loop: inspect -> split -> profile -> plan -> run -> measure -> report. "
        "Start with `splitinfer demo`, or `splitinfer zoo build resnet18 -o r18.onnx` "
        "then `splitinfer inspect r18.onnx`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    tolerance: float = typer.Option(
        DEFAULT_TOLERANCE, "--tolerance", metavar="X",
        help="A framework model given as MODEL (.pt2, .pt, .keras, .h5, SavedModel, .tflite) is converted to "
             "ONNX and verified on seeded inputs: its outputs may differ from the framework's by X "
             "times their largest magnitude (at least 1)."),
    accept_unverified: bool = typer.Option(
        False, "--accept-unverified", help="Use a converted framework model even if it does not verify."),
) -> None:
    _common.DEBUG = debug
    check_number(tolerance, "--tolerance", low=0, low_open=True, fix="a tolerance such as 1e-4")
    _model.CONVERT = _model.ConvertOptions(tolerance, accept_unverified)


def _register_all() -> None:
    # Imported here so a broken optional group cannot break `--help` of the others.
    from splitinfer.cli import (
        bench_cmds,
        convert_cmds,
        demo_cmds,
        energy_cmds,
        eval_cmds,
        generate_cmds,
        graph_cmds,
        k8s_cmds,
        keys_cmds,
        plan_cmds,
        profile_cmds,
        quantize_cmds,
        report_cmds,
        runtime_cmds,
        serve_cmds,
        zoo_cmds,
    )

    for module in (demo_cmds, convert_cmds, graph_cmds, zoo_cmds, plan_cmds, profile_cmds, runtime_cmds,
                   bench_cmds, serve_cmds, report_cmds, keys_cmds, eval_cmds, quantize_cmds, energy_cmds,
                   k8s_cmds, generate_cmds):
        module.register(app)
    _reflow_help(app)


def reflow(text: str) -> str:
    """Help text with each paragraph on one line: Typer's rich help keeps a source line break, so a
    paragraph wrapped at the source's width would break again at the terminal's. An indented paragraph
    (an example command) keeps its lines."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith(" ") else " ".join(line.strip() for line in p.splitlines())
                       for p in paragraphs)


def _reflow_help(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        text = info.help or (inspect.getdoc(info.callback) if info.callback else None)
        if text:
            info.help = reflow(text)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, map known errors to one line and exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        with bounded_interrupts():
            rv = app(args=args, prog_name="splitinfer", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except SplitinferError as e:
        if debug:
            traceback.print_exc()
        # The library names its arguments (input_shapes=, batch=); here they are flags.
        line = as_flags(e.line())
        # escaped: a message's own brackets (pip install 'splitinfer[torch]') are text, not markup
        _common.err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        return 2
    except typer.Abort:
        _common.err_console.print("aborted")
        return 130
    except typer.Exit as e:
        return e.exit_code
    except Exception as e:
        # Usage errors (bad flag, unknown command): click's own message and code.
        # Typer may vendor click, so match on behaviour rather than on the class.
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            return e.exit_code
        raise
    except KeyboardInterrupt:
        _common.err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
