"""The profile file (``profile.json``): measured costs of one model's blocks on devices and links.

The profiler writes it; it can also be written by hand. A tiny complete example
(two blocks, one device, one link; sizes in bytes, times in seconds, bandwidth in
bytes per second)::

    {
      "schema": 1,
      "model": {"sha256": "9f2c...", "name": "tiny", "path": "tiny.onnx"},
      "input_bytes": 602112,
      "output_bytes": 4000,
      "blocks": [
        {"index": 0, "nodes": ["conv1", "relu1"], "flops": 118013952, "num_params": 9408,
         "param_bytes": 37632, "output_bytes": 802816, "cut_bytes": 802816, "activation_bytes": 1605632},
        {"index": 1, "nodes": ["pool", "fc"], "flops": 2048000, "num_params": 513000,
         "param_bytes": 2052000, "output_bytes": 4000, "cut_bytes": 4000, "activation_bytes": 806816}
      ],
      "devices": {
        "camera": {"providers": ["CPUExecutionProvider"], "num_threads": 1, "date": "2026-01-05T10:00:00Z",
                   "host": {"cpu": "Cortex-A72"}, "versions": {"onnxruntime": "1.17.1"},
                   "blocks": [{"median_s": 0.051, "mean_s": 0.052, "p10_s": 0.05, "p90_s": 0.055,
                               "std_s": 0.002, "n": 30}, null]}
      },
      "links": [{"src": "camera", "dst": "edge", "latency_s": 0.005, "bandwidth_bps": 2500000.0,
                 "r2": 0.998, "source": "measured"}]
    }

A ``null`` block entry means the block cannot run on that device. ``cut_bytes``
of block i: bytes crossing the cut after it (the last block's equals the model
output). Files of another ``schema`` version or malformed ones are refused with
a clear error. Profiles of the same model (same sha256) merge: devices and links
are unioned, and on a conflict the newer run (``date``) wins. A device's ``threads``
(the key before ``num_threads``) is still read.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from splitinfer.graph.analysis import DEFAULT_MAX_BLOCKS, DEFAULT_MAX_CUT_TENSORS

PROFILE_SCHEMA = 1
HostValue = str | int | float | bool | None


class Stats(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Summary of repeated timings, in seconds."""

    median_s: float
    mean_s: float
    p10_s: float
    p90_s: float
    std_s: float
    n: int
    ci_rel: float | None = None  # relative half-width of the median's 95% confidence interval
    outliers: int = 0  # runs dropped as outliers (profile/rounds.py): n counts those kept


class ModelInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which model the profile is of, and how its blocks were formed.

    ``analyze(load_model(path, input_shapes=...), max_cut_tensors=..., max_blocks=...)``
    gives back the same blocks: the runtime does exactly that to deploy a plan.
    """

    sha256: str
    name: str
    path: str | None = None
    input_shapes: dict[str, tuple[int, ...]] = msgspec.field(default_factory=dict)  # fixed at load time
    # Inputs fixed to values at load time (``fixed_inputs=``, ``--fix-input``): the model profiled is
    # the one specialised to them, and deploying it specialises it again. Values as nested lists.
    fixed_inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    # Every input size the model's partitions serve (their dims that differ stay symbolic), the profile's
    # own first; each other one is profiled in ``Profile.other_sizes``. Empty: input_shapes only.
    sizes: tuple[dict[str, tuple[int, ...]], ...] = ()
    # Early exits (graph/exits.py): a block ends at each (graph/exit_cuts.analyze_at_exits).
    exits: tuple[str, ...] = ()
    max_cut_tensors: int = DEFAULT_MAX_CUT_TENSORS
    max_blocks: int = DEFAULT_MAX_BLOCKS


class BlockInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One block's static figures (from the graph)."""

    index: int
    nodes: tuple[str, ...] = ()
    flops: int = 0
    num_params: int = 0
    param_bytes: int = 0
    output_bytes: int = 0
    cut_bytes: int = 0  # bytes crossing the cut after this block
    activation_bytes: int = 0  # peak activation memory while the block runs
    # A cut whose size depends on the input values: its bytes on each calibration sample (the planner
    # charges their mean); empty where the cut is the same on every input.
    cut_bytes_seen: tuple[int, ...] = ()
    # A decoder's cache it keeps (graph/state.py): the bytes its presents grow by per token of context.
    state_bytes_per_token: int = 0


class ExitProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An early exit as measured on calibration samples: its rule, the block that makes it, and the
    fraction of all requests that leave there (a request leaves at the first exit whose rule holds for
    every sample of it). ``confidences``: each sample's score under the rule (top probability or
    entropy), to take the fraction at another threshold; empty for an ``onnx`` rule."""

    output: str
    rule: str
    threshold: float | None
    block: int
    probability: float
    output_bytes: int
    num_samples: int
    source: str = ""  # the calibration data, or "generated"
    confidences: tuple[float, ...] = ()
    rule_path: str | None = None
    # Each sample's answer at this exit (top class) against the model's final one: what leaving here
    # costs in agreement, so that a threshold can be chosen within a quality budget.
    agrees: tuple[bool, ...] = ()


class SegmentStats(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Timings of blocks ``first_block..last_block`` run as one partition."""

    first_block: int
    last_block: int
    stats: Stats


class DeviceProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Timings on one device; ``blocks[i]`` None = block i cannot run there."""

    blocks: tuple[Stats | None, ...]
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    num_threads: int = 0  # intra-op threads; 0 = ONNX Runtime's default
    host: dict[str, HostValue] = msgspec.field(default_factory=dict)
    versions: dict[str, str] = msgspec.field(default_factory=dict)
    date: str = ""  # ISO 8601 time of the run
    whole_model: Stats | None = None
    segments: tuple[SegmentStats, ...] = ()
    memory_bytes: int | None = None  # memory available on the device
    # pairs[b]: blocks b and b + 1 timed as one partition (empty: not measured; None: cannot run). What
    # a pair saves against its two blocks apart (one run instead of two, nodes fused across the cut)
    # is what a stage saves at each of its inner cuts: see ``profile.joins``.
    pairs: tuple[Stats | None, ...] = ()
    # A trivial partition's run (one Identity) timed with the blocks: the fixed cost of one run here,
    # which each block's time holds once and a stage pays once (profile/problem.py).
    run_overhead: Stats | None = None
    memory: tuple[BlockMemory | None, ...] = ()  # per block, measured (empty: not measured)
    # What the trivial run's inference session allocated (informational: each block's measure holds its
    # own session's, and summed over a stage's blocks it is about the stage's, so nothing is added per stage)
    session_bytes: int | None = None
    # What the whole model's session added, as ``memory`` per block: a deploy's moment of copies at the
    # scale of a stage of many blocks (``profile/problem.py`` shares its transient out by weights).
    whole_memory: BlockMemory | None = None
    noise: float | None = None  # the median block's p90/p10: how busy the device was while profiled
    remeasured: int = 0  # blocks whose spread stayed wide and were measured again (profile/rounds.py)
    # What the runtime's hop between the coordinator and this device costs: a plan's upload into a first
    # stage on the source and its return from a last stage on the sink (runtime/messaging.py).
    messaging: HopCost | None = None
    energy: DeviceEnergy | None = None  # `profile --energy-window`, joined with power by `energy join`
    # Idle asked before each timed run (0: back to back); a set of partitions under 0.2 ms ran back to
    # back all the same (profile/rounds.py's rule Rest).
    rest_s: float = 0.0


class DeviceEnergy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When each block ran alone, back to back, on the device (its ``windows``, Unix seconds on the
    device's clock), and what a power log or sensor gave for them (``profile/energy_windows.py``).

    ``clock_offset_s``: the device's clock minus the profiling machine's when it was measured (a log
    kept on the profiling machine, e.g. a SmartPower3 on its USB port, is moved by it). After a join:
    ``busy_w[b]`` the mean watts in block b's window, ``block_j[b]`` joules per run (those watts x the
    block's median seconds), ``idle_w`` the watts in ``idle_window`` (the device doing nothing),
    ``source`` the log or sensor."""

    windows: tuple[tuple[float, float] | None, ...]  # per block; None: it cannot run there
    idle_window: tuple[float, float] | None = None
    clock_offset_s: float = 0.0
    busy_w: tuple[float | None, ...] = ()  # empty: not joined yet
    block_j: tuple[float | None, ...] = ()
    idle_w: float | None = None
    source: str = ""


class HopCost(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A hop's cost fitted as ``fixed_s + s_per_byte x bytes`` from hops timed as they ran (``n``)."""

    fixed_s: float
    s_per_byte: float
    n: int = 0


class BlockMemory(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Resident memory one block's partition added on a device: its session when created (weights,
    their pre-packed forms) and its first run beyond its outputs (the pages its working tensors touched)."""

    weight_bytes: int
    activation_bytes: int
    # What creating the session held for a moment beyond what it kept: the partition's bytes, their
    # copies and the parsed model (the peak while it was created, before any run, less what it kept).
    transient_bytes: int = 0
    # Of ``weight_bytes``, the pages mapped from the partition's file: resident once a run reads them,
    # not while the session is created, so not part of a deploy's moment of copies (plan/memory.py).
    mapped_bytes: int = 0


class LinkProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An ordered pair of devices: fitted transfer time = latency_s + bytes / bandwidth_bps."""

    src: str
    dst: str
    latency_s: float
    bandwidth_bps: float
    r2: float | None = None  # goodness of the fit, for measured links
    source: Literal["measured", "declared", "scission"] = "measured"
    date: str = ""


class PrecisionProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One precision besides fp32: each block's quality cost, and per device each block's timing."""

    quality_cost: tuple[float | None, ...]  # per block; None: the block cannot run in this precision
    devices: dict[str, tuple[Stats | None, ...]] = msgspec.field(default_factory=dict)


class CodecTiming(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Seconds one device spends per cut compressing (as the sender) and restoring (as the receiver)."""

    compress_s: tuple[float, ...]
    decompress_s: tuple[float, ...]
    input_compress_s: float | None = None  # the model input, compressed on the source (None: not timed)
    input_decompress_s: float | None = None  # ... and restored by the first stage's device


class CompressionProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One compression besides none: per cut, bytes on the wire and quality cost; per device, seconds."""

    cut_bytes: tuple[int, ...]
    quality_cost: tuple[float, ...]
    devices: dict[str, CodecTiming] = msgspec.field(default_factory=dict)
    input_bytes: int | None = None  # the model input on the wire (None: the upload was not measured)
    input_quality_cost: float | None = None


class TradeoffProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What precisions and compressions cost (``profile/sensitivity.py``, ``profile/tradeoff_profile.py``):
    quality costs are top-1 agreement drops measured alone on ``num_rows`` calibration rows."""

    num_rows: int
    calibration: str = ""
    precisions: dict[str, PrecisionProfile] = msgspec.field(default_factory=dict)
    compressions: dict[str, CompressionProfile] = msgspec.field(default_factory=dict)


class Profile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Measured costs of one model: blocks, devices, links."""

    model: ModelInfo
    blocks: tuple[BlockInfo, ...]
    input_bytes: int
    output_bytes: int
    devices: dict[str, DeviceProfile] = msgspec.field(default_factory=dict)
    links: tuple[LinkProfile, ...] = ()
    schema: int = PROFILE_SCHEMA
    # What the runtime adds to each hop between devices beyond latency + bytes / bandwidth
    # (framing, queues, thread hand-offs), measured by segment refinement; planning adds it.
    hop_overhead_s: float = 0.0
    tradeoffs: TradeoffProfile | None = None  # `splitinfer profile --tradeoffs`
    # The same model and blocks profiled at its other input sizes (``model.sizes``), one profile each,
    # with no further sizes inside: plans are made for one size (profile.sizes.profile_at).
    other_sizes: tuple[Profile, ...] = ()
    exits: tuple[ExitProfile, ...] = ()  # in depth order
