"""Measuring a model's blocks on one device, through a *runner*.

A runner times one partition on one device: :class:`LocalRunner` runs ONNX
Runtime in this process; a worker's ``WorkerClient`` (runtime layer) does the
same on the worker. Both call :func:`splitinfer.profile.timing.time_partition`:
the inference session created untimed, warm-up, then runs until the median's 95%
confidence half-width is within ``rel_precision`` or the budget is spent; both
return a :class:`~splitinfer.profile.partition_timing.PartitionTiming`.

Every block is timed on the tensors it really gets: calibration inputs (given,
or seeded generated ones of the right dtype and range) run once through the
chain of block partitions here, and each block's inputs are kept. Typical use::

    prepared = prepare_model("resnet18.onnx")

and :mod:`splitinfer.profile.device` profiles a device with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec
import numpy as np

from splitinfer.errors import ModelError, ProfileError, first_line
from splitinfer.graph import Analysis, Model, Partition, analyze, extract_segment, load_model, split
from splitinfer.graph.analysis import DEFAULT_MAX_BLOCKS, DEFAULT_MAX_CUT_TENSORS
from splitinfer.graph.exit_cuts import analyze_at_exits
from splitinfer.graph.exits import Exit, read_exits
from splitinfer.graph.inference import DEFAULT_PROVIDERS, check_providers
from splitinfer.host import host_info, max_num_threads
from splitinfer.profile.calibration import (
    Calibration,
    load_calibration,
    load_calibration_samples,
    run_samples,
)
from splitinfer.profile.cut_sizes import measure_cut_bytes, varying_cut_tensors
from splitinfer.profile.energy_windows import MAX_ENERGY_WINDOW_S
from splitinfer.profile.exit_profile import NUM_GENERATED, exit_tensors, measure_exits
from splitinfer.profile.lazy import CALIBRATION_MEMORY_BYTES, PartitionBytes, TensorSpill
from splitinfer.profile.partition_timing import CompressionTiming, PartitionFailure, PartitionTiming
from splitinfer.profile.schema import BlockInfo, ExitProfile, ModelInfo, Profile
from splitinfer.profile.timing import (
    MAX_PARTITION_BUDGET_S,
    MAX_REST_S,
    MAX_RUNS,
    MAX_WARMUP,
    time_compression,
    time_partition,
    time_partitions,
)
from splitinfer.units import check_number

Progress = Callable[[int, int, str], None]  # (items done, items in all, what runs now)
MAX_BUDGET_S = 7 * 86_400.0  # a week of timed work per device
# A decoder's blocks are timed after this much idle each (ProfileSettings.rest_s): about a decode step of
# the other stages of a small decoder's pipeline; after 10 to 60 ms of idle a run here was from 0.4 to
# 1.2 ms slower than back to back, most of it within the first 30 ms.
DECODER_REST_S = 0.03


class ProfileWarning(UserWarning):
    """Something was left out of a profile (a device that failed, a link not measured)."""


class ProfileInterrupted(KeyboardInterrupt):
    """Ctrl-C while profiling: ``profile`` holds what was measured so far (or None)."""

    def __init__(self, profile: Profile | None) -> None:
        super().__init__("profiling interrupted")
        self.profile = profile


@dataclass(frozen=True)
class ProfileSettings:
    """How long and how precisely to time each partition on a device."""

    budget_s: float = 30.0  # timed work per device, shared by its blocks and the whole model
    num_warmup: int = 3  # untimed runs before timing
    min_runs: int = 5  # at least this many timed runs per partition
    max_runs: int = 200  # at most this many
    rel_precision: float = 0.05  # stop when the median's 95% CI half-width is within this fraction
    min_item_budget_s: float = 0.02  # floor of each partition's share of the budget
    # Also time each pair of adjacent blocks as one partition: what a stage saves at each inner cut
    # (plan/joins.py). Off by default: on a shared 2-core machine the joins measured this way were
    # within the timing noise of the blocks (benchmarks/bench_fidelity.py), and they double the work.
    pairs: bool = False
    # Then run each block alone for this many seconds and idle as long, the windows recorded for a power
    # log to be joined with (profile/energy_windows.py); 0: not.
    energy_window_s: float = 0.0
    # Idle before each timed run (profile/rounds.py's rule Rest); None: DECODER_REST_S for a decoder with
    # a cache (one sequence's decode leaves each stage idle while the others work), else 0 (back to back,
    # as a stage of a loaded pipeline runs).
    rest_s: float | None = None

    def __post_init__(self) -> None:
        def check(name: str, **limits: Any) -> None:
            check_number(getattr(self, name), f"ProfileSettings.{name}", error=ProfileError, **limits)

        check("budget_s", low=0, low_open=True, high=MAX_BUDGET_S, fix="seconds of timed work per device")
        check("num_warmup", low=0, high=MAX_WARMUP, whole=True)
        check("min_runs", low=1, high=MAX_RUNS, whole=True)
        check("max_runs", low=1, high=MAX_RUNS, whole=True)
        check("rel_precision", low=0, high=1)
        check("min_item_budget_s", low=0, low_open=True, high=MAX_PARTITION_BUDGET_S)
        check("energy_window_s", low=0, high=MAX_ENERGY_WINDOW_S,
              fix="seconds each block runs alone while power is logged (0: no energy windows)")
        if self.rest_s is not None:
            check("rest_s", low=0, high=MAX_REST_S,
                  fix="seconds of idle before each timed run (None: automatic)")

    def rest_for(self, model: Model) -> float:
        """The rest before each timed run of ``model``'s partitions: as set, else a decoder's (a model with
        a cache, ``Model.state``) or none."""
        if self.rest_s is not None:
            return self.rest_s
        return DECODER_REST_S if model.state else 0.0

    def item_budget_s(self, num_items: int) -> float:
        """The timed-work budget of each of ``num_items`` partitions."""
        return min(MAX_PARTITION_BUDGET_S, max(self.min_item_budget_s, self.budget_s / max(1, num_items)))


class Runner(Protocol):
    """Times partitions on one device (``LocalRunner``, or the runtime's ``WorkerRunner``)."""

    def profile(self, model_bytes: bytes, feeds: Mapping[str, np.ndarray], *, num_warmup: int, min_runs: int,
                max_runs: int, budget_s: float, rel_precision: float, slowdown: float) -> PartitionTiming:
        """Create an inference session (untimed), warm up, time runs; times scaled by ``slowdown``."""
        ...

    def profile_set(self, parts: Sequence[bytes], feeds: Mapping[str, np.ndarray], *, num_warmup: int,
                    min_runs: int, max_runs: int, budget_s: float, rel_precision: float,
                    slowdown: float, rest_s: float = 0.0) -> list[PartitionTiming | PartitionFailure]:
        """Time partitions of one model together, in interleaved rounds (``feeds``: every tensor any
        takes; ``budget_s``: timed work of the set, and its rests of ``rest_s`` before each run); one
        result per partition, or why it cannot run."""
        ...

    def time_compression(self, arrays: Mapping[str, np.ndarray], compressions: Sequence[str], *,
                         budget_s: float, slowdown: float) -> dict[str, CompressionTiming]:
        """Time compressing and restoring one cut's tensors with each compression; medians scaled by
        ``slowdown``, keyed by the compression's text as given."""
        ...

    def info(self) -> dict[str, Any]:
        """The device: ``splitinfer.host.host_info()`` with its providers and num_threads."""
        ...


class LocalRunner:
    """ONNX Runtime in this process with given providers and threads (Scission's workflow)."""

    def __init__(self, providers: Sequence[str] = DEFAULT_PROVIDERS, num_threads: int = 0) -> None:
        check_providers(providers)  # fail before any block, not once per block
        check_number(num_threads, "num_threads", low=0, high=max_num_threads(), whole=True,
                     error=ProfileError, fix="0 = ONNX Runtime's default; at most 4 x this machine's CPUs")
        self.providers = tuple(providers)
        self.num_threads = num_threads

    def profile(self, model_bytes: bytes, feeds: Mapping[str, np.ndarray], *, num_warmup: int = 3,
                min_runs: int = 5, max_runs: int = 200, budget_s: float = 2.0, rel_precision: float = 0.05,
                slowdown: float = 1.0) -> PartitionTiming:
        """Time one partition here (:func:`~splitinfer.profile.timing.time_partition`)."""
        return time_partition(model_bytes, feeds, providers=self.providers, num_threads=self.num_threads,
                              slowdown=slowdown, num_warmup=num_warmup, min_runs=min_runs, max_runs=max_runs,
                              budget_s=budget_s, rel_precision=rel_precision)

    def profile_set(self, parts: Sequence[bytes], feeds: Mapping[str, np.ndarray], *,
                    num_warmup: int = 3, min_runs: int = 5, max_runs: int = 200, budget_s: float = 2.0,
                    rel_precision: float = 0.05, slowdown: float = 1.0,
                    rest_s: float = 0.0) -> list[PartitionTiming | PartitionFailure]:
        """Time partitions together here (:func:`~splitinfer.profile.timing.time_partitions`)."""
        return time_partitions(parts, feeds, providers=self.providers, num_threads=self.num_threads,
                               slowdown=slowdown, num_warmup=num_warmup, min_runs=min_runs, max_runs=max_runs,
                               budget_s=budget_s, rel_precision=rel_precision, rest_s=rest_s)

    def time_compression(self, arrays: Mapping[str, np.ndarray], compressions: Sequence[str], *,
                         budget_s: float = 0.5, slowdown: float = 1.0) -> dict[str, CompressionTiming]:
        """Time compressions here (:func:`~splitinfer.profile.timing.time_compression`)."""
        return time_compression(arrays, compressions, budget_s=budget_s, slowdown=slowdown)

    def clock_offset_s(self) -> float:
        """The device's clock minus this machine's: this machine is the device."""
        return 0.0

    def info(self) -> dict[str, Any]:
        """This machine (:func:`splitinfer.host.host_info`), its providers and num_threads."""
        return {**host_info(), "providers": list(self.providers), "num_threads": self.num_threads}


# ---- the model prepared for profiling ---------------------------------------------------------
@dataclass
class PreparedModel:
    """A model cut into blocks, each block's partition and the real tensors it gets."""

    model: Model
    analysis: Analysis
    info: ModelInfo
    blocks: tuple[BlockInfo, ...]
    # serialized partition of each block (PartitionBytes: read in when asked, for weights on disk)
    block_bytes: Sequence[bytes]
    block_feeds: list[dict[str, np.ndarray]]  # the tensors each block gets from the calibration input
    # The whole model, None when its weights stay on disk (profile/lazy.py): it is not timed as one
    # partition then, which would hold all of them (and past 2 GB cannot travel as one blob).
    whole_bytes: bytes | None
    whole_feeds: dict[str, np.ndarray]
    exits: tuple[ExitProfile, ...] = ()  # how often each early exit answers (profile/exit_profile.py)
    spill: TensorSpill | None = None  # where calibration tensors over the memory budget are kept
    _segments: dict[tuple[int, int], bytes | Partition] = field(default_factory=dict)
    _segment_inputs: dict[tuple[int, int], list[str]] = field(default_factory=dict)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def segment(self, first_block: int, last_block: int) -> tuple[bytes, dict[str, np.ndarray]]:
        """The partition of blocks ``first_block..last_block`` and its real inputs."""
        if first_block == last_block:
            return self.block_bytes[first_block], self.block_feeds[first_block]
        key = (first_block, last_block)
        if key not in self._segments:
            part = extract_segment(self.model, self.analysis, first_block, last_block)
            missing = [t.name for t in part.inputs if t.name not in self.block_feeds[first_block]
                       and t.name not in self.whole_feeds]
            if missing:  # cannot happen for block bounds: the same tensors cross the same cut
                raise ProfileError(f"segment {first_block}-{last_block} takes {missing}, which block "
                                   f"{first_block} does not get", "this is a splitinfer bug; report it")
            # Weights on disk: the partition kept, its weights read in again each time (profile/lazy.py).
            self._segments[key] = part if part.is_external else part.to_bytes()
            self._segment_inputs[key] = [t.name for t in part.inputs]
        known = {**self.whole_feeds, **self.block_feeds[first_block]}
        held = self._segments[key]
        data = held.blob() if isinstance(held, Partition) else held
        return data, {name: known[name] for name in self._segment_inputs[key]}  # type: ignore[return-value]

    def empty_profile(self) -> Profile:
        """A profile of this model with no devices and no links yet."""
        return Profile(model=self.info, blocks=self.blocks, input_bytes=self.analysis.input_bytes,
                       output_bytes=self.analysis.output_bytes, exits=self.exits)


def _chain_feeds(parts: Sequence[Partition], feeds: Mapping[str, np.ndarray],
                 spill: TensorSpill) -> list[dict[str, np.ndarray]]:
    """Run the block partitions one after the other, one inference session at a time (weights left on
    disk read from there); the inputs each one got, kept by ``spill``."""
    values: dict[str, np.ndarray] = dict(feeds)
    got = []
    for k, part in enumerate(parts):
        inputs = spill.keep({s.name: values[s.name] for s in part.inputs})
        got.append(inputs)
        try:
            session = part.inference_session()
            names = [s.name for s in part.outputs]
            values.update(zip(names, session.run(names, inputs), strict=True))
            del session
        except Exception as e:  # ORT's own exception types
            raise ModelError(f"block {part.index} fails on the calibration input: {first_line(e)}",
                             "check the calibration data (its value range) or the model") from None
        # Only what later blocks take: a CNN's early activations are large.
        later = {s.name for p in parts[k + 1:] for s in p.inputs}
        values = {n: v for n, v in values.items() if n in later}
    return got


def block_infos(analysis: Analysis, model: Model | None = None) -> tuple[BlockInfo, ...]:
    """The profile file's static figures of each block of ``analysis`` (with ``model``: the cache each
    keeps per token, graph/state.py)."""
    per_token = _state_bytes_per_token(model, analysis) if model is not None else {}
    return tuple(BlockInfo(index=b.index, nodes=b.nodes, flops=b.flops, num_params=b.num_params,
                           param_bytes=b.param_bytes, output_bytes=b.output_bytes, cut_bytes=b.cut_bytes,
                           activation_bytes=b.activation_bytes,
                           state_bytes_per_token=per_token.get(b.index, 0))
                 for b in analysis.blocks)


def _state_bytes_per_token(model: Model, analysis: Analysis) -> dict[int, int]:
    """Per block, the bytes its presents hold per token of context: a present [batch, heads, tokens,
    head_dim] over its tokens (Hugging Face's layout)."""
    index = model.graph_index
    block_of = {n: b.index for b in analysis.blocks for n in b.nodes}
    out: dict[int, int] = {}
    for pair in model.state:
        spec, maker = model.tensors.get(pair.present), index.producer.get(pair.present)
        shape = spec.seen or spec.shape if spec is not None else ()
        if maker in block_of and len(shape) == 4 and shape[2] > 0:
            out[block_of[maker]] = out.get(block_of[maker], 0) + spec.num_bytes // shape[2]  # type: ignore[union-attr]
    return out


def _fixed_values(model: Model) -> dict[str, object]:
    """The values the model was specialised to, as plain lists (the profile keeps them)."""
    fixed = model.specialization.fixed if model.specialization is not None else {}
    return {name: np.asarray(value).tolist() for name, value in fixed.items()}


def prepare_model(model: str | Path | bytes | Model | None, *, calibration: Calibration = None,
                  input_shapes: Mapping[str, Sequence[int]] | None = None, batch: int | None = None,
                  max_blocks: int = DEFAULT_MAX_BLOCKS, max_cut_tensors: int = DEFAULT_MAX_CUT_TENSORS,
                  seed: int = 0, feeds: Mapping[str, np.ndarray] | None = None,
                  fixed_inputs: Mapping[str, object] | None = None,
                  sizes: Sequence[Mapping[str, Sequence[int]]] | None = None,
                  cuts_at: Sequence[int] | None = None, exits: Sequence[Exit | str] | None = None,
                  calibration_memory_bytes: int = CALIBRATION_MEMORY_BYTES) -> PreparedModel:
    """Load (if needed), analyze and split ``model``; run the calibration input through its blocks.
    ``input_shapes``, ``batch``, ``feeds``, ``fixed_inputs`` and ``sizes`` go to
    :func:`~splitinfer.graph.load_model` (a :class:`Model` was loaded with its own); ``cuts_at``: the
    blocks' cut positions (another size's, :func:`~splitinfer.graph.analyze`) instead of choosing.
    ``exits``: the model's early exits (default: those its metadata declares, :func:`read_exits`): a
    block ends at each, and how often each answers is measured on the calibration samples.
    ``calibration_memory_bytes``: the tensors blocks get from the calibration input held in memory; past
    that they are kept on disk (:mod:`splitinfer.profile.lazy`)."""
    if model is None:
        raise ProfileError("no model to profile", "give the model file (or a prepared model)")
    if not isinstance(model, Model):
        model = load_model(model, input_shapes=input_shapes, batch=batch, feeds=feeds,
                           fixed_inputs=fixed_inputs, sizes=sizes)
    declared = read_exits(model, exits)
    inputs = load_calibration(model, calibration, seed)  # not ``feeds``: those were given to load
    analysis = analyze(model, max_cut_tensors=max_cut_tensors, max_blocks=max_blocks, cuts_at=cuts_at) \
        if cuts_at is not None else analyze_at_exits(model, declared, max_cut_tensors, max_blocks)
    parts = split(model, [c.position for c in analysis.cuts], analysis)
    info = ModelInfo(sha256=model.sha256, name=model.name, path=str(model.path) if model.path else None,
                     input_shapes={s.name: tuple(s.shape) for s in model.inputs},
                     fixed_inputs=_fixed_values(model), max_cut_tensors=max_cut_tensors,
                     sizes=tuple(model.sizes) if len(model.sizes) > 1 else (),
                     exits=tuple(e.output for e in declared), max_blocks=max_blocks)
    spill = TensorSpill(calibration_memory_bytes)
    on_disk = model.external_dir is not None
    prepared = PreparedModel(model, analysis, info, block_infos(analysis, model), PartitionBytes(parts),
                             _chain_feeds(parts, inputs, spill),
                             None if on_disk else model.proto.SerializeToString(), inputs, spill=spill)
    if (declared or model.dynamic_dims) and cuts_at is None:  # measured on many samples, not one
        samples = [model.make_feeds(seed=seed + i) for i in range(NUM_GENERATED)] if calibration is None \
            else load_calibration_samples(model, calibration, seed)
        source = "generated" if calibration is None else \
            Path(calibration).name if isinstance(calibration, str | Path) else "calibration"
        names = list(dict.fromkeys([*exit_tensors(model, declared), *varying_cut_tensors(model, analysis)]))
        # one run of the whole model per sample, for the exits and the varying cuts alike
        runs = [dict(zip(names, values, strict=True)) for values in run_samples(model, names, samples)] \
            if names else []
        prepared.exits = measure_exits(model, analysis, declared, runs, source)
        seen = measure_cut_bytes(model, analysis, runs)
        prepared.blocks = tuple(msgspec.structs.replace(b, cut_bytes_seen=s) if s else b
                                for b, s in zip(prepared.blocks, seen, strict=True))
    return prepared
