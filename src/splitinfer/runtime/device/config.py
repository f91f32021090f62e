"""A worker's options, and the command-line flags generated from them (declared once)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from splitinfer.errors import SplitinferError
from splitinfer.host import max_num_threads
from splitinfer.providers import parse_provider
from splitinfer.runtime.wire.codec import DEFAULT_MAX_FRAME_BYTES, MAX_HEADER_BYTES
from splitinfer.units import check_number, parse_size_bytes

DEFAULT_CACHE_MAX_BYTES = 4 << 30
MAX_CACHE_BYTES = 1 << 50  # 1 PiB


@dataclass(frozen=True)
class WorkerConfig:
    """Options of one worker process (the CLI flags are generated from these fields)."""

    name: str = field(metadata={"help": "device name of this worker (as in cluster.yaml)"})
    listen: str = field(default="tcp://0.0.0.0:5555",
                        metadata={"help": "address to bind; tcp://127.0.0.1:* picks a free port"})
    providers: tuple[str, ...] = field(default=("CPUExecutionProvider",),
                                       metadata={"help": "ONNX Runtime execution providers, in order; "
                                                         "options as NAME:key=value;key=value"})
    num_threads: int = field(default=0, metadata={"help": "intra-op threads (0 = ONNX Runtime's default)",
                                                "aliases": ("--threads",)})
    token_file: str | None = field(default=None, metadata={
        "help": "file holding the shared token ('-' = read one line from stdin); none = no auth"})
    mac_tensors: bool = field(default=False, metadata={
        "help": "the token's MAC covers tensor and model bytes too: sign them, and refuse messages whose "
                "MAC does not cover theirs (needs --token-file; CURVE protects them anyway)"})
    curve_secret_key: str | None = field(default=None, metadata={
        "help": "this worker's CURVE key pair (NAME.key_secret from `splitinfer keygen`): encrypt and "
                "authenticate every connection; needs --curve-coordinator-keys"})
    curve_coordinator_keys: str | None = field(default=None, metadata={
        "help": "public keys of the coordinators this worker obeys: .key files or directories of them, "
                "comma-separated"})
    curve_peer_keys: str | None = field(default=None, metadata={
        "help": "public keys of the workers that may send this one stage inputs and probes (same forms); "
                "they cannot deploy, undeploy or stop it"})
    max_frame_bytes: int = field(default=DEFAULT_MAX_FRAME_BYTES,
                                 metadata={"help": "largest frame accepted (e.g. 1GiB)"})
    cache_dir: str | None = field(default=None, metadata={
        "help": "folder of the partitions this worker keeps, by SHA-256, so a deploy of one it holds sends "
                "only the hash (default: partitions/NAME in $SPLITINFER_CACHE_DIR or ~/.cache/splitinfer, "
                "or a temporary folder when that cannot be used); one that cannot be written stops the "
                "worker at start"})
    cache_max_bytes: int = field(default=DEFAULT_CACHE_MAX_BYTES, metadata={
        "help": "the most the partition cache holds, pending transfers included (default 4GiB); the least "
                "recently used are evicted first; 0: keep none (deploys carry their partitions)"})
    optimize_ahead: bool = field(default=False, metadata={
        "help": "keep each partition of 1 MiB or more as ONNX Runtime optimized it for this CPU, made once "
                "when it arrives, in a child process: a deploy then peaks at what its stage holds, not at "
                "the copies optimizing makes (resnet18: 58 MB, not 150-170), and creates its session in "
                "milliseconds; each partition's first arrival takes 0.1-0.6 s longer (CPU provider alone)"})
    model_dir: str | None = field(default=None, metadata={
        "help": "a folder of .onnx partitions this device has already: a deploy of one of them (by "
                "SHA-256) needs no transfer"})
    parent_pid: int | None = field(default=None, metadata={
        "help": "exit when this process dies (set by the local launcher)", "hidden": True})
    die_with_parent: bool = field(default=False, metadata={
        "help": "ask the kernel for SIGTERM when the parent thread dies (Linux)", "hidden": True})
    watch_stdin: bool = field(default=False, metadata={
        "help": "exit when stdin closes (set by the local launcher)", "hidden": True})

    def __post_init__(self) -> None:
        check_options(self.num_threads, self.max_frame_bytes, lambda name: name, self.cache_max_bytes)
        if (self.curve_secret_key is None) != (self.curve_coordinator_keys is None):
            raise SplitinferError("CURVE needs this worker's secret key and the coordinator's public keys",
                                  "give curve_secret_key and curve_coordinator_keys together "
                                  "(--curve-secret-key, --curve-coordinator-keys)")
        if self.curve_peer_keys is not None and self.curve_secret_key is None:
            raise SplitinferError("curve_peer_keys is given without curve_secret_key",
                                  "give curve_secret_key and curve_coordinator_keys too")
        if self.mac_tensors and self.token_file is None:
            raise SplitinferError("mac_tensors needs a token to sign with",
                                  "give token_file (--token-file) too")


def check_options(num_threads: object, max_frame_bytes: object, label: Callable[[str], str],
                  cache_max_bytes: object = 0) -> None:
    """SplitinferError naming ``label(field)`` for a thread count or frame limit this machine cannot
    honour: num_threads 0 to 4 x its CPUs, max_frame_bytes from the header limit to its memory;
    cache_max_bytes from 0 to 1 PiB."""
    check_number(num_threads, label("num_threads"), low=0, high=max_num_threads(), whole=True,
                 fix="0 = ONNX Runtime's default; the most is 4 x this machine's CPUs")
    check_number(max_frame_bytes, label("max_frame_bytes"), low=MAX_HEADER_BYTES,
                 high=psutil.virtual_memory().total, whole=True,
                 fix="at most this machine's memory, e.g. 1GiB")
    check_number(cache_max_bytes, label("cache_max_bytes"), low=0, high=MAX_CACHE_BYTES, whole=True,
                 fix="e.g. 20GiB; 0 keeps no partitions")


def _size_of(flag: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return parse_size_bytes(text)
        except SplitinferError as e:
            raise SplitinferError(f"{flag}: {e.problem}", e.fix) from None
    return parse


def build_parser(prog: str = "splitinfer worker") -> argparse.ArgumentParser:
    """Command-line flags generated from :class:`WorkerConfig`'s fields."""
    parser = argparse.ArgumentParser(prog=prog, description="Run a splitinfer device worker.")
    for f in dataclasses.fields(WorkerConfig):
        flags = ["--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        help_text = argparse.SUPPRESS if f.metadata.get("hidden") else f.metadata["help"]
        if f.type == "bool":
            parser.add_argument(*flags, action="store_true", help=help_text)
        elif f.name == "providers":
            parser.add_argument(*flags, nargs="+", default=list(f.default), help=help_text)
        elif f.name in ("max_frame_bytes", "cache_max_bytes"):
            parser.add_argument(*flags, type=_size_of(flags[0]), default=f.default, help=help_text)
        elif f.default is dataclasses.MISSING:
            parser.add_argument(*flags, required=True, help=help_text)
        else:
            kind = int if f.type in ("int", "int | None") else str
            parser.add_argument(*flags, type=kind, default=f.default, help=help_text)
    return parser


def parse_config(argv: list[str], prog: str = "splitinfer worker") -> WorkerConfig:
    """A WorkerConfig from command-line arguments."""
    args = vars(build_parser(prog).parse_args(argv))
    check_options(args["num_threads"], args["max_frame_bytes"], lambda name: "--" + name.replace("_", "-"),
                  args["cache_max_bytes"])
    # "A,B" lists two providers; one with options ("NAME:key=value;key=value") is given alone, since its
    # values may hold commas (OpenVINO's device_type=HETERO:MYRIAD,CPU).
    providers = tuple(p for item in args["providers"]
                      for p in ([item] if ":" in item else item.split(",")) if p)
    for text in providers:
        parse_provider(text, "--providers", SplitinferError)
    return WorkerConfig(**{**args, "providers": providers})
