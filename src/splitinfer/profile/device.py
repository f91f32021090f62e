"""Profiling one device: its blocks, pairs, the whole model and a trivial run, timed in rounds.

Everything of one model is timed together on the device (:func:`splitinfer.profile.timing.time_partitions`:
interleaved rounds, the outlier and spread rules of :mod:`splitinfer.profile.rounds`), so a burst of
load falls on all blocks alike. The sets are cut at :data:`MAX_SET_BYTES` of partitions so that a
large model's blocks are not all open at once. With the blocks runs a *trivial partition* (one
Identity on one number): the fixed cost of one ONNX Runtime run on the device, which every block's
time holds once and a stage pays once (``DeviceProfile.run_overhead``, used in
``profile/problem.py``). Each block's session also reports the memory it added
(``DeviceProfile.memory``). Typical use::

    from splitinfer.profile.device import profile_model
    profile = profile_model("resnet18.onnx", num_threads=2, budget_s=20)
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from onnx import TensorProto, helper

from splitinfer.errors import ProfileError
from splitinfer.graph import Model
from splitinfer.graph.analysis import DEFAULT_MAX_BLOCKS, DEFAULT_MAX_CUT_TENSORS
from splitinfer.graph.inference import DEFAULT_PROVIDERS
from splitinfer.host import MACHINE_KEYS, library_versions
from splitinfer.profile.calibration import Calibration
from splitinfer.profile.energy_windows import time_energy_windows
from splitinfer.profile.lazy import PartitionBytes
from splitinfer.profile.partition_timing import PartitionFailure, PartitionTiming
from splitinfer.profile.profiler import (
    LocalRunner,
    PreparedModel,
    ProfileInterrupted,
    ProfileSettings,
    ProfileWarning,
    Progress,
    Runner,
    prepare_model,
)
from splitinfer.profile.rounds import kept_runs, spread
from splitinfer.profile.schema import BlockMemory, DeviceEnergy, DeviceProfile, Profile, SegmentStats, Stats
from splitinfer.profile.sizes import measure_sizes
from splitinfer.profile.timing import summarize

MAX_SET_BYTES = 256 << 20  # partitions timed together (open at once) on a device
TRIVIAL_INPUT = "splitinfer.trivial"  # a name no model's tensor has: the trivial run's feed joins others


def trivial_partition(num_floats: int = 1) -> bytes:
    """One Identity on ``num_floats`` floats (input :data:`TRIVIAL_INPUT`, output ``y``): what a run
    costs when the partition computes nothing (and, larger, what handing a tensor to it costs)."""
    shape = [num_floats]
    graph = helper.make_graph([helper.make_node("Identity", [TRIVIAL_INPUT], ["y"])], "trivial",
                              [helper.make_tensor_value_info(TRIVIAL_INPUT, TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7  # what every supported ONNX Runtime reads
    return model.SerializeToString()


@dataclass
class DeviceRecord:
    """What has been measured on one device so far (kept when profiling stops early)."""

    blocks: list[Stats | None]
    whole_model: Stats | None = None
    pairs: list[Stats | None] = field(default_factory=list)
    segments: list[SegmentStats] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # blocks that cannot run there, and why
    complete: bool = False
    run_overhead: Stats | None = None
    memory: list[BlockMemory | None] = field(default_factory=list)
    spreads: list[float] = field(default_factory=list)  # each block's p90/p10 over its kept runs
    remeasured: int = 0  # blocks whose spread stayed wide and were measured again
    session_bytes: int | None = None  # the trivial run's session: what any session costs
    whole_memory: BlockMemory | None = None  # the whole model's session, as a block's
    energy: DeviceEnergy | None = None  # energy windows (profile/energy_windows.py), when asked for
    rest_s: float = 0.0  # idle before each timed run (ProfileSettings.rest_s)

    def to_device_profile(self, providers: Sequence[str], num_threads: int,
                          slowdown: float = 1.0) -> DeviceProfile:
        """The device's entry of the profile file."""
        info = self.info
        host = {k: info[k] for k in MACHINE_KEYS if k in info}
        host["slowdown"] = slowdown
        if not self.complete:
            host["complete"] = False  # stopped early: unmeasured blocks are null
        versions = {k: str(v) for k, v in (info.get("versions") or library_versions()).items()}
        memory = info.get("memory_available_bytes")
        finite = [s for s in self.spreads if math.isfinite(s)]
        return DeviceProfile(blocks=tuple(self.blocks), providers=tuple(info.get("providers", providers)),
                             num_threads=int(info.get("num_threads", num_threads)), host=host,
                             versions=versions,
                             date=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                             whole_model=self.whole_model, segments=tuple(self.segments),
                             memory_bytes=int(memory) if memory is not None else None,
                             pairs=tuple(self.pairs) if len(self.pairs) == len(self.blocks) - 1 else (),
                             run_overhead=self.run_overhead,
                             memory=tuple(self.memory) if len(self.memory) == len(self.blocks) else (),
                             noise=statistics.median(finite) if finite else None, remeasured=self.remeasured,
                             session_bytes=self.session_bytes, energy=self.energy,
                             whole_memory=self.whole_memory, rest_s=self.rest_s)


@dataclass(frozen=True)
class _Item:
    """One partition to time: what it is (for progress and failures), how to have its bytes (read in only
    when its set is timed, for weights left on disk), their size, and its feeds."""

    what: str
    load: Callable[[], bytes]
    size: int
    feeds: Mapping[str, np.ndarray]

    @classmethod
    def of(cls, what: str, part: bytes, feeds: Mapping[str, np.ndarray]) -> _Item:
        """A partition already in memory."""
        return cls(what, lambda: part, len(part), feeds)


def _block(prepared: PreparedModel, i: int) -> _Item:
    parts, feeds = prepared.block_bytes, prepared.block_feeds[i]
    if isinstance(parts, PartitionBytes):
        return _Item(f"block {i}", lambda: parts[i], parts.nbytes(i), feeds)
    return _Item.of(f"block {i}", parts[i], feeds)


def _sets(items: list[_Item]) -> list[list[_Item]]:
    """``items`` in order, cut into sets of at most MAX_SET_BYTES of partitions (at least one each)."""
    sets: list[list[_Item]] = [[]]
    size = 0
    for item in items:
        if sets[-1] and size + item.size > MAX_SET_BYTES:
            sets.append([])
            size = 0
        sets[-1].append(item)
        size += item.size
    return [s for s in sets if s]


def _time_sets(runner: Runner, items: list[_Item], settings: ProfileSettings, budget_per_item_s: float,
               slowdown: float, rest_s: float, progress: Progress | None, done: int,
               total: int) -> list[PartitionTiming | PartitionFailure]:
    out: list[PartitionTiming | PartitionFailure] = []
    for group in _sets(items):
        if progress:
            names = group[0].what if len(group) == 1 else f"{group[0].what} .. {group[-1].what}"
            progress(done, total, f"{names} in rounds")
        feeds: dict[str, np.ndarray] = {}
        for item in group:
            feeds.update(item.feeds)
        out += runner.profile_set([item.load() for item in group], feeds, num_warmup=settings.num_warmup,
                                  min_runs=settings.min_runs, max_runs=settings.max_runs,
                                  budget_s=budget_per_item_s * len(group),
                                  rel_precision=settings.rel_precision, slowdown=slowdown, rest_s=rest_s)
        done += len(group)
    return out


def profile_device(runner: Runner, prepared: PreparedModel, settings: ProfileSettings | None = None, *,
                   slowdown: float = 1.0, progress: Progress | None = None,
                   record: DeviceRecord | None = None) -> DeviceRecord:
    """Time a trivial run, every block and the whole model together, then each pair of adjacent
    blocks (``settings.pairs``), on the runner's device.

    A block the device cannot run (ONNX Runtime refuses it) is recorded as None
    with the reason in ``failures``; a device that stops answering raises
    :class:`DeadlineError`. ``record`` (filled as it goes) keeps the finished
    sets when the caller is interrupted.
    """
    settings = settings or ProfileSettings()
    num = prepared.num_blocks
    record = record if record is not None else DeviceRecord([None] * num)
    record.info = runner.info()
    record.rest_s = settings.rest_for(prepared.model)
    num_pairs = num - 1 if settings.pairs else 0
    total = num + num_pairs + 1 + (prepared.whole_bytes is not None)
    budget = settings.item_budget_s(total)
    items = [_Item.of("trivial run", trivial_partition(), {TRIVIAL_INPUT: np.zeros(1, np.float32)})]
    items += [_block(prepared, i) for i in range(num)]
    if prepared.whole_bytes is not None:
        items.append(_Item.of("whole model", prepared.whole_bytes, prepared.whole_feeds))
    results = _time_sets(runner, items, settings, budget, slowdown, record.rest_s, progress, 0, total)
    for item, result in zip(items, results, strict=True):
        if isinstance(result, PartitionFailure):
            record.failures.append(_failure(item, result))
    trivial, *blocks = results[:1 + num]
    whole = results[-1] if prepared.whole_bytes is not None else None
    if all(isinstance(b, PartitionFailure) for b in blocks):
        raise ProfileError(f"no block of {prepared.info.name} runs on this device ({record.failures[-1]})",
                           "check the device's providers, or the model with `splitinfer inspect`")
    record.run_overhead = _stats(trivial)
    record.session_bytes = None if isinstance(trivial, PartitionFailure) else trivial.weight_bytes
    record.blocks = [_stats(b) for b in blocks]
    record.memory = [_memory(b) for b in blocks]
    record.spreads = [spread(kept_runs(b.times_s)) for b in blocks if isinstance(b, PartitionTiming)]
    record.remeasured = sum(isinstance(b, PartitionTiming) and b.remeasured for b in blocks)
    record.whole_model = None if whole is None else _stats(whole)
    record.whole_memory = _memory(whole) if whole is not None else None
    runnable = [i for i in range(num_pairs) if None not in (record.blocks[i], record.blocks[i + 1])]
    pairs = [_Item.of(f"blocks {i}-{i + 1}", *prepared.segment(i, i + 1)) for i in runnable]
    timed = _time_sets(runner, pairs, settings, budget, slowdown, record.rest_s, progress, len(items), total)
    record.pairs = [None] * num_pairs  # only now: an interrupted profile has no pairs, not failed ones
    for i, item, result in zip(runnable, pairs, timed, strict=True):
        record.pairs[i] = _stats(result)
        if isinstance(result, PartitionFailure):
            record.failures.append(_failure(item, result))
    if settings.energy_window_s:
        record.energy = time_energy_windows(runner, prepared.block_bytes, prepared.block_feeds,
                                            window_s=settings.energy_window_s, slowdown=slowdown,
                                            blocks=record.blocks, progress=progress)
    record.complete = True
    if progress:
        progress(total, total, "done")
    return record


def _failure(item: _Item, failure: PartitionFailure) -> str:
    """What ``profile`` warns of a partition that cannot run: which one, and the problem."""
    return f"{item.what}: {getattr(failure.error, 'problem', failure.error)}"


def _memory(result: PartitionTiming | PartitionFailure) -> BlockMemory | None:
    if isinstance(result, PartitionFailure) or result.weight_bytes is None:
        return None
    return BlockMemory(result.weight_bytes, result.activation_bytes or 0, result.transient_bytes or 0,
                       result.mapped_bytes or 0)


def _stats(result: PartitionTiming | PartitionFailure) -> Stats | None:
    return None if isinstance(result, PartitionFailure) else summarize(result.times_s)


def profile_segments(runner: Runner, prepared: PreparedModel, segments: Sequence[tuple[int, int]],
                     settings: ProfileSettings | None = None, *, slowdown: float = 1.0) -> list[SegmentStats]:
    """Time the segments (blocks first..last run as one partition) together on the runner's device;
    the first that cannot run raises its error."""
    settings = settings or ProfileSettings()
    items = [_Item.of(f"segment {first}-{last}", *prepared.segment(first, last)) for first, last in segments]
    results = _time_sets(runner, items, settings, settings.item_budget_s(max(1, len(items))), slowdown,
                         settings.rest_for(prepared.model), None, 0, len(items))
    out = []
    for (first, last), result in zip(segments, results, strict=True):
        if isinstance(result, PartitionFailure):
            raise result.error
        out.append(SegmentStats(first, last, summarize(result.times_s)))
    return out


def sum_of_blocks_s(device: DeviceProfile, first_block: int = 0,
                    last_block: int | None = None) -> float | None:
    """Sum of the block medians of ``first_block..last_block`` on a device (None if one is missing)."""
    blocks = device.blocks[first_block:None if last_block is None else last_block + 1]
    if any(b is None for b in blocks):
        return None
    return math.fsum(b.median_s for b in blocks if b is not None)


def profile_model(model: str | Path | bytes | Model | None, *, device_name: str = "local",
                  providers: Sequence[str] = DEFAULT_PROVIDERS, num_threads: int = 0,
                  slowdown: float = 1.0, calibration: Calibration = None,
                  input_shapes: Mapping[str, Sequence[int]] | None = None, batch: int | None = None,
                  max_blocks: int = DEFAULT_MAX_BLOCKS, max_cut_tensors: int = DEFAULT_MAX_CUT_TENSORS,
                  budget_s: float = 30.0,
                  settings: ProfileSettings | None = None, progress: Progress | None = None,
                  prepared: PreparedModel | None = None,
                  sizes: Sequence[Mapping[str, Sequence[int]]] | None = None) -> Profile:
    """Profile ``model`` on this machine as one device named ``device_name``; a model that serves
    several input sizes (``sizes=``, :func:`~splitinfer.graph.load_model`) at each of them.

    Run it on every device and merge the files (``merge_profiles``), or profile a
    whole cluster through its workers with ``splitinfer.runtime.profiling.profile_cluster``.
    """
    settings = settings or ProfileSettings(budget_s=budget_s)
    prepared = prepared or prepare_model(model, calibration=calibration, input_shapes=input_shapes,
                                         batch=batch, max_blocks=max_blocks, max_cut_tensors=max_cut_tensors,
                                         sizes=sizes)
    return measure_sizes(prepared, lambda one: _profile_here(one, device_name, providers, num_threads,
                                                             slowdown, settings, progress))


def _profile_here(prepared: PreparedModel, device_name: str, providers: Sequence[str], num_threads: int,
                  slowdown: float, settings: ProfileSettings, progress: Progress | None) -> Profile:
    """:func:`profile_model` of one prepared model (one size)."""
    runner = LocalRunner(providers, num_threads)
    record = DeviceRecord([None] * prepared.num_blocks)
    profile = prepared.empty_profile()
    try:
        profile_device(runner, prepared, settings, slowdown=slowdown, progress=progress, record=record)
    except KeyboardInterrupt:
        partial = None
        if any(b is not None for b in record.blocks):
            device = record.to_device_profile(providers, num_threads, slowdown)
            partial = msgspec.structs.replace(profile, devices={device_name: device})
        raise ProfileInterrupted(partial) from None
    for failure in record.failures:
        warnings.warn(ProfileWarning(f"{device_name}: {failure}"), stacklevel=2)
    device = record.to_device_profile(providers, num_threads, slowdown)
    return msgspec.structs.replace(profile, devices={device_name: device})
