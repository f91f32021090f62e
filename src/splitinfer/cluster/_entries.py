"""What a cluster.yaml device entry holds besides its address: power figures, configurations (other ways
to run the device), CurveZMQ files; the limits every number is checked against."""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from splitinfer.errors import ClusterError
from splitinfer.host import max_num_threads
from splitinfer.providers import parse_provider, provider_text
from splitinfer.units import check_number

CLUSTER_SCHEMA = 1
MAX_SLOWDOWN = 10_000.0  # emulation: a device at most this many times slower than the machine it runs on
MAX_LATENCY_S = 3600.0  # a link's one-way latency
Quantity = str | float | int


class Power(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Power figures for energy planning."""

    busy_w: float = 0.0  # drawn while computing
    idle_w: float = 0.0  # drawn while waiting
    radio_w: float = 0.0  # drawn while sending or receiving
    radio_j_per_byte: float = 0.0  # alternative radio model: energy per byte moved
    battery: bool = False  # count this device in the energy objective


CONFIGURATION_SEP = "@"  # a configuration's entry in a profile: DEVICE@CONFIGURATION
DEFAULT_CONFIGURATION = "default"  # the device as declared, always one of its configurations
_CONFIGURATION_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class ProviderEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A provider with options in cluster.yaml's mapping form: ``{name: ..., options: {key: value}}``."""

    name: str
    options: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)


Provider = str | ProviderEntry


def provider_texts(entries: Sequence[Provider], what: str) -> tuple[str, ...]:
    """Providers in their one text form (``splitinfer.providers``), each checked (errors name ``what``)."""
    texts = tuple(e if isinstance(e, str) else provider_text(e.name, e.options) for e in entries)
    for text in texts:
        parse_provider(text, what, ClusterError)
    return texts


class Configuration(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Another way to run a device; a field left out keeps the device's own."""

    name: str
    num_threads: int | None = None
    providers: tuple[Provider, ...] | None = None  # normalized to their text form when the file is read
    slowdown: float | None = None
    power: Power | None = None
    cpu_max_khz: int | None = None  # the CPU's highest clock (cpufreq scaling_max_freq; root on the device)
    gpu_clocks_mhz: tuple[int, int] | None = None  # an NVIDIA GPU's application clocks: memory, graphics


class CurveFiles(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the CurveZMQ keys are (``splitinfer keygen`` writes them)."""

    keys: str | None = None  # a directory: coordinator.key_secret, NAME.key, NAME.key_secret (local)
    coordinator_key: str | None = None  # the coordinator's .key_secret (default: KEYS/coordinator.key_secret)


def check_configurations(device: str, configurations: Sequence[Configuration]) -> None:
    """Each configuration's name and numbers (one line naming the field)."""
    names = [c.name for c in configurations]
    for c in configurations:
        what = f"device {device!r} configuration {c.name!r}"
        if not _CONFIGURATION_NAME.fullmatch(c.name) or c.name == DEFAULT_CONFIGURATION:
            raise ClusterError(f"{what}: the name is not allowed",
                               "use letters, digits, '_', '.' or '-' (at most 64; 'default' is the device "
                               "as declared)")
        if names.count(c.name) > 1:
            raise ClusterError(f"{what} is declared twice", "give each configuration its own name")
        if c.slowdown is not None:
            check_number(c.slowdown, f"{what} slowdown", low=1, high=MAX_SLOWDOWN, error=ClusterError,
                         fix="emulation only adds time (1 = as fast as this machine)")
        if c.num_threads is not None:
            check_number(c.num_threads, f"{what} num_threads", low=0, high=max_num_threads(), whole=True,
                         error=ClusterError, fix="0 = ONNX Runtime's default")
        if c.cpu_max_khz is not None:
            check_number(c.cpu_max_khz, f"{what} cpu_max_khz", low=1, high=100_000_000, whole=True,
                         error=ClusterError, fix="kHz, as cpufreq's scaling_available_frequencies lists them")
        for mhz in c.gpu_clocks_mhz or ():
            check_number(mhz, f"{what} gpu_clocks_mhz", low=1, high=100_000, whole=True, error=ClusterError,
                         fix="[memory, graphics] in MHz, as `nvidia-smi -q -d SUPPORTED_CLOCKS` lists them")
        if c.providers is not None and not c.providers:
            raise ClusterError(f"{what} lists no providers", "list one or more, or leave providers out")
        for key in ("busy_w", "idle_w", "radio_w", "radio_j_per_byte"):
            if c.power is not None:
                check_number(getattr(c.power, key), f"{what} power.{key}", low=0, error=ClusterError)
