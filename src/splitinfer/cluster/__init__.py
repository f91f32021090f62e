"""The cluster: devices and links a plan may use, read from ``cluster.yaml``.

Example::

    schema: 1
    backend: local          # local (emulated continuum) | workers | ray
    source: camera          # where the input appears (default: first device)
    sink: camera            # where the result must arrive (default: source; none = anywhere)
    devices:
      - {name: camera, num_threads: 1, slowdown: 8}
      - {name: edge, slowdown: 2}
      - {name: cloud, address: "tcp://10.0.0.7:5555", providers: [CUDAExecutionProvider]}
    links:
      - {from: camera, to: edge, bandwidth: 20Mbit/s, latency: 5ms}
      - {from: edge, to: cloud, measure: true}

``network: netns`` (root on Linux, local devices) runs each worker in its own
network namespace and lets the kernel enforce link bandwidth (``tc`` HTB);
the default ``software`` emulates links in the sending process.

``curve: {keys: DIR}`` encrypts and authenticates every connection with
CurveZMQ (keys from ``splitinfer keygen -o DIR --cluster cluster.yaml``):
``DIR/coordinator.key_secret`` is the coordinator's pair, ``DIR/NAME.key`` each
device's public key (or the device's ``public_key: FILE``), and a local
device's worker gets ``DIR/NAME.key_secret``. ``mac_tensors: true`` makes the
token's MAC cover tensor and model bytes too (integrity without encryption).

A device may declare ``configurations``: other ways to run it (DIME's DVFS levels), each a name and
what it changes: ``num_threads``, ``providers``, ``slowdown`` (emulation: a lower clock), ``power``
(the watts at that setting)::

    - name: camera
      slowdown: 8
      power: {busy_w: 4.0, idle_w: 1.0, battery: true}
      configurations:
        - {name: powersave, slowdown: 14, power: {busy_w: 1.5, idle_w: 0.8, battery: true}}

``splitinfer profile`` measures each as its own entry (``camera@powersave``) and the planner chooses at
most one configuration per device (the device as declared is the configuration ``default``).

A link applies in both directions unless ``symmetric: false`` or the reverse
pair is listed too. Pairs with no link are not connected. A device's ``threads``
(the key before ``num_threads``) is still read.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec
import yaml

from splitinfer.cluster._entries import (
    CLUSTER_SCHEMA,
    CONFIGURATION_SEP,
    DEFAULT_CONFIGURATION,
    MAX_LATENCY_S,
    MAX_SLOWDOWN,
    Configuration,
    CurveFiles,
    Power,
    Provider,
    Quantity,
    check_configurations,
    provider_texts,
)
from splitinfer.errors import ClusterError, SchemaError, SplitinferError, first_line, read_file
from splitinfer.host import max_num_threads
from splitinfer.units import check_address, check_number, parse_rate_bps, parse_size_bytes, parse_time_s


class Device(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A place that executes: a worker with its providers and threads."""

    name: str
    address: str = "local"  # 'local' = spawned on this machine, else tcp://host:port
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    num_threads: int = 0  # intra-op threads; 0 = ONNX Runtime's default
    memory_bytes: int | None = None  # capacity for planning; None = unlimited
    slowdown: float = 1.0  # emulation: wait (slowdown-1) x compute after each run
    power: Power | None = None
    public_key: str | None = None  # its worker's CURVE public key file (with curve: in the cluster)
    configurations: tuple[Configuration, ...] = ()  # the planner may choose one instead of the default
    configuration: str = ""  # the configuration this device runs in ("": as declared)
    cpu_max_khz: int | None = None  # clocks its configuration sets (None: as they are)
    gpu_clocks_mhz: tuple[int, int] | None = None
    reset_clocks: bool = False  # as declared, after configurations that set clocks: put them back

    @property
    def is_local(self) -> bool:
        return self.address == "local"

    @property
    def profile_name(self) -> str:
        """Its entry in a profile: its name, or NAME@CONFIGURATION when it runs in one."""
        return f"{self.name}{CONFIGURATION_SEP}{self.configuration}" if self.configuration else self.name

    def configured(self, name: str) -> Device:
        """This device in configuration ``name`` (``default``: as declared), with no further choice."""
        if name in ("", DEFAULT_CONFIGURATION):
            sets_clocks = any(c.cpu_max_khz or c.gpu_clocks_mhz for c in self.configurations)
            return msgspec.structs.replace(self, configurations=(),
                                           reset_clocks=self.reset_clocks or sets_clocks)
        for c in self.configurations:
            if c.name == name:
                return msgspec.structs.replace(
                    self, configurations=(), configuration=c.name,
                    num_threads=self.num_threads if c.num_threads is None else c.num_threads,
                    providers=self.providers if c.providers is None else c.providers,
                    slowdown=self.slowdown if c.slowdown is None else c.slowdown,
                    power=self.power if c.power is None else c.power, cpu_max_khz=c.cpu_max_khz,
                    gpu_clocks_mhz=c.gpu_clocks_mhz)
        raise ClusterError(f"device {self.name!r} has no configuration {name!r}",
                           f"use one of: {', '.join(self.configuration_names)}")

    @property
    def configuration_names(self) -> tuple[str, ...]:
        """``default`` and the declared configurations' names."""
        return (DEFAULT_CONFIGURATION, *(c.name for c in self.configurations))


class Link(msgspec.Struct, frozen=True):
    """An ordered pair of devices. ``measure`` links get numbers from probing."""

    src: str
    dst: str
    bandwidth_bps: float | None = None
    latency_s: float | None = None
    measure: bool = False


class _RawDevice(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    address: str = "local"
    providers: list[Provider] = msgspec.field(default_factory=lambda: ["CPUExecutionProvider"])
    num_threads: int | None = None  # neither given: 0, ONNX Runtime's default
    threads: int | None = None  # num_threads' old name, still read (files users already have)
    memory: Quantity | None = None
    slowdown: float = 1.0
    power: Power | None = None
    public_key: str | None = None
    configurations: list[Configuration] = msgspec.field(default_factory=list)


class _RawLink(msgspec.Struct, forbid_unknown_fields=True, rename={"src": "from", "dst": "to"}):
    src: str
    dst: str
    bandwidth: Quantity | None = None
    latency: Quantity | None = None
    measure: bool = False
    symmetric: bool = True


class _RawCluster(msgspec.Struct, forbid_unknown_fields=True):
    devices: list[_RawDevice]
    schema: int = CLUSTER_SCHEMA
    backend: Literal["local", "workers", "ray"] = "local"
    address: str | None = None  # Ray address for backend: ray
    source: str | None = None
    sink: str | None = None
    links: list[_RawLink] = msgspec.field(default_factory=list)
    token_file: str | None = None
    network: Literal["software", "netns"] = "software"
    curve: CurveFiles | None = None
    mac_tensors: bool = False


class Cluster(msgspec.Struct, frozen=True):
    """Devices, links, source and sink. ``sink is None`` = result stays where computed."""

    devices: tuple[Device, ...]
    links: tuple[Link, ...]
    source: str
    sink: str | None
    backend: str = "local"
    address: str | None = None
    token_file: str | None = None
    network: str = "software"  # software: links emulated by the sender | netns: kernel rate limits
    curve: CurveFiles | None = None  # CurveZMQ on every connection (coordinator key resolved)
    mac_tensors: bool = False  # the token's MAC covers tensor and model bytes too

    def device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        raise ClusterError(
            f"unknown device {name!r}",
            f"use one of the cluster's devices: {', '.join(self.device_names)}",
        )

    @property
    def device_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.devices)

    def link(self, src: str, dst: str) -> Link | None:
        for link in self.links:
            if link.src == src and link.dst == dst:
                return link
        return None

    @property
    def has_configurations(self) -> bool:
        return any(d.configurations for d in self.devices)

    def configured(self, chosen: Mapping[str, str]) -> Cluster:
        """The cluster with each device in its ``chosen`` configuration (a device not named: as
        declared) and no further choice: what a plan that chose them runs on."""
        unknown = sorted(set(chosen) - set(self.device_names))
        if unknown:
            raise ClusterError(f"a configuration is chosen for unknown device {unknown[0]!r}",
                               f"use one of the cluster's devices: {', '.join(self.device_names)}")
        return msgspec.structs.replace(
            self, devices=tuple(d.configured(chosen.get(d.name, "")) for d in self.devices))

    def variants(self) -> Cluster:
        """Every configuration of every device as a device of its own (DEVICE@CONFIGURATION, at the
        device's address, with its links): what ``profile`` measures."""
        devices = list(self.devices)
        links = list(self.links)
        for d in self.devices:
            for c in d.configurations:
                variant = d.configured(c.name)
                name = variant.profile_name
                devices.append(msgspec.structs.replace(variant, name=name, configuration=""))
                links += [_moved(link, d.name, name) for link in self.links if d.name in (link.src, link.dst)]
        return msgspec.structs.replace(self, devices=tuple(d.configured("") for d in devices),
                                       links=tuple(links))


def _moved(link: Link, device: str, to: str) -> Link:
    """``link`` with its end at ``device`` moved to ``to``."""
    return msgspec.structs.replace(link, src=to if link.src == device else link.src,
                                   dst=to if link.dst == device else link.dst)


def _build_links(raw: list[_RawLink], names: set[str]) -> tuple[Link, ...]:
    explicit = {(r.src, r.dst) for r in raw}
    links: dict[tuple[str, str], Link] = {}
    for r in raw:
        for end in (r.src, r.dst):
            if end not in names:
                raise ClusterError(
                    f"link {r.src}->{r.dst} names unknown device {end!r}",
                    f"declare it under devices or use one of: {', '.join(sorted(names))}",
                )
        if r.src == r.dst:
            raise ClusterError(f"link {r.src}->{r.dst} connects a device to itself",
                               "remove it: a device needs no link to itself")
        if not r.measure and (r.bandwidth is None or r.latency is None):
            raise ClusterError(
                f"link {r.src}->{r.dst} has no bandwidth or latency",
                "give both (e.g. bandwidth: 20Mbit/s, latency: 5ms) or set measure: true",
            )
        try:
            bw = None if r.bandwidth is None else parse_rate_bps(r.bandwidth)
        except SplitinferError as e:
            raise ClusterError(f"link {r.src}->{r.dst}: {e.problem}", e.fix) from None
        try:
            lat = None if r.latency is None else parse_time_s(r.latency)
        except SplitinferError as e:
            raise ClusterError(f"link {r.src}->{r.dst} latency: {e.problem}", e.fix) from None
        if bw is not None and bw <= 0:
            raise ClusterError(f"link {r.src}->{r.dst} has zero bandwidth",
                               "give a positive bandwidth, or remove the link if not connected")
        if lat is not None and lat > MAX_LATENCY_S:
            raise ClusterError(f"link {r.src}->{r.dst} has latency {lat:g} s",
                               f"give a latency from 0 to {MAX_LATENCY_S:g} s, e.g. 5ms")
        links[(r.src, r.dst)] = Link(r.src, r.dst, bw, lat, r.measure)
        if r.symmetric and (r.dst, r.src) not in explicit:
            links[(r.dst, r.src)] = Link(r.dst, r.src, bw, lat, r.measure)
    return tuple(links.values())


def _build_device(d: _RawDevice) -> Device:
    """A device from its entry, every number and the address checked (one line naming the field)."""
    what = f"device {d.name!r}"
    check_number(d.slowdown, f"{what} slowdown", low=1, high=MAX_SLOWDOWN, error=ClusterError,
                 fix="emulation only adds time (1 = as fast as this machine)")
    if d.num_threads is not None and d.threads is not None:
        raise ClusterError(f"{what} has both num_threads and threads",
                           "keep num_threads (threads is its old name)")
    num_threads = next((n for n in (d.num_threads, d.threads) if n is not None), 0)
    check_number(num_threads, f"{what} num_threads", low=0, high=max_num_threads(), whole=True,
                 error=ClusterError, fix="0 = ONNX Runtime's default; the most is 4 x this machine's CPUs")
    try:
        memory = None if d.memory is None else parse_size_bytes(d.memory)
    except SplitinferError as e:
        raise ClusterError(f"{what}: {e.problem}", e.fix) from None
    if memory is not None:
        check_number(memory, f"{what} memory", low=0, low_open=True, error=ClusterError,
                     fix="in bytes or with a unit, e.g. 2GiB; leave it out for no limit")
    for key in ("busy_w", "idle_w", "radio_w", "radio_j_per_byte"):
        if d.power is not None:
            check_number(getattr(d.power, key), f"{what} power.{key}", low=0, error=ClusterError)
    check_address(d.address, f"{what} address", words=("local",), error=ClusterError)
    check_configurations(d.name, d.configurations)
    configurations = tuple(c if c.providers is None else msgspec.structs.replace(
        c, providers=provider_texts(c.providers, f"{what} configuration {c.name!r} providers"))
        for c in d.configurations)
    return Device(d.name, d.address, provider_texts(d.providers, f"{what} providers"), num_threads, memory,
                  d.slowdown, d.power, d.public_key, configurations)


def _resolve_curve(raw: _RawCluster, devices: list[Device]) -> tuple[CurveFiles | None, list[Device]]:
    """The coordinator's key file and each device's public key file, from ``curve.keys`` unless named."""
    curve = raw.curve
    if curve is None:
        named = next((d.name for d in devices if d.public_key), None)
        if named is not None:
            raise ClusterError(f"device {named!r} has a public_key but the cluster has no curve: section",
                               "add curve: {keys: DIR} (or remove public_key)")
        return None, devices
    keys = Path(curve.keys) if curve.keys else None
    if keys is None and (curve.coordinator_key is None or any(d.public_key is None for d in devices)):
        raise ClusterError("curve: names no keys directory",
                           "add curve: {keys: DIR} (`splitinfer keygen -o DIR --cluster cluster.yaml` "
                           "writes it), or give coordinator_key and every device's public_key")
    if keys is None and any(d.is_local for d in devices):
        raise ClusterError("curve: local workers need their secret keys from curve.keys",
                           "add curve: {keys: DIR} holding NAME.key_secret for each local device")
    if raw.backend == "ray":
        raise ClusterError("curve: is not available with backend: ray yet",
                           "use backend: local or workers with curve:, or Ray's own TLS without it")
    coordinator = curve.coordinator_key or str(keys / "coordinator.key_secret")  # type: ignore[operator]
    resolved = [msgspec.structs.replace(d, public_key=d.public_key or str(keys / f"{d.name}.key"))  # type: ignore[operator]
                for d in devices]
    return CurveFiles(curve.keys, coordinator), resolved


def parse_cluster(data: object) -> Cluster:
    """Validate a decoded cluster document (a dict) and build a :class:`Cluster`."""
    if isinstance(data, dict) and data.get("schema", CLUSTER_SCHEMA) != CLUSTER_SCHEMA:
        raise SchemaError(
            f"cluster file has schema {data.get('schema')!r}, this splitinfer reads {CLUSTER_SCHEMA}",
            "upgrade splitinfer or rewrite the file for this version",
        )
    try:
        raw = msgspec.convert(data, _RawCluster)
    except msgspec.ValidationError as e:
        raise ClusterError(f"invalid cluster: {e}", "fix that field (see `splitinfer --help`)") from None
    if not raw.devices:
        raise ClusterError("cluster has no devices", "list at least one device under devices:")
    names = [d.name for d in raw.devices]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ClusterError(f"device names repeat: {', '.join(dupes)}", "give each device its own name")
    curve, devices = _resolve_curve(raw, [_build_device(d) for d in raw.devices])
    source = raw.source or names[0]
    sink: str | None = source if raw.sink is None else (None if raw.sink == "none" else raw.sink)
    for role, name in (("source", source), ("sink", sink)):
        if name is not None and name not in names:
            raise ClusterError(f"{role} {name!r} is not a device",
                               f"use one of: {', '.join(names)}")
    if raw.backend == "ray" and not raw.address:
        raise ClusterError("backend: ray needs an address", "add address: auto (or ray://host:port)")
    if raw.address is not None:
        check_address(raw.address, "the Ray address", words=("auto",), schemes=("ray",), bare=True,
                      error=ClusterError)
    placed = [d.name for d in raw.devices if d.address != "local"]
    if raw.backend == "ray" and placed:
        raise ClusterError(f"device {placed[0]!r} has an address, but Ray places workers by device resource",
                           "remove the device addresses (start each Ray node with its "
                           "--resources='{\"splitinfer:NAME\": 1}')")
    if raw.network == "netns" and raw.backend != "local":
        raise ClusterError("network: netns emulates links between local workers only",
                           "use backend: local with it, or network: software")
    return Cluster(tuple(devices), _build_links(raw.links, set(names)), source, sink,
                   raw.backend, raw.address, raw.token_file, raw.network, curve, raw.mac_tensors)


def load_cluster(path: str | Path) -> Cluster:
    """Read and validate ``cluster.yaml``."""
    p = Path(path)
    text = read_file(p, "cluster file", "check the path (see `splitinfer demo` for an example file)",
                     ClusterError)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ClusterError(f"{p} is not valid YAML: {first_line(e)}",
                           "fix the YAML syntax") from None
    return parse_cluster(data)


from splitinfer.cluster._dump import dump_cluster  # noqa: E402 (it reads the classes above)

__all__ = ["CLUSTER_SCHEMA", "CONFIGURATION_SEP", "DEFAULT_CONFIGURATION", "MAX_LATENCY_S", "MAX_SLOWDOWN",
           "Cluster", "Configuration", "CurveFiles", "Device", "Link", "Power", "dump_cluster",
           "load_cluster", "parse_cluster"]
