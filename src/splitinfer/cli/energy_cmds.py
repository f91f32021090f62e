"""``splitinfer energy``: energy as DIME shows it. ``energy sweep``: the least energy a plan needs under each
latency budget (the energy-deadline curve), split into compute and communication, as a table, a CSV and a
plot."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from splitinfer.cli._common import check_writable, console, parse_flag
from splitinfer.cli._energy_join import (
    JOIN_HELP,
    JOIN_SHORT,
    RECORD_HELP,
    RECORD_SHORT,
    join_command,
    record_command,
)
from splitinfer.cli.plan_cmds import _profile_problem
from splitinfer.errors import PlanError
from splitinfer.plan import Constraints, Plan, solve
from splitinfer.plan.problem import MAX_IN_FLIGHT, Problem
from splitinfer.plan.solve import MAX_TIME_LIMIT_S, METHODS
from splitinfer.plan.sweep import MAX_BUDGETS, SweepPoint, default_budgets, sweep_latency_budgets
from splitinfer.units import check_number, parse_time_s

DEFAULT_NUM_BUDGETS = 10
PLOT_SUFFIXES = (".png", ".svg", ".pdf")

SWEEP_HELP = """The least energy per request under each latency budget (DIME's energy-deadline curve).

For each budget the planner finds the plan with the least energy of the battery devices whose latency is \
within it (`plan --objective energy --max-latency BUDGET`), and splits its joules into compute (running \
stages), communication (the radio sending and receiving) and idle. By default the budgets run from the \
fastest plan's latency to a little beyond the least-energy plan's.

[bold]Examples[/]

  splitinfer energy sweep profile.json --cluster cluster.yaml --num-budgets 20 -o sweep.csv --plot sweep.png

  splitinfer energy sweep profile.json --cluster cluster.yaml --budgets 50ms,100ms,200ms

Power comes from cluster.yaml (`power: {busy_w: .., idle_w: .., radio_w: .., battery: true}` on a device)."""

# Other energy commands register on this sub-app too (`energy_app.command(...)`).
energy_app = typer.Typer(name="energy", help="Energy per request: what plans spend, by budget and by part.",
                         no_args_is_help=True)


def _budgets(text: str) -> list[float]:
    """``--budgets 0.05,100ms``: seconds, or durations with a unit."""
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts or len(parts) > MAX_BUDGETS:
        raise PlanError(f"--budgets {text!r} lists {len(parts)} budgets",
                        f"give 1 to {MAX_BUDGETS} latency budgets separated by commas, e.g. 50ms,100ms")
    budgets = []
    for part in parts:
        seconds = parse_flag(parse_time_s, part, "--budgets", PlanError)
        budgets.append(check_number(seconds, f"--budgets {part}", low=0, low_open=True, error=PlanError,
                                    fix="a latency budget, e.g. 50ms or 0.05"))
    return budgets


def _check_power(problem: Problem) -> None:
    if not any(p.battery for p in problem.power.values()):
        raise PlanError("no device has power figures counted as a battery's, so there is no energy to sweep",
                        "add `power:` with `battery: true` to a device in cluster.yaml, e.g. "
                        "power: {busy_w: 4, idle_w: 1, radio_w: 2, battery: true}")


def _table(points: list[SweepPoint]) -> Table:
    table = Table(title="least energy under each latency budget (J per request, battery devices)",
                  title_justify="left")
    for name in ("budget s", "latency s", "energy J", "compute J", "communication J", "idle J"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("stages", overflow="fold", min_width=16)
    for p in points:
        figures = (p.latency_s, p.energy_j, p.compute_j, p.communication_j, p.idle_j)
        row = [f"{p.budget_s:.4f}", *("-" if v is None else f"{v:.4f}" for v in figures)]
        table.add_row(*row, p.stages if p.feasible else "no plan meets this budget")
    return table


@energy_app.command("sweep", help=SWEEP_HELP, no_args_is_help=True)
def sweep_command(
    profile: str = typer.Argument(..., metavar="PROFILE", help="profile.json (splitinfer profile)."),
    cluster: Path | None = typer.Option(None, "--cluster", help="cluster.yaml: devices, links, power."),
    budgets: str | None = typer.Option(None, "--budgets", help="Latency budgets, e.g. 50ms,0.1,200ms."),
    num_budgets: int | None = typer.Option(
        None, "--num-budgets", help=f"How many budgets from the fastest plan's latency to a little beyond "
        f"the least-energy plan's (default {DEFAULT_NUM_BUDGETS})."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the points to this CSV."),
    plot: Path | None = typer.Option(None, "--plot", help="Draw energy against budget (.png .svg .pdf)."),
    sink: str | None = typer.Option(None, "--sink", help="Where the result goes: a device, or none."),
    stat: str = typer.Option("median_s", "--stat", help="Timing statistic: median_s, mean_s, p10_s, p90_s."),
    in_flight: int = typer.Option(1, "--in-flight", help="Requests a stage holds at once (its memory)."),
    method: str = typer.Option("auto", "--method", help="auto | dp | milp | bruteforce."),
    time_limit: float = typer.Option(60.0, "--time-limit", help="Seconds the MILP may take per solve."),
) -> None:
    if budgets is not None and num_budgets is not None:
        raise PlanError("--budgets and --num-budgets both say which budgets to sweep", "give one of them")
    count = DEFAULT_NUM_BUDGETS if num_budgets is None else num_budgets
    check_number(count, "--num-budgets", low=1, high=MAX_BUDGETS, whole=True, error=PlanError)
    check_number(in_flight, "--in-flight", low=1, high=MAX_IN_FLIGHT, whole=True, error=PlanError)
    check_number(time_limit, "--time-limit", low=0, low_open=True, high=MAX_TIME_LIMIT_S, error=PlanError,
                 fix="seconds per MILP solve")
    if method not in METHODS:
        raise PlanError(f"--method is {method!r}", f"use one of: {', '.join(METHODS)}")
    if plot is not None and plot.suffix.lower() not in PLOT_SUFFIXES:
        raise PlanError(f"--plot {plot} is not a {', '.join(PLOT_SUFFIXES)} file", "name it e.g. sweep.png")
    check_writable(output, "-o")
    check_writable(plot, "--plot")
    given = _budgets(budgets) if budgets is not None else None
    no_tradeoffs = {"max_quality_drop": None, "precisions": None, "compressions": None}
    problem, _, _, _ = _profile_problem(profile, cluster, stat, sink, no_tradeoffs, in_flight, None)
    _check_power(problem)

    def least_energy(budget_s: float | None) -> Plan:
        cons = Constraints(max_latency_s=budget_s)
        return solve(problem, "energy", cons, method=method, time_limit_s=time_limit)[0]

    if given is None:
        fastest = solve(problem, "latency", method=method, time_limit_s=time_limit)[0].latency_s
        # a float sum in another order may put the least-energy plan a hair below the fastest
        given = default_budgets(fastest, max(fastest, least_energy(None).latency_s), count)
    with console.status(f"planning for {len(given)} latency budgets ..."):
        points = sweep_latency_budgets(least_energy, given)
    console.print(_table(points))
    if output is not None:
        from splitinfer.report.energy import write_sweep_csv  # matplotlib and the report only when asked

        write_sweep_csv(points, output)
        console.print(f"wrote {output}", highlight=False)
    if plot is not None:
        from splitinfer.report.energy import write_sweep_plot

        write_sweep_plot(points, plot)
        console.print(f"wrote {plot}", highlight=False)


energy_app.command("join", help=JOIN_HELP, short_help=JOIN_SHORT, no_args_is_help=True)(join_command)
energy_app.command("record", help=RECORD_HELP, short_help=RECORD_SHORT, no_args_is_help=True)(record_command)


def register(app: typer.Typer) -> None:
    """Add ``energy`` (``energy sweep``, ``join``, ``record``) to the main app."""
    app.add_typer(energy_app, name="energy")
