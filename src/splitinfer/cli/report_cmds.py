"""``splitinfer report``: an HTML report with figures and CSV tables of a profile, plans and a bench run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from splitinfer.cli._common import console, format_bytes
from splitinfer.cli._model import converted
from splitinfer.errors import SplitinferError

ProfileArg = Annotated[
    Path, typer.Argument(metavar="PROFILE", help="profile.json (splitinfer profile).", show_default=False)
]
PlanOption = Annotated[
    Path | None,
    typer.Option("--plan", "-p", metavar="PLAN.json", help="Plans from `splitinfer plan ... -o` to compare.",
                 show_default=False),
]
BenchOption = Annotated[
    Path | None,
    typer.Option("--bench", "-b", metavar="BENCH.json",
                 help="A bench run of a plan: predicted against measured (its plan is the chosen one).",
                 show_default=False),
]
ModelOption = Annotated[
    Path | None,
    typer.Option("--model", "-m", metavar="MODEL.onnx", show_default=False,
                 help="The profiled model, to name each block's main op."),
]
OutOption = Annotated[
    Path, typer.Option("--output", "-o", metavar="DIR", help="Folder to write the report into.")
]
EvalOption = Annotated[
    Path | None,
    typer.Option("--eval", "-e", metavar="EVAL.json", show_default=False,
                 help="An eval result (`splitinfer eval ... -o eval.json`): a Quality section with accuracy, "
                      "agreement, and with labels the confusion matrix and per-class precision/sensitivity."),
]
GainOption = Annotated[
    Path | None,
    typer.Option("--gain", "-g", metavar="GAIN.json", show_default=False,
                 help="What splitting gained, measured (gain.json from `splitinfer demo`): a Gain of "
                      "splitting section with the best plan against the best single device."),
]
RankOption = Annotated[
    Path | None,
    typer.Option("--rank", "-r", metavar="RANK.json", show_default=False,
                 help="A ranked bench of the k best plans (`splitinfer bench PLAN --top K -o rank.json`): a "
                      "Rank fidelity section with each plan's predicted against measured figure, Kendall's "
                      "tau and the regret of the predicted best."),
]
CheckOption = Annotated[
    bool,
    typer.Option("--check", help="Open the page in headless Chromium; fail on page errors or broken images."),
]


def report(
    profile: ProfileArg,
    plan: PlanOption = None,
    bench: BenchOption = None,
    model: ModelOption = None,
    evaluation: EvalOption = None,
    gain: GainOption = None,
    rank: RankOption = None,
    output: OutOption = Path("splitinfer-report"),
    check: CheckOption = False,
) -> None:
    """Write an HTML report (one self-contained page, viewable offline) with PNG/SVG figures and CSV tables.

    Figures: latency per block per device; FLOPs, params and output bytes per
    block; with --plan: the plans compared, the chosen plan's timeline, the
    block graph coloured by stage and the Pareto fronts (if planned); with
    --bench: predicted against measured per stage and hop, and the latency
    distribution; with --eval: the confusion matrix; with --gain: the best plan's
    and the best single device's measured figures side by side; with --rank: each
    ranked plan's predicted against measured figure. The chosen plan is the
    bench's, else the first in PLAN.json. CSV: blocks.csv, plans.csv, bench.csv,
    with --gain gain.csv, with --rank rank.csv, and with --eval accuracy.csv,
    agreement.csv, classes.csv.

    Examples:

      splitinfer report profile.json -o splitinfer-report

      splitinfer report profile.json --plan plan.json -o report

      splitinfer report profile.json -p plan.json -b bench.json -m mobilenetv2.onnx --check

      splitinfer report profile.json -p plan.json --eval eval.json -o report

      splitinfer report out/profile.json -p out/plan.json -b out/bench.json --gain out/gain.json

      splitinfer report profile.json -p plan.json --rank rank.json -o report
    """
    from splitinfer.report import write_report  # here: matplotlib would slow every command's start
    from splitinfer.report.quality import load_eval

    doc = load_eval(evaluation) if evaluation is not None else None  # a bad file: one line, before any figure

    written: list[Path] = []
    with console.status("writing the report") as status:

        def on_file(path: Path) -> None:
            written.append(path)
            status.update(f"writing the report: {path.name}")

        index = write_report(profile, output, plans=plan, bench=bench,
                             model=converted(model) if model is not None else None, evaluation=doc,
                             gain=gain, rank=rank, on_file=on_file)
    for path in written:
        console.print(f"  {path.name:<24} {format_bytes(path.stat().st_size):>10}", highlight=False)
    console.print(f"wrote {len(written)} files; open {index}", highlight=False)
    if check:
        _check(index)


def _check(index: Path) -> None:
    from splitinfer.report import check_page

    with console.status("opening the page in headless Chromium"):
        result = check_page(index)
    if not result.ok:
        raise SplitinferError(f"the page has problems in Chromium: {'; '.join(result.problems)}",
                              "report it as a bug, with the page")
    console.print(f"checked in Chromium: {len(result.images)} images, no console errors", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``report`` to the main app."""
    app.command("report", no_args_is_help=True)(report)
