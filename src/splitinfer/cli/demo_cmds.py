"""``splitinfer demo``: the whole loop on an emulated 3-device continuum, ending in an HTML report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from splitinfer.cli._common import check_folder, console
from splitinfer.units import check_number

HELP = """Run the whole loop on an emulated continuum of three local workers and write a report.

Builds a full-size zoo model (MobileNetV2 unless --model), starts three worker
processes standing in for a battery camera (10x slower than the edge, one
thread), an edge box and a cloud server, joined by emulated links (camera-edge
40 Mbit/s 3 ms, edge-cloud 50 Mbit/s 20 ms, camera-cloud 20 Mbit/s 30 ms). Then
it profiles every block on every device, probes the links, plans (latency top 5,
throughput, Pareto fronts), and measures what splitting gains: for latency and
for throughput, the best plan and the best plan on a single device are deployed
together and sent requests in turn; it prints predicted against measured and the
measured gain (OUT/gain.json) and writes OUT/index.html. Every process it starts
is stopped at the end. The cluster is saved as OUT/cluster.yaml: edit it and
reuse it with `splitinfer profile/plan/bench --cluster`.

[bold]Examples[/]

  splitinfer demo

  splitinfer demo --model resnet18 --requests 50 -o my-report

  splitinfer demo --model my_model.onnx
"""


def demo(
    model: Annotated[str, typer.Option("--model", "-m", help="A zoo name or an .onnx path.")] = "mobilenetv2",
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the report and files.")] = Path(
        "splitinfer-report"
    ),
    requests: Annotated[int, typer.Option("--requests", "-n", min=1,
                                          help="Requests to measure, per plan measured.")] = 100,
    top: Annotated[int, typer.Option("--top", "-k", min=1, help="How many latency plans to list.")] = 5,
    backend: Annotated[str, typer.Option(help="local (worker processes) or ray (a running Ray).")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray address for --backend ray.")] = None,
    budget_s: Annotated[
        float, typer.Option("--budget-s", help="Profiling seconds per block and device.")
    ] = 1.0,
) -> None:
    from splitinfer.cli._plan_tables import format_plans
    from splitinfer.cli.runtime_cmds import format_bench_table
    from splitinfer.demo import run_demo
    from splitinfer.records.gain import gain_line

    check_number(budget_s, "--budget-s", low=0, low_open=True, high=3600, fix="profiling seconds per block")
    check_folder(out_dir, "-o")
    started = time.perf_counter()
    result = run_demo(model, out_dir=out_dir, num_requests=requests, top_k=top, backend=backend,
                      address=address, budget_s=budget_s,
                      on_step=lambda m: console.print(f"[bold cyan]>[/] {m}"))
    latency = [p for p in result.plans if p.objective == "latency"]
    others = [p for p in result.plans if p.objective != "latency"]
    console.print(format_plans(latency, f"latency: top {len(latency)} plans"))
    console.print(format_plans([p for p in others if p.objective == "throughput"], "throughput plan"))
    console.print(format_bench_table(result.bench))
    # The demo's point, last before the paths: what splitting gained, as measured side by side.
    for line in (gain_line(g) for g in result.gain.gains):
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"report:  {result.report_path}")
    console.print(f"cluster: {result.cluster_path} (edit and reuse it with --cluster)")
    steps = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    console.print(f"done in {time.perf_counter() - started:.1f} s ({steps}); every worker stopped")


def register(app: typer.Typer) -> None:
    """Add this group's commands to the main app."""
    app.command("demo", help=HELP)(demo)
