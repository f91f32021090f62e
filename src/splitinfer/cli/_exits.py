"""The early-exit options ``split`` and ``profile`` share: ``--exits`` (outputs, or ``model`` for those
the model's metadata declares), ``--exit-rule``, ``--exit-threshold``, ``--exit-rule-path``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from splitinfer.errors import CutError, SplitinferError
from splitinfer.graph import Model
from splitinfer.graph.exits import Exit, read_exits

ExitsOpt = Annotated[str | None, typer.Option(
    "--exits", metavar="OUT1,OUT2|model|none", show_default=False,
    help="Early exits: model outputs a confident request may stop at (`model`: those the model's metadata "
         "declares, the default for profile; `none`: no exit). Each exit ends a partition (a block).")]
ExitRuleOpt = Annotated[str | None, typer.Option(
    "--exit-rule", help="The exits' confidence rule: softmax_max (default), entropy, or onnx.",
    show_default=False)]
ExitThresholdOpt = Annotated[float | None, typer.Option(
    "--exit-threshold", help="softmax_max: the top class's probability at least this (default 0.9); "
                             "entropy: at most this many nats.", show_default=False)]
ExitRulePathOpt = Annotated[Path | None, typer.Option(
    "--exit-rule-path", help="--exit-rule onnx: an ONNX graph from the exit's tensor to one bool per "
                             "sample (true: confident).", show_default=False)]


_EXIT_ARGS = re.compile(r"\b(exits|threshold|rule_path|rule)=")
_EXIT_FLAGS = {"exits": "--exits", "threshold": "--exit-threshold", "rule": "--exit-rule",
               "rule_path": "--exit-rule-path"}


def read_exit_options(m: Model, exits: str | None, rule: str | None, threshold: float | None,
                      rule_path: Path | None) -> tuple[Exit, ...]:
    """``--exits`` (names, or ``model`` for the metadata's) with ``--exit-rule``, ``--exit-threshold``
    and ``--exit-rule-path``."""
    if exits is None:
        if rule is not None or threshold is not None or rule_path is not None:
            raise CutError("--exit-rule and --exit-threshold apply to --exits, which is not given",
                           "add --exits OUT1,OUT2 (or --exits model)")
        return ()
    if exits.strip() == "none":
        return ()
    names = None if exits.strip() == "model" else [n.strip() for n in exits.split(",") if n.strip()]
    try:
        found = read_exits(m, names, rule=rule, threshold=threshold, rule_path=rule_path)
    except SplitinferError as e:  # the library names its arguments; here they are options
        def flags(text: str) -> str:
            return _EXIT_ARGS.sub(lambda m: _EXIT_FLAGS[m[1]], text)
        raise type(e)(flags(e.problem), flags(e.fix)) from None
    if not found:
        raise CutError("--exits model: the model's metadata declares no exits",
                       "name the exit outputs: --exits OUT1,OUT2")
    return found
