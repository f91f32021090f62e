"""``splitinfer serve``: deploy a plan and serve it over HTTP (Starlette app, run by uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer

from splitinfer.cli._common import console
from splitinfer.cli.runtime_cmds import (
    ClusterOpt,
    ModelOpt,
    PlanArg,
    ProfileOpt,
    RankOpt,
    TimeoutOpt,
    open_session,
    resolve_deployment,
)
from splitinfer.errors import ClusterError
from splitinfer.plan import describe_stages


def serve_command(
    plan: PlanArg,
    cluster: ClusterOpt = None,
    model: ModelOpt = None,
    profile: ProfileOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    rank: RankOpt = 1,
    timeout: TimeoutOpt = 30.0,
    max_body: Annotated[int, typer.Option("--max-body-bytes", help="Largest request body accepted.")] = (
        256 * 1024 * 1024),
) -> None:
    """Deploy a plan and serve it over HTTP until Ctrl-C; the workers stop with the server.

    POST /v1/infer takes one .npy array (Content-Type: application/x-npy) or JSON tensors:
    {"inputs": {NAME: {"dtype": "float32", "shape": [1, 3], "data": [...]}}}.
    GET /healthz says whether the deployment is ready (200) or not (503).
    GET /metrics gives Prometheus text: requests, errors, latency histogram, per-stage compute.
    Nothing is encrypted: keep it on a trusted network or put a TLS proxy in front.

    Examples:

      splitinfer serve plan.json --cluster cluster.yaml --model r18.onnx --profile profile.json

      curl --data-binary @x.npy -H 'Content-Type: application/x-npy' localhost:8080/v1/infer -o y.npy

      curl localhost:8080/metrics
    """
    import uvicorn

    from splitinfer.runtime.gateway import make_app

    if not 0 < port < 65536:
        raise ClusterError(f"--port {port} is not a port number", "give a port between 1 and 65535")
    dep = resolve_deployment(plan, cluster, model, profile, rank)
    with open_session(dep, timeout) as session:
        console.print(f"serving {describe_stages(dep.plan)} on http://{host}:{port}  (Ctrl-C stops)",
                      highlight=False)
        # uvicorn handles Ctrl-C itself and returns; the with block then stops the workers
        try:
            uvicorn.run(make_app(session, max_body_bytes=max_body), host=host, port=port, log_level="info")
        except SystemExit as e:  # uvicorn exits when it cannot bind (it has logged why)
            if e.code:
                raise ClusterError(f"cannot serve on {host}:{port}", "pick a free --port or another --host") \
                    from None


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the main app."""
    app.command("serve", no_args_is_help=True)(serve_command)

