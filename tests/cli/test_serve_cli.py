"""``splitinfer serve``: flags out of range, a busy port, a bad host and unusable TLS or token files are
one line and exit 2 before anything deploys; a real serve with a token over TLS."""

from __future__ import annotations

import inspect
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec
import psutil
import pytest
import yaml
from helpers import deploy as helpers
from helpers.gateway import self_signed

from splitinfer.cli import main
from splitinfer.cli.serve_cmds import _is_loopback, serve_command
from splitinfer.cluster import parse_cluster
from splitinfer.plan import plan_to_json, with_provenance
from splitinfer.profile.files import save_profile
from splitinfer.runtime import gateway

CLUSTER = {"schema": 1, "source": "a",
           "devices": [{"name": "a", "num_threads": 1}, {"name": "b", "num_threads": 1}],
           "links": [{"from": "a", "to": "b", "bandwidth": "1GB/s", "latency": "0.2ms"}]}

BAD_FLAGS = [
    (["--port", "0"], "--port 0 is out of range. give a whole number from 1 to 65535"),
    (["--port", "70000"], "--port 70000 is out of range"),
    (["--port", "-1"], "--port -1 is out of range"),
    (["--max-body-bytes", "-1"], "--max-body-bytes -1 is out of range. give a whole number of bytes from 1"),
    (["--max-body-bytes", "0"], "--max-body-bytes 0 is out of range"),
    (["--max-body-bytes", str(10**14)], "from 1 to 17179869184"),
    (["--max-in-flight-per-client", "0"], "--max-in-flight-per-client 0 is out of range. give a whole number "
                                          "of requests from 1 to 10000"),
    (["--max-in-flight-per-client", "-3"], "--max-in-flight-per-client -3 is out of range"),
    (["--timeout", "0"], "--timeout 0.0 is out of range. give a number of seconds from 0.001 to 86400"),
    (["--timeout", "-1"], "--timeout -1.0 is out of range"),
    (["--timeout", "nan"], "--timeout nan is out of range"),
    (["--timeout", "inf"], "--timeout inf is out of range"),
    (["--timeout", "1e9"], "--timeout 1000000000.0 is out of range"),
    (["--body-timeout", "nan"], "--body-timeout nan is out of range. give a number of seconds from 0.01"),
    (["--certfile", "cert.pem"], "--certfile and --keyfile go together"),
    (["--token-file", "no-such-token.txt"], "cannot read the token file no-such-token.txt"),
    (["--tokenizer", "no-such-tokenizer.json"],
     "--tokenizer: cannot read the tokenizer no-such-tokenizer.json"),
]


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in (captured.err + captured.out).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(("flags", "message"), BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_a_flag_out_of_range_is_one_line_and_exit_2_before_anything_else(tmp_path, capsys, flags, message):
    # The plan does not exist: a check that ran after loading it would say so instead.
    assert main(["serve", str(tmp_path / "missing-plan.json"), *flags]) == 2
    assert message in _one_error_line(capsys)


def test_an_empty_token_file_is_refused(tmp_path, capsys):
    (tmp_path / "token.txt").write_text("  \n")
    assert main(["serve", str(tmp_path / "plan.json"), "--token-file", str(tmp_path / "token.txt")]) == 2
    assert "the token in --token-file" in _one_error_line(capsys)


def test_a_busy_port_or_a_foreign_host_is_one_line_without_uvicorn_noise(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(tmp_path / "missing-plan.json"), "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in _one_error_line(capsys)
    assert main(["serve", str(tmp_path / "missing-plan.json"), "--host", "192.0.2.1"]) == 2
    assert "cannot listen on 192.0.2.1:8080: Cannot assign requested address" in _one_error_line(capsys)


def test_only_loopback_hosts_go_without_a_warning_when_there_is_no_token():
    assert all(_is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "localhost"))
    assert not any(_is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.org"))


def test_the_flags_defaults_are_the_gateways():
    defaults = {name: p.default for name, p in inspect.signature(serve_command).parameters.items()}
    assert defaults["max_body"] == gateway.DEFAULT_MAX_BODY_BYTES
    assert defaults["max_in_flight"] == gateway.DEFAULT_MAX_IN_FLIGHT_PER_CLIENT
    assert defaults["body_timeout"] == gateway.DEFAULT_BODY_TIMEOUT_S


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve_cli")
    data = helpers.model_bytes("resnet18")
    (root / "model.onnx").write_bytes(data)
    (root / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
    cluster = parse_cluster(CLUSTER)
    profile = helpers.fake_profile(data, cluster)
    profile = msgspec.structs.replace(profile, model=msgspec.structs.replace(profile.model,
                                                                            path=str(root / "model.onnx")))
    save_profile(profile, root / "profile.json")
    plan = helpers.pinned_plan(profile, cluster, [(0, "a"), (len(profile.blocks) - 1, "b")])
    plan = with_provenance(plan, profile=str(root / "profile.json"), cluster=str(root / "cluster.yaml"))
    (root / "plan.json").write_text(plan_to_json([plan]))
    return root / "plan.json"


def test_serve_with_a_token_over_tls(plan_file, tmp_path):
    cert, key = self_signed(tmp_path)
    (tmp_path / "token.txt").write_text("s3cret-token\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = Path(sys.executable).parent / "splitinfer"
    proc = subprocess.Popen([str(binary), "serve", str(plan_file), "--port", str(port), "--token-file",
                             str(tmp_path / "token.txt"), "--certfile", str(cert), "--keyfile", str(key)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context, timeout=30) as client:
            end = time.monotonic() + 60
            while time.monotonic() < end:
                try:
                    if client.get("/healthz").status_code == 200:  # open: no token
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            workers = psutil.Process(proc.pid).children(recursive=True)
            doc = {"inputs": {"image": {"dtype": "float32", "shape": [1, 3, 32, 32], "data": [0.0] * 3072}}}
            assert client.post("/v1/infer", json=doc).status_code == 401
            assert client.get("/metrics").status_code == 401
            reply = client.post("/v1/infer", json=doc, headers={"authorization": "Bearer s3cret-token",
                                                                "x-request-id": "cli-request-1"})
            assert reply.status_code == 200 and reply.json()["outputs"]["logits"]["shape"] == [1, 10]
            assert reply.headers["x-request-id"] == "cli-request-1"
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0]
        assert proc.returncode == 0, output
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, "workers left behind"
        assert f"on https://127.0.0.1:{port}" in output
        assert "POST /v1/infer -> 200 in" in output and "[request cli-request-1]" in output
        assert "Uvicorn running" not in output and "Started server process" not in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
