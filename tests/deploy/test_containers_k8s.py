"""Containers and Kubernetes (issue 19, item 4): the manifests `splitinfer k8s` writes agree with the
cluster.yaml it writes beside them, the committed example is what it writes, and, where podman runs and
the worker image exists, a plan runs through three worker containers (containers/run-demo.sh)."""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from helpers.cli import one_error_line, run_cli

from splitinfer.cluster import load_cluster, parse_cluster
from splitinfer.cluster.k8s import KubeOptions, cluster_of_devices, service_name, write_manifests
from splitinfer.errors import ClusterError
from splitinfer.records.plans import load_plan

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS = ROOT / "containers"
IMAGE = os.environ.get("SPLITINFER_IMAGE", "localhost/splitinfer-worker:latest")
CONTINUUM = {  # the demo's, with a name that needs a Service name of its own and a GPU device
    "schema": 1, "backend": "local", "source": "camera", "sink": "camera",
    "devices": [{"name": "camera", "num_threads": 1, "slowdown": 10,
                 "power": {"busy_w": 4.0, "idle_w": 1.0, "battery": True}},
                {"name": "edge_box", "num_threads": 2},
                {"name": "cloud", "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}],
    "links": [{"from": "camera", "to": "edge_box", "bandwidth": "40Mbit/s", "latency": "3ms"},
              {"from": "edge_box", "to": "cloud", "measure": True}],
}


def _documents(folder: Path) -> dict[tuple[str, str], dict]:
    """Every manifest in ``folder`` by (kind, name)."""
    found = {}
    for path in sorted(folder.glob("*.yaml")):
        if path.name in ("cluster.yaml", "kustomization.yaml"):
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def _mounted(pod: dict, container: dict, path: str) -> dict:
    """The volume whose mount holds ``path`` (a file in a mounted folder)."""
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    return next(v for v in pod["volumes"] if v["name"] == mount["name"])


def test_the_manifests_agree_with_the_cluster_yaml_written_beside_them(tmp_path):
    options = KubeOptions(image="registry.example.com/splitinfer-worker:0.1", namespace="edge-ai", port=6000)
    written = write_manifests(parse_cluster(CONTINUUM), tmp_path, options, b"the-token\n")
    cluster = load_cluster(tmp_path / "cluster.yaml")
    assert cluster == written.cluster and cluster.backend == "workers"
    docs = _documents(tmp_path)
    kustomization = yaml.safe_load((tmp_path / "kustomization.yaml").read_text())
    listed = sorted(p.name for p in tmp_path.glob("*.yaml")
                    if p.name not in ("cluster.yaml", "kustomization.yaml"))
    assert sorted(kustomization["resources"]) == listed
    assert all(doc["metadata"].get("namespace") == "edge-ai" for (kind, _), doc in docs.items()
               if kind != "Namespace")
    secret = docs[("Secret", "splitinfer-token")]
    assert base64.b64decode(secret["data"]["token"]) == b"the-token\n"
    assert (tmp_path / "cluster.yaml").read_text() == \
        docs[("ConfigMap", "splitinfer-cluster")]["data"]["cluster.yaml"]
    # The declared continuum is kept: links, power, slowdowns, source and sink.
    assert cluster.link("camera", "edge_box").latency_s == pytest.approx(0.003)
    assert cluster.link("cloud", "edge_box").measure and cluster.device("camera").slowdown == 10
    assert written.labels == ("splitinfer.io/device=camera", "splitinfer.io/device=edge-box",
                              "splitinfer.io/device=cloud")
    for device in cluster.devices:
        name = service_name(device.name)
        deployment = docs[("Deployment", f"splitinfer-worker-{name}")]
        service = docs[("Service", name)]
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        env = _env(container)
        # The worker's name is the device's; its node, its Service and its address are the label's.
        assert env["SPLITINFER_NAME"] == device.name
        assert pod["nodeSelector"] == {"splitinfer.io/device": name}
        assert labels["splitinfer.io/device"] == name
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert service["spec"]["selector"].items() <= labels.items()
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
        # One port, the same in the cluster's address, the worker's listen address, the pod and the Service.
        assert device.address == f"tcp://{name}.edge-ai.svc:6000"
        assert env["SPLITINFER_LISTEN"] == "tcp://0.0.0.0:6000"
        (port,) = container["ports"]
        (service_port,) = service["spec"]["ports"]
        assert port["containerPort"] == service_port["port"] == 6000
        assert service_port["targetPort"] == port["name"] == container["readinessProbe"]["tcpSocket"]["port"]
        # The token: where the Secret is mounted, as the worker is told.
        token = _mounted(pod, container, env["SPLITINFER_TOKEN_FILE"])
        assert token["secret"]["secretName"] == "splitinfer-token"
        assert env.get("SPLITINFER_NUM_THREADS") == (str(device.num_threads) if device.num_threads else None)
        assert container["image"] == options.image
        assert container["securityContext"]["readOnlyRootFilesystem"]
        assert pod["securityContext"]["runAsNonRoot"]
    cloud = docs[("Deployment", "splitinfer-worker-cloud")]["spec"]["template"]["spec"]["containers"][0]
    assert _env(cloud)["SPLITINFER_PROVIDERS"] == "CUDAExecutionProvider,CPUExecutionProvider"
    assert cloud["resources"]["limits"]["nvidia.com/gpu"] == 1
    # The coordinator pod reads the token where cluster.yaml says, and cluster.yaml from the ConfigMap.
    pod = docs[("Deployment", "splitinfer-coordinator")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert _mounted(pod, container, cluster.token_file)["secret"]["secretName"] == "splitinfer-token"
    config = _mounted(pod, container, "/etc/splitinfer/cluster.yaml")
    assert config["configMap"]["name"] == "splitinfer-cluster"
    assert stat.S_IMODE((tmp_path / "secret.yaml").stat().st_mode) == 0o600
    assert "secret.yaml" in (tmp_path / ".gitignore").read_text().split()


def test_curve_keys_become_one_secret_per_pod_with_the_files_its_flags_name(tmp_path, capsys):
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump(CONTINUUM))
    assert run_cli(capsys, "keygen", "-o", tmp_path / "keys", "--cluster", cluster_file)[0] == 0
    out = tmp_path / "k8s"
    write_manifests(load_cluster(cluster_file), out, KubeOptions(), b"t", curve_keys=tmp_path / "keys")
    docs = _documents(out)
    for name, device in (("camera", "camera"), ("edge-box", "edge_box"), ("cloud", "cloud")):
        pod = docs[("Deployment", f"splitinfer-worker-{name}")]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = _env(container)
        files = [env["SPLITINFER_CURVE_SECRET_KEY"], env["SPLITINFER_CURVE_COORDINATOR_KEYS"],
                 *env["SPLITINFER_CURVE_PEER_KEYS"].split(",")]
        secret = docs[("Secret", _mounted(pod, container, files[0])["secret"]["secretName"])]
        assert sorted(Path(f).name for f in files) == sorted(secret["data"])
        assert base64.b64decode(secret["data"][f"{device}.key_secret"]) == \
            (tmp_path / "keys" / f"{device}.key_secret").read_bytes()
    inside = load_cluster(out / "cluster.yaml")  # its keys: the coordinator's Secret, mounted
    pod = docs[("Deployment", "splitinfer-coordinator")]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    secret = docs[("Secret", _mounted(pod, container, inside.curve.coordinator_key)["secret"]["secretName"])]
    assert {Path(inside.curve.coordinator_key).name, *(Path(d.public_key).name for d in inside.devices)} \
        <= set(secret["data"])
    with pytest.raises(ClusterError, match="splitinfer keygen"):
        write_manifests(load_cluster(cluster_file), tmp_path / "k", KubeOptions(), b"t", curve_keys=tmp_path)


def test_the_command_keeps_one_token_and_refuses_what_kubernetes_would(tmp_path, capsys):
    out = tmp_path / "k8s"
    code, said, _ = run_cli(capsys, "k8s", "--device", "camera", "--device", "edge", "-o", out)
    assert code == 0 and "kubectl label node NODE splitinfer.io/device=edge" in said
    token = (out / "token.txt").read_bytes()
    assert stat.S_IMODE((out / "token.txt").stat().st_mode) == 0o600
    assert run_cli(capsys, "k8s", "--device", "camera", "--device", "edge", "-o", out)[0] == 0
    assert (out / "token.txt").read_bytes() == token  # made once, then read
    secret = yaml.safe_load((out / "secret.yaml").read_text())
    assert base64.b64decode(secret["data"]["token"]) == token
    cluster = load_cluster(out / "cluster.yaml")  # every pair of devices measured
    assert {(link.src, link.dst) for link in cluster.links} == {("camera", "edge"), ("edge", "camera")}
    assert all(link.measure for link in cluster.links)
    for args, wanted in ((("--device", "9lives"), "cannot name a Kubernetes Service"),
                         (("--device", "edge_1", "--device", "edge.1"), "share the Service name"),
                         (("--device", "a", "--cluster", out / "cluster.yaml"), "not both or neither"),
                         (("--device", "a", "--namespace", "Edge"), "not a DNS label"),
                         (("--device", "a", "--port", "0"), "port")):
        code, _, err = run_cli(capsys, "k8s", *args, "-o", tmp_path / "bad")
        assert code == 2 and wanted in one_error_line(err)


def test_the_committed_example_is_what_the_command_writes(tmp_path):
    example = ROOT / "deploy" / "k8s"
    write_manifests(cluster_of_devices(["camera", "edge", "cloud"]), tmp_path, KubeOptions(), b"t")
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("secret.yaml", "token.txt"))
    assert sorted(p.name for p in example.iterdir() if p.name not in ("secret.yaml", "token.txt")) == kept
    for name in kept:
        assert (example / name).read_text() == (tmp_path / name).read_text(), (
            f"deploy/k8s/{name} is stale: splitinfer k8s --device camera --device edge --device cloud "
            "-o deploy/k8s (then delete its secret.yaml and token.txt)")


def test_the_manifests_pass_kubernetes_schemas(tmp_path):
    validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed "
                                   "(pip install kubernetes-validate: Kubernetes' own schemas)")
    write_manifests(parse_cluster(CONTINUUM), tmp_path, KubeOptions(), b"t")
    for doc in _documents(tmp_path).values():
        validate.validate(doc, "1.30.0", strict=True)


# --- the real container path -------------------------------------------------------------------------


def _podman_unusable() -> str | None:
    """Why the container test cannot run here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman runc)"
    podman = str(CONTAINERS / "podman.sh")
    if subprocess.run([podman, "image", "exists", IMAGE], capture_output=True).returncode != 0:
        return f"no image {IMAGE}: build it with containers/build.sh (about a minute)"
    # Workers built from other sources may not speak this coordinator's messages.
    label = '{{index .Labels "io.splitinfer.source"}}'
    built = subprocess.run([podman, "image", "inspect", "--format", label, IMAGE], capture_output=True,
                           text=True).stdout.strip()
    here = subprocess.run([str(CONTAINERS / "source-hash.sh")], capture_output=True, text=True).stdout.strip()
    if built != here:
        return (f"{IMAGE} was built from other sources ({built or 'unlabelled'}) than this checkout "
                f"({here}): rebuild it with containers/build.sh")
    trial = subprocess.run([podman, "run", "--rm", "--entrypoint", "true", IMAGE], capture_output=True,
                           text=True, timeout=60)
    if trial.returncode != 0:
        return f"podman cannot run a container here: {(trial.stderr.strip().splitlines() or ['?'])[-1]}"
    return None


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_plan_runs_through_three_worker_containers(tmp_path):
    reason = _podman_unusable()
    if reason is not None:
        pytest.skip(reason)
    prefix = f"splitinfer-test-{os.getpid()}"
    # A small model, few requests, ports and names of its own (a demo may run beside it); the
    # containers stay up for the three-device plan below, and are removed at the end.
    env = {**os.environ, "SPLITINFER_DEMO_DIR": str(tmp_path), "SPLITINFER_DEMO_ZOO_ARGS": "--small",
           "SPLITINFER_DEMO_REQUESTS": "10", "SPLITINFER_DEMO_PORT": "18655",
           "SPLITINFER_DEMO_PREFIX": prefix, "SPLITINFER_DEMO_NO_BUILD": "1", "SPLITINFER_DEMO_KEEP": "1",
           "SPLITINFER_IMAGE": IMAGE}
    splitinfer = str(ROOT / ".venv" / "bin" / "splitinfer") if (ROOT / ".venv").exists() else "splitinfer"
    try:
        done = subprocess.run([str(CONTAINERS / "run-demo.sh")], env=env, capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "same top-1: True" in done.stdout
        rank = yaml.safe_load((tmp_path / "rank.json").read_text())  # JSON is YAML
        assert len(rank["plans"]) >= 1 and all(p["bench"]["num_requests"] == 10 for p in rank["plans"])
        # A plan on all three containers: every hop between them crosses a container boundary.
        subprocess.run([splitinfer, "plan", "p.json", "--cluster", "cluster-containers.yaml", "--require",
                        "edge", "--require", "cloud", "-o", "three.json"], cwd=tmp_path, check=True,
                       capture_output=True)
        assert {s.device for s in load_plan(tmp_path / "three.json").stages} == {"camera", "edge", "cloud"}
        ran = subprocess.run([splitinfer, "run", "three.json", "--input", "x.npy", "-o", "y3.npy"],
                             cwd=tmp_path, capture_output=True, text=True)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
        x = np.load(tmp_path / "x.npy")
        (want,) = session.run(None, {session.get_inputs()[0].name: x})
        np.testing.assert_allclose(np.load(tmp_path / "y3.npy"), want, rtol=1e-4, atol=1e-5)
    finally:
        for device in ("camera", "edge", "cloud"):
            subprocess.run([str(CONTAINERS / "podman.sh"), "rm", "-f", "-t", "2", f"{prefix}-{device}"],
                           capture_output=True)


def test_providers_with_options_reach_the_worker_as_arguments_of_their_own():
    from splitinfer.cluster.k8s import worker_manifests

    ov = "OpenVINOExecutionProvider:device_type=HETERO:MYRIAD,CPU"
    cluster = parse_cluster({"devices": [{"name": "ncs", "providers": [ov, "CPUExecutionProvider"]}]})
    deployment, _ = worker_manifests(cluster.device("ncs"), cluster, KubeOptions())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # A comma-joined variable would make the CPU provider part of OpenVINO's device_type.
    assert container["args"] == ["--providers", ov, "CPUExecutionProvider"]
    assert "SPLITINFER_PROVIDERS" not in _env(container)
