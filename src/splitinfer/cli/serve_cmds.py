"""``splitinfer serve``: deploy a plan and serve it over HTTP (Starlette app, run by uvicorn)."""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from splitinfer.cli._common import console, err_console
from splitinfer.cli.generate_cmds import read_tokenizer
from splitinfer.cli.runtime_cmds import (
    CalibrationOpt,
    ClusterOpt,
    ModelOpt,
    PlanArg,
    ProfileOpt,
    RankOpt,
    TimeoutOpt,
    open_session,
    read_calibration,
    resolve_deployment,
)
from splitinfer.errors import InputError, read_file
from splitinfer.plan import describe_stages

if TYPE_CHECKING:
    from splitinfer.data import Preprocess
    from splitinfer.graph import Model


def _read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace dropped), checked as the gateway checks it."""
    from splitinfer.runtime.gateway import check_token

    data = read_file(path, "the token file", "give --token-file a readable file holding the token")
    text = data.decode("utf-8", errors="replace").strip()
    check_token(text, f"the token in --token-file {path}")
    return text


def _image_options(preprocess: str | None, labels: Path | None) -> tuple[Preprocess | None, list[str] | None]:
    """--preprocess parsed and --labels read, before anything binds or deploys."""
    from splitinfer.data import Preprocess, read_labels

    try:
        steps = Preprocess.parse(preprocess) if preprocess is not None else None
    except InputError as e:
        raise InputError(f"--preprocess: {e.problem}", e.fix) from None
    return steps, read_labels(labels) if labels is not None else None


def _check_image_options(model: Model, steps: Preprocess | None, labels: list[str] | None) -> None:
    """--preprocess and --labels against the model, before a worker starts."""
    from splitinfer.runtime.gateway._images import check_labels

    if steps is not None and len(model.inputs) != 1:
        raise InputError(f"--preprocess makes an image into one input, the model has {len(model.inputs)}",
                         "leave out --preprocess: send .npy or JSON")
    if labels is not None:
        check_labels(labels, model.outputs, "--labels")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve_command(
    plan: PlanArg,
    cluster: ClusterOpt = None,
    model: ModelOpt = None,
    profile: ProfileOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (1-65535).")] = 8080,
    rank: RankOpt = 1,
    timeout: TimeoutOpt = 30.0,
    max_body: Annotated[int, typer.Option(
        "--max-body-bytes", help="Largest request body accepted (1 B to 16 GiB); larger: 413.")] = (
        256 * 1024 * 1024),
    body_timeout: Annotated[float, typer.Option(
        "--body-timeout", help="Seconds a request body may take to arrive (0.01-3600); slower: 408.")] = 30.0,
    max_in_flight: Annotated[int, typer.Option(
        "--max-in-flight-per-client", help="Requests one client address may have unanswered (1-10000); "
                                           "more: 429.")] = 8,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", help="File holding the bearer token every request but /healthz must send.",
        show_default=False)] = None,
    certfile: Annotated[Path | None, typer.Option(
        "--certfile", help="TLS certificate (PEM); with --keyfile, serve HTTPS.", show_default=False)] = None,
    keyfile: Annotated[Path | None, typer.Option(
        "--keyfile", help="Private key (PEM) of --certfile.", show_default=False)] = None,
    preprocess: Annotated[str | None, typer.Option(
        "--preprocess", metavar="SPEC", help="How an image body (image/jpeg, image/png) becomes the input, "
                                             "e.g. resize=256,crop=224,norm=imagenet (default: from the "
                                             "input's shape).", show_default=False)] = None,
    labels: Annotated[Path | None, typer.Option(
        "--labels", help="Class names (one per line, or JSON): JSON answers carry the top-5 labels of the "
                         "class scores.", show_default=False)] = None,
    calibration: CalibrationOpt = None,
    tokenizer: Annotated[Path | None, typer.Option(
        "--tokenizer", metavar="FILE", help="A decoder's tokenizer.json (pip install 'splitinfer\\[text]'): "
                                            "/v1/completions then takes a text prompt and answers text too.",
        show_default=False)] = None,
    resource_interval: Annotated[float, typer.Option(
        "--resource-interval", metavar="SECONDS", help="Each worker samples its CPU %, memory and GPU (NVML) "
                                                       "this often; /metrics has them per device. 0: off.")]
    = 0.1,
) -> None:
    """Deploy a plan and serve it over HTTP until Ctrl-C; the workers stop with the server.

    POST /v1/infer takes one .npy array (Content-Type: application/x-npy) or JSON tensors:
    {"inputs": {NAME: {"dtype": "float32", "shape": [1, 3], "data": [...]}}}, or a JPEG or PNG
    image (Content-Type: image/jpeg or image/png; a single-input model), preprocessed as
    --preprocess says; with --labels, JSON answers carry the top-5 class names.
    GET /healthz says whether the deployment is ready (200) or not (503); it needs no token.
    GET /metrics gives Prometheus text: requests, errors, latency histogram, per-stage compute,
    per-device worker CPU %, memory and GPU use (--resource-interval).
    POST /v1/completions (a decoder) takes {"prompt": [464, 2068], "max_tokens": 16, "stream": true}
    and answers token ids, whole or as server-sent events; with --tokenizer the prompt may be text
    and the answer has the text too.
    With --token-file, /v1/infer, /v1/completions and /metrics need "Authorization: Bearer TOKEN" (else 401);
    with --certfile and --keyfile, it serves HTTPS. Every response has an X-Request-Id header.

    Examples:

      splitinfer serve plan.json --cluster cluster.yaml --model r18.onnx --profile profile.json

      curl --data-binary @x.npy -H 'Content-Type: application/x-npy' localhost:8080/v1/infer -o y.npy

      splitinfer serve plan.json --preprocess resize=256,crop=224,norm=imagenet --labels imagenet.txt

      curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg' localhost:8080/v1/infer

      splitinfer serve gpt2-plan.json --tokenizer tokenizer.json

      curl -N localhost:8080/v1/completions -d '{"prompt": "The quick brown fox", "stream": true}'

      splitinfer serve plan.json --host 0.0.0.0 --token-file token.txt --certfile cert.pem --keyfile key.pem

      curl --cacert cert.pem -H "Authorization: Bearer $(cat token.txt)" https://HOST:8080/metrics
    """
    from splitinfer.runtime import gateway

    gateway.check_whole(port, "--port", gateway.PORT_RANGE)
    gateway.check_seconds(timeout, "--timeout", gateway.TIMEOUT_S_RANGE)
    gateway.check_whole(max_body, "--max-body-bytes", gateway.MAX_BODY_BYTES_RANGE, "bytes")
    gateway.check_seconds(body_timeout, "--body-timeout", gateway.BODY_TIMEOUT_S_RANGE)
    if resource_interval:
        gateway.check_seconds(resource_interval, "--resource-interval", gateway.RESOURCE_INTERVAL_S_RANGE)
    gateway.check_whole(max_in_flight, "--max-in-flight-per-client", gateway.MAX_IN_FLIGHT_PER_CLIENT_RANGE,
                        "requests")
    if (certfile is None) != (keyfile is None):
        raise gateway.SettingError("--certfile and --keyfile go together",
                                   "give both (HTTPS) or neither (plain HTTP)")
    token = _read_token(token_file) if token_file is not None else None
    gateway.check_tls(certfile, keyfile)
    steps, names = _image_options(preprocess, labels)
    text = read_tokenizer(tokenizer)
    # Bound before deploying: a busy port or a bad host is one line, and no worker starts for nothing.
    with gateway.listen(host, port) as sock:
        dep = resolve_deployment(plan, cluster, model, profile, rank)
        _check_image_options(dep.model, steps, names)
        if text is not None:  # before a worker starts: a tokenizer of another model is one line
            text.check_fits(dep.model.outputs)
        if token is None and not _is_loopback(host):
            err_console.print(f"warning: serving on {host} without --token-file: anyone who reaches the port "
                              "can use it", highlight=False)
        with open_session(dep, timeout, read_calibration(calibration, dep.model, preprocess)) as session:
            app = gateway.make_app(session, max_body_bytes=max_body, token=token,
                                   max_in_flight_per_client=max_in_flight, body_timeout_s=body_timeout,
                                   preprocess=steps, labels=names, resource_interval_s=resource_interval,
                                   tokenizer=text)
            scheme = "https" if certfile is not None else "http"
            console.print(f"serving {describe_stages(dep.plan)} on {scheme}://{host}:{port}  (Ctrl-C stops)",
                          highlight=False)
            # uvicorn handles Ctrl-C, shuts down, then raises it again; the with block stops the workers
            with contextlib.suppress(KeyboardInterrupt):
                gateway.make_server(app, certfile=certfile, keyfile=keyfile).run(sockets=[sock])


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the main app."""
    app.command("serve", no_args_is_help=True)(serve_command)
