"""Kubernetes manifests for a cluster's workers, and the cluster.yaml that reaches them.

One function writes both (``splitinfer k8s``), so names, labels and ports cannot drift apart. Per
device: a Deployment of one worker on the nodes labelled ``splitinfer.io/device=NAME`` (``kubectl label
node NODE splitinfer.io/device=edge``) and a Service named after the device; the cluster.yaml names each
worker by its Service's DNS name (``tcp://edge.splitinfer.svc:5555``). Besides: the namespace, the
token's Secret, optionally each device's CURVE keys as Secrets, the cluster.yaml as a ConfigMap, and a
coordinator pod in the namespace where ``splitinfer profile/plan/bench`` run. Why a coordinator inside:
the Services' names resolve only in the cluster, and the workers send results to the coordinator's own
address, which a pod has and a laptop outside the cluster usually does not.

The worker image is ``containers/Containerfile``'s (its entrypoint reads the ``SPLITINFER_*`` variables
set here; uid 10001). The devices' links, power, slowdowns and source/sink are the given cluster's.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

import msgspec
import yaml

from splitinfer.cluster import Cluster, CurveFiles, Device, Link, dump_cluster, parse_cluster
from splitinfer.errors import ClusterError
from splitinfer.providers import uses_gpu
from splitinfer.units import check_number

LABEL_KEY = "splitinfer.io/device"
APP = {"app.kubernetes.io/name": "splitinfer"}
TOKEN_DIR = "/run/secrets/splitinfer"  # the token Secret's mount: TOKEN_DIR/token
CURVE_DIR = "/run/secrets/splitinfer-curve"  # a device's (or the coordinator's) CURVE Secret
CONFIG_DIR = "/etc/splitinfer"  # the ConfigMap's mount: CONFIG_DIR/cluster.yaml
TOKEN_SECRET = "splitinfer-token"
UID = 10001  # the image's user (containers/Containerfile)
COORDINATOR = "coordinator"  # its key pair's name (splitinfer keygen) and its Deployment's suffix
HEADER = ("# Written by `splitinfer k8s` (splitinfer/cluster/k8s.py): regenerate rather than edit, so that\n"
          "# the manifests and cluster.yaml stay consistent.\n")
SECRET_FILES = ("secret.yaml", "secret-curve.yaml", "token.txt")  # in OUT/.gitignore
# A DNS-1035 label: what a Service may be named, and so what a device may be called here.
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
# A label key: an optional DNS prefix and '/', then a name of at most 63 characters.
_QUALIFIED_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?"
                            r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}")


@dataclass(frozen=True)
class KubeOptions:
    """Where and how the workers run: the image nodes pull, the namespace, the port, the node label."""

    image: str = "localhost/splitinfer-worker:latest"
    namespace: str = "splitinfer"
    port: int = 5555
    label_key: str = LABEL_KEY
    coordinator: bool = True  # also a coordinator Deployment (and the ConfigMap it reads)

    def __post_init__(self) -> None:
        if not _IMAGE.fullmatch(self.image):
            raise ClusterError(f"image {self.image!r} is not an image reference",
                               "give one like registry.example.com/splitinfer-worker:0.1")
        if not _DNS_LABEL.fullmatch(self.namespace):
            raise ClusterError(f"namespace {self.namespace!r} is not a DNS label",
                               "use lowercase letters, digits and '-', starting with a letter, at most 63")
        check_number(self.port, "port", low=1, high=65535, whole=True, error=ClusterError)
        if not _QUALIFIED_KEY.fullmatch(self.label_key):
            raise ClusterError(f"node label {self.label_key!r} is not a Kubernetes label key",
                               "use PREFIX/NAME, e.g. splitinfer.io/device")


def service_name(device: str) -> str:
    """The Service (and node label value) of ``device``: lowercase, '_' and '.' as '-'; a ClusterError
    when that is still no DNS label."""
    name = device.lower().replace("_", "-").replace(".", "-")
    if not _DNS_LABEL.fullmatch(name):
        raise ClusterError(f"device name {device!r} cannot name a Kubernetes Service",
                           "rename the device: letters, digits, '-' or '_', starting with a letter, "
                           "at most 63 characters")
    return name


def worker_address(device: str, options: KubeOptions) -> str:
    """The address of ``device``'s worker inside the cluster: its Service's DNS name and port."""
    return f"tcp://{service_name(device)}.{options.namespace}.svc:{options.port}"


def kube_cluster(cluster: Cluster, options: KubeOptions, curve: bool = False) -> Cluster:
    """``cluster`` as the coordinator pod sees it: workers at their Services, the token (and keys) where
    the pod mounts them. Its devices, links, power and source/sink are unchanged."""
    names = [service_name(d.name) for d in cluster.devices]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ClusterError(f"two devices would share the Service name {repeated[0]!r}",
                           "rename one: Service names are lowercase, with '-' for '_' and '.'")
    devices = tuple(msgspec.structs.replace(d, address=worker_address(d.name, options), public_key=None)
                    for d in cluster.devices)
    return msgspec.structs.replace(
        cluster, devices=devices, backend="workers", address=None, network="software",
        token_file=f"{TOKEN_DIR}/token", curve=CurveFiles(keys=CURVE_DIR) if curve else None)


def _meta(name: str, options: KubeOptions, labels: dict[str, str] | None = None) -> dict[str, object]:
    return {"name": name, "namespace": options.namespace, "labels": {**APP, **(labels or {})}}


def _secret(name: str, files: dict[str, bytes], options: KubeOptions) -> dict[str, object]:
    data = {key: base64.b64encode(value).decode() for key, value in files.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(name, options), "type": "Opaque",
            "data": data}


def _pod_security() -> dict[str, object]:
    # fsGroup: the Secret volumes' files are group-readable by the image's user (mode 0440 below).
    return {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def _container_security() -> dict[str, object]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}}


def _volumes(curve_secret: str | None) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """The token, the CURVE keys (if any) and a writable /tmp: (volumes, their mounts)."""
    # optional: false is the default; said explicitly, podman 4.3's `kube play` runs these pods too.
    volumes: list[dict[str, object]] = [
        {"name": "token", "secret": {"secretName": TOKEN_SECRET, "defaultMode": 0o440, "optional": False}},
        {"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, object]] = [{"name": "token", "mountPath": TOKEN_DIR, "readOnly": True},
                                       {"name": "tmp", "mountPath": "/tmp"}]
    if curve_secret is not None:
        volumes.append({"name": "curve", "secret": {"secretName": curve_secret, "defaultMode": 0o440,
                                                    "optional": False}})
        mounts.append({"name": "curve", "mountPath": CURVE_DIR, "readOnly": True})
    return volumes, mounts


def worker_manifests(device: Device, cluster: Cluster, options: KubeOptions,
                     curve: bool = False) -> list[dict[str, object]]:
    """``device``'s Deployment (one worker, on the nodes labelled for it) and its Service."""
    name = service_name(device.name)
    labels = {"app.kubernetes.io/component": "worker", options.label_key: name}
    env = [{"name": "SPLITINFER_NAME", "value": device.name},
           {"name": "SPLITINFER_LISTEN", "value": f"tcp://0.0.0.0:{options.port}"},
           {"name": "SPLITINFER_TOKEN_FILE", "value": f"{TOKEN_DIR}/token"}]
    if device.num_threads:
        env.append({"name": "SPLITINFER_NUM_THREADS", "value": str(device.num_threads)})
    args: list[str] = []
    if any(":" in p for p in device.providers):
        # A provider's options may hold commas (device_type=HETERO:MYRIAD,CPU): one argument each.
        args = ["--providers", *device.providers]
    elif device.providers != ("CPUExecutionProvider",):
        env.append({"name": "SPLITINFER_PROVIDERS", "value": ",".join(device.providers)})
    if cluster.mac_tensors:
        env.append({"name": "SPLITINFER_MAC_TENSORS", "value": "1"})
    peers = [d.name for d in cluster.devices if d.name != device.name]
    if curve:
        env += [{"name": "SPLITINFER_CURVE_SECRET_KEY", "value": f"{CURVE_DIR}/{device.name}.key_secret"},
                {"name": "SPLITINFER_CURVE_COORDINATOR_KEYS", "value": f"{CURVE_DIR}/{COORDINATOR}.key"}]
        if peers:
            env.append({"name": "SPLITINFER_CURVE_PEER_KEYS",
                        "value": ",".join(f"{CURVE_DIR}/{p}.key" for p in peers)})
    volumes, mounts = _volumes(f"splitinfer-curve-{name}" if curve else None)
    container: dict[str, object] = {
        "name": "worker", "image": options.image, "imagePullPolicy": "IfNotPresent", "env": env,
        "ports": [{"name": "zmq", "containerPort": options.port, "protocol": "TCP"}],
        # A TCP connect is all a probe can do without the token; the worker drops it unharmed.
        "readinessProbe": {"tcpSocket": {"port": "zmq"}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": "zmq"}, "initialDelaySeconds": 10, "periodSeconds": 20},
        "securityContext": _container_security(), "volumeMounts": mounts}
    if args:
        container["args"] = args
    if uses_gpu(device.providers):
        # The image must then carry onnxruntime-gpu (build it with that instead of onnxruntime).
        container["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(f"splitinfer-worker-{name}", options, labels),
        # One worker per device, replaced rather than rolled: two behind one Service would each get
        # some of a pipeline's stages.
        "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                 "selector": {"matchLabels": {**APP, **labels}},
                 "template": {"metadata": {"labels": {**APP, **labels}}, "spec": {
                     "nodeSelector": {options.label_key: name}, "enableServiceLinks": False,
                     "automountServiceAccountToken": False, "securityContext": _pod_security(),
                     "terminationGracePeriodSeconds": 10, "containers": [container], "volumes": volumes}}}}
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(name, options, labels),
        "spec": {"selector": {**APP, **labels},
                 "ports": [{"name": "zmq", "port": options.port, "targetPort": "zmq", "protocol": "TCP"}]}}
    return [deployment, service]


def coordinator_manifests(cluster_text: str, options: KubeOptions,
                          curve: bool = False) -> list[dict[str, object]]:
    """The ConfigMap holding cluster.yaml and a pod that waits for ``kubectl exec ... splitinfer``."""
    labels = {"app.kubernetes.io/component": COORDINATOR}
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("splitinfer-cluster", options),
              "data": {"cluster.yaml": cluster_text}}
    volumes, mounts = _volumes("splitinfer-curve-coordinator" if curve else None)
    volumes.append({"name": "cluster", "configMap": {"name": "splitinfer-cluster"}})
    mounts.append({"name": "cluster", "mountPath": CONFIG_DIR, "readOnly": True})
    container = {
        "name": COORDINATOR, "image": options.image, "imagePullPolicy": "IfNotPresent",
        # sleep as PID 1 would ignore SIGTERM: the trap lets the pod stop at once.
        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"], "workingDir": "/tmp",
        "securityContext": _container_security(), "volumeMounts": mounts}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(f"splitinfer-{COORDINATOR}", options, labels),
        "spec": {"replicas": 1, "selector": {"matchLabels": {**APP, **labels}},
                 "template": {"metadata": {"labels": {**APP, **labels}}, "spec": {
                     "enableServiceLinks": False, "automountServiceAccountToken": False,
                     "securityContext": _pod_security(), "containers": [container], "volumes": volumes}}}}
    return [config, deployment]


def curve_secrets(cluster: Cluster, keys: Path, options: KubeOptions) -> list[dict[str, object]]:
    """Per device a Secret with its key pair, the coordinator's public key and its peers' public keys;
    the coordinator's with its pair and every device's public key (``splitinfer keygen`` wrote them)."""
    def read(name: str) -> bytes:
        path = keys / name
        try:
            return path.read_bytes()
        except OSError as e:
            raise ClusterError(f"cannot read CURVE key {path}: {e.strerror}", "write the keys first: "
                               f"splitinfer keygen -o {keys} --cluster cluster.yaml") from None

    names = [d.name for d in cluster.devices]
    secrets = [_secret(f"splitinfer-curve-{service_name(name)}", {
        f"{name}.key_secret": read(f"{name}.key_secret"), f"{COORDINATOR}.key": read(f"{COORDINATOR}.key"),
        **{f"{p}.key": read(f"{p}.key") for p in names if p != name}}, options) for name in names]
    secrets.append(_secret(f"splitinfer-curve-{COORDINATOR}", {
        f"{COORDINATOR}.key_secret": read(f"{COORDINATOR}.key_secret"),
        f"{COORDINATOR}.key": read(f"{COORDINATOR}.key"), **{f"{p}.key": read(f"{p}.key") for p in names}},
        options))
    return secrets


def measured_links(names: list[str]) -> tuple[Link, ...]:
    """Every ordered pair of ``names``, to be measured by ``splitinfer profile``: real devices' links."""
    return tuple(Link(a, b, measure=True) for a in names for b in names if a != b)


def cluster_of_devices(names: list[str]) -> Cluster:
    """A cluster of ``names`` (the first is source and sink) with every link measured."""
    doc = {"backend": "workers", "devices": [{"name": n} for n in names],
           "links": [{"from": a, "to": b, "measure": True, "symmetric": False}
                     for a, b in ((link.src, link.dst) for link in measured_links(names))]}
    return parse_cluster(doc)


@dataclass(frozen=True)
class Written:
    """What :func:`write_manifests` wrote: the files, and the nodes' labels to set."""

    files: tuple[Path, ...]
    cluster: Cluster
    labels: tuple[str, ...]  # KEY=VALUE per device, for `kubectl label node NODE KEY=VALUE`


def _dump_all(documents: list[dict[str, object]]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True)


def write_manifests(cluster: Cluster, out: Path, options: KubeOptions, token: bytes,
                    curve_keys: Path | None = None) -> Written:
    """Write the manifests and ``cluster.yaml`` into ``out`` (one file per worker, a kustomization
    listing them). ``secret*.yaml`` hold the token and keys: mode 0600, and ``out/.gitignore`` keeps
    them and ``token.txt`` out of git."""
    curve = curve_keys is not None
    cluster_text = dump_cluster(kube_cluster(cluster, options, curve))
    inside = parse_cluster(yaml.safe_load(cluster_text))  # what the coordinator pod loads must load
    files: dict[str, list[dict[str, object]]] = {
        "namespace.yaml": [{"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": options.namespace, "labels": dict(APP)}}],
        "secret.yaml": [_secret(TOKEN_SECRET, {"token": token.strip() + b"\n"}, options)]}
    if curve_keys is not None:
        files["secret-curve.yaml"] = curve_secrets(cluster, curve_keys, options)
    for d in inside.devices:
        files[f"worker-{service_name(d.name)}.yaml"] = worker_manifests(d, inside, options, curve)
    if options.coordinator:
        files["coordinator.yaml"] = coordinator_manifests(cluster_text, options, curve)
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "resources": list(files)}
    texts = {name: HEADER + _dump_all(documents) for name, documents in files.items()}
    texts["kustomization.yaml"] = HEADER + yaml.safe_dump(kustomization, sort_keys=False)
    texts["cluster.yaml"] = cluster_text
    texts[".gitignore"] = "# the token and the CURVE secret keys: never commit them\n" + "".join(
        f"{name}\n" for name in SECRET_FILES)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        path = out / name
        if name in SECRET_FILES:
            path.touch(mode=0o600)
            path.chmod(0o600)  # also when it existed with a wider mode
        path.write_text(text)
    labels = tuple(f"{options.label_key}={service_name(d.name)}" for d in cluster.devices)
    return Written(tuple(out / name for name in texts), inside, labels)
