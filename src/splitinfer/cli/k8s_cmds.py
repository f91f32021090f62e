"""``splitinfer k8s``: Kubernetes manifests for a cluster's workers and the cluster.yaml that reaches
them (the library's :func:`splitinfer.cluster.k8s.write_manifests`)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

import typer

from splitinfer.cli._common import check_folder, console
from splitinfer.errors import ClusterError, read_file


def _token(token_file: Path | None, out: Path) -> tuple[bytes, str]:
    """The token for the Secret, and where it came from: --token-file, OUT/token.txt, or a new one."""
    path = token_file if token_file is not None else out / "token.txt"
    if token_file is not None or path.is_file():
        token = read_file(path, "token file", "give --token-file a file holding the shared token",
                          ClusterError).strip()
        if not token:
            raise ClusterError(f"token file {path} is empty",
                               "put a long random string in it, or leave out --token-file for a new one")
        return token, f"the token of {path}"
    token = secrets.token_hex(32).encode()
    out.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_bytes(token + b"\n")
    return token, f"a new token, also in {path}"


def k8s_command(
    output: Annotated[Path, typer.Option("-o", "--output",
                                         help="Folder for the manifests (made if missing).")],
    cluster: Annotated[Path | None, typer.Option(
        "--cluster", help="cluster.yaml whose devices, links, power and source/sink to keep (its "
                          "addresses are replaced by the workers' Services).", show_default=False)] = None,
    devices: Annotated[list[str] | None, typer.Option(
        "--device", help="A device (repeatable; the first is source and sink), instead of --cluster: "
                         "every link between them is measured by `splitinfer profile`.",
        show_default=False)] = None,
    image: Annotated[str, typer.Option("--image", help="The worker image the nodes pull "
                                                       "(containers/Containerfile's).")]
    = "localhost/splitinfer-worker:latest",
    namespace: Annotated[str, typer.Option("--namespace", help="Namespace of everything written.")]
    = "splitinfer",
    port: Annotated[int, typer.Option("--port", help="Port of every worker and its Service.")] = 5555,
    label_key: Annotated[str, typer.Option("--node-label", help="Node label that places each device's "
                                                                "worker (its value: the device).")]
    = "splitinfer.io/device",
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", help="The shared token for the Secret (default: OUT/token.txt, made if missing).",
        show_default=False)] = None,
    curve_keys: Annotated[Path | None, typer.Option(
        "--curve-keys", help="Folder from `splitinfer keygen -o DIR --cluster ...`: CURVE on every "
                             "connection, each pod's keys in a Secret.", show_default=False)] = None,
    coordinator: Annotated[bool, typer.Option(
        "--coordinator/--no-coordinator", help="Also a coordinator pod (and the ConfigMap of cluster.yaml "
                                               "it reads), where profile, plan and bench run.")] = True,
) -> None:
    """Write Kubernetes manifests for a cluster's workers, and the cluster.yaml that reaches them.

    Per device: a Deployment of one worker on the nodes labelled splitinfer.io/device=NAME, and a
    Service named after the device; cluster.yaml names each worker by its Service's DNS name
    (tcp://edge.splitinfer.svc:5555). Also the namespace, the token's Secret (secret.yaml, mode 0600,
    kept out of git by OUT/.gitignore), CURVE keys' Secrets with --curve-keys, and a coordinator pod
    with cluster.yaml mounted at /etc/splitinfer/cluster.yaml. Examples:

      splitinfer k8s --device camera --device edge --device cloud -o deploy/k8s

      splitinfer k8s --cluster cluster.yaml --image registry.example.com/splitinfer-worker:0.1 -o k8s/

    Then: kubectl label node NODE splitinfer.io/device=edge (one node per device), kubectl apply -k
    OUT, and kubectl -n splitinfer exec deploy/splitinfer-coordinator -- splitinfer profile MODEL
    --cluster /etc/splitinfer/cluster.yaml -o p.json (copy the model in with kubectl cp first).
    """
    from splitinfer.cluster import load_cluster
    from splitinfer.cluster.k8s import KubeOptions, cluster_of_devices, write_manifests

    check_folder(output, "-o")
    if (cluster is None) == (not devices):
        raise ClusterError("give the devices either with --cluster or with --device, not both or neither",
                           "e.g. --device camera --device edge --device cloud")
    options = KubeOptions(image=image, namespace=namespace, port=port, label_key=label_key,
                          coordinator=coordinator)
    found = load_cluster(cluster) if cluster is not None else cluster_of_devices(list(devices or []))
    token, source = _token(token_file, output)
    written = write_manifests(found, output, options, token, curve_keys)
    for path in written.files:
        console.print(f"wrote {path}", highlight=False)
    console.print(f"the Secret holds {source}; secret*.yaml and token.txt are in {output}/.gitignore",
                  highlight=False)
    console.print("next: label one node per device, then apply:", highlight=False)
    for label in written.labels:
        console.print(f"  kubectl label node NODE {label}", highlight=False)
    console.print(f"  kubectl apply -k {output}", highlight=False)
    if coordinator:
        console.print(f"  kubectl -n {namespace} exec deploy/splitinfer-coordinator -- splitinfer profile "
                      "MODEL --cluster /etc/splitinfer/cluster.yaml -o p.json", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the main app."""
    app.command("k8s", no_args_is_help=True)(k8s_command)
