"""Build the planner's :class:`~splitinfer.plan.Problem` from a profile and a cluster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import msgspec
import numpy as np

from splitinfer.cluster import CONFIGURATION_SEP, Cluster
from splitinfer.cluster import Power as ClusterPower
from splitinfer.errors import ProfileError
from splitinfer.plan.exits import ExitMix
from splitinfer.plan.problem import AT_SOURCE, AtSource, DeviceConfiguration, Link, Messaging, Power, Problem
from splitinfer.profile.exit_choice import check_choosable, mix_at
from splitinfer.profile.schema import DeviceProfile, ExitProfile, Profile
from splitinfer.profile.segments import DEFAULT_THRESHOLD, corrected_profile, joins_of
from splitinfer.units import check_number

STATS = ("median_s", "mean_s", "p10_s", "p90_s")


def messaging_of(profile: Profile, names: Sequence[str]) -> dict[str, Messaging]:
    """The hop cost each device's profile measured (``runtime/messaging.py``); absent: not measured."""
    out = {}
    for n in names:
        m = profile.devices[n].messaging
        if m is not None:
            out[n] = Messaging(m.fixed_s, m.s_per_byte)
    return out


def _declared(bandwidth_bps: float, latency_s: float, ends: Sequence[Messaging]) -> tuple[float, float]:
    """A declared link's (bandwidth, latency) with the runtime's messaging added: what the link
    carries, plus what the two ends' hops cost each (their mean; ``Messaging`` is per device)."""
    if not ends:
        return bandwidth_bps, latency_s
    fixed = sum(m.fixed_s for m in ends) / len(ends)
    per_byte = sum(m.s_per_byte for m in ends) / len(ends)
    return 1.0 / (1.0 / bandwidth_bps + per_byte), latency_s + fixed


def _links(profile: Profile, cluster: Cluster | None, names: tuple[str, ...]) -> list[Link]:
    """Cluster-declared numbers first (with the ends' measured messaging added: declared figures are the
    network's), else the profile's measurement (a probe's round trips hold the messaging already);
    neither: not connected."""
    measured = {(x.src, x.dst): x for x in profile.links}
    messaging = messaging_of(profile, names)
    links = []
    for a in names:
        for b in names:
            if a == b:
                continue
            declared = cluster.link(a, b) if cluster is not None else None
            extra = profile.hop_overhead_s
            if declared is not None and declared.bandwidth_bps is not None and declared.latency_s is not None:
                ends = [messaging[n] for n in (a, b) if n in messaging]
                bandwidth, latency = _declared(declared.bandwidth_bps, declared.latency_s, ends)
                links.append(Link(a, b, bandwidth, latency + extra))
            elif (a, b) in measured:
                m = measured[(a, b)]
                links.append(Link(a, b, m.bandwidth_bps, m.latency_s + extra))
            elif declared is not None:
                raise ProfileError(
                    f"link {a}->{b} is to be measured but the profile has no measurement of it",
                    "measure links with `splitinfer profile --cluster ...`, or declare "
                    "bandwidth and latency in cluster.yaml",
                )
    return links


class BlockNeeds(NamedTuple):
    """Per block, what plan/memory.py charges a stage for it (Problem's fields of the same names)."""

    weight_bytes: list[int]
    activation_bytes: list[int]
    created_bytes: list[int]
    moment_bytes: list[int]
    shared_moment_bytes: list[int]


def block_memory(profile: Profile, names: Sequence[str]) -> BlockNeeds:
    """Each block's weights and peak activation bytes: as measured (what its session kept, and the pages
    its first two runs touched beyond their outputs; the most any of ``names`` saw), else as estimated from
    the graph (parameter bytes, the analysis's activation bytes) where no device measured the block. For a
    deploy's creation of its sessions, as measured (0 where not): what creating the block's session
    allocated and kept (its weights less the pages mapped from the partition's file) and held beyond that
    for a moment, and the block's share of the moment of the whole model's session (:func:`_shares`). A
    stage is planned for its deploy's peak: a worker maps a stage's weights from its cache
    (device/_partition_layout.py) and holds their pages and what ONNX Runtime makes of them (pre-packed,
    re-laid-out copies), and for a moment the copies its optimisations make; never the partition's bytes
    besides. Profiling times a block of a stage's size the same way, from the worker's cache
    (wire/partitions.BY_HASH_MIN_BYTES)."""
    out = BlockNeeds([], [], [], [], [])
    shares = [_shares(profile.devices[n], len(profile.blocks)) for n in names]
    for b, info in enumerate(profile.blocks):
        own = [memory[b] for n in names if (memory := profile.devices[n].memory) and memory[b] is not None]
        out.weight_bytes.append(max((m.weight_bytes for m in own), default=info.param_bytes))
        out.activation_bytes.append(max((m.activation_bytes for m in own), default=info.activation_bytes))
        out.created_bytes.append(max((m.weight_bytes - m.mapped_bytes for m in own), default=0))
        out.moment_bytes.append(max((m.transient_bytes for m in own), default=0))
        out.shared_moment_bytes.append(max((s[b] for s in shares), default=0))
    return out


def _shares(device: DeviceProfile, num_blocks: int) -> list[int]:
    """Each block's share of the moment creating the whole model's session held on ``device`` beyond what
    it kept, shared out by the blocks' own moments (0 where either was not measured).

    A stage is one session of many blocks, whose copies come and go one after another and reuse the memory
    freed: the sum of the blocks' own moments (each measured alone) overstates a stage's (resnet18: 153 MB,
    its whole model's 71), their largest understates it. Shared out by their own moments, not by their
    weights: a block that ONNX Runtime re-lays out (a convolution, in its blocked layout) makes copies, a
    fully connected layer pre-packed in place of its original hardly any (resnet18's: 0.8 MB of the 71,
    3.1 by its weights). Measured on this project's machine, the stages of the zoo's plans are predicted so
    within a median 5% of the worker's peak (benchmarks/bench_memory.py; ARCHITECTURE.md: what misses)."""
    memory, whole = device.memory or [None] * num_blocks, device.whole_memory
    moments = [m.transient_bytes if m is not None else 0 for m in memory]
    total = sum(moments)
    if whole is None or total <= 0:
        return [0] * num_blocks
    return [round(whole.transient_bytes * m / total) for m in moments]


def held_cut_cap(profile: Profile, names: Sequence[str]) -> int:
    """The most a stage's inner cut tensors add to its largest block's activations, on any of ``names``:
    what the whole model's first two runs touched beyond its largest block's (0 where either was not
    measured; plan/memory.py).

    A block measured alone hands its output out; a stage holds it in its arena, with the next block's
    tensors, and spreads its working memory over more pages the more cuts it holds, up to what the whole
    model's session touched. Measured on this project's machine as the profiler measures a block (vit_b16
    at width and depth 0.5): blocks 30-31 2.6 MB (their largest 1.4), 25-31 5.1, the whole model 6.0 (its
    largest block 2.3); a convolution network's whole model touches about 1 MB beyond its largest block
    (resnet18: 6.7 against 5.9), so its stages hardly grow.
    """
    out = 0
    for name in names:
        device = profile.devices[name]
        blocks = [m.activation_bytes for m in device.memory or [] if m is not None]
        if device.whole_memory is not None and blocks:
            out = max(out, device.whole_memory.activation_bytes - max(blocks))
    return out


def exit_mix(exits: Sequence[ExitProfile], thresholds: Mapping[str, float | None] | None = None
             ) -> tuple[ExitMix, ...]:
    """The planner's exit mix: as profiled, or at ``thresholds`` (by exit name, None: off; the others as
    profiled)."""
    shares = [e.probability for e in exits]
    if thresholds:
        check_choosable(exits)
        shares = mix_at(exits, [thresholds.get(e.output, e.threshold) for e in exits])[0]  # None stays off
    return tuple(ExitMix(e.output, e.block, p, e.output_bytes) for e, p in zip(exits, shares, strict=True))


def build_problem(
    profile: Profile,
    cluster: Cluster | None = None,
    *,
    stat: str = "median_s",
    sink: str | AtSource | None = AT_SOURCE,
    threshold: float = DEFAULT_THRESHOLD,
    in_flight: int = 1,
    full_depth: bool = False,
    exit_thresholds: Mapping[str, float | None] | None = None,
    context: int = 0,
) -> Problem:
    """The planning problem of ``profile`` on ``cluster``'s devices (or the profile's own).

    ``stat``: which timing statistic to plan with (median_s by default). Memory per
    block: its weights and its peak activation bytes (:func:`block_memory`), charged per
    stage as ``plan/memory.py`` says; a device's capacity comes from the worker (the free
    memory the profile recorded), or the cluster's ``memory`` where that is less. ``sink``
    overrides the cluster's sink. ``threshold``: how far a measured segment may be from its
    prediction before its blocks are corrected (``profile/segments.py``). ``in_flight``: requests a
    stage holds at once (the one it runs and those queued: the concurrency you will run at), whose
    input and output buffers its memory counts. The profile's early exits (how often each answers)
    make latency and energy expected values (``plan/exits.py``), unless ``full_depth``: every request
    runs to the end. ``exit_thresholds``: other thresholds than the profiled ones (the mix they give
    is read off the profiled scores: ``profile/exit_choice.py``). ``context``: a decoder's tokens per
    sequence (prompt and generated): each block's cache for that many tokens of each of ``in_flight``
    sequences is held with its weights (``BlockInfo.state_bytes_per_token``).
    """
    if stat not in STATS:
        raise ProfileError(f"unknown statistic {stat!r}", f"use one of: {', '.join(STATS)}")
    profile = _as_configured(profile, cluster)
    cut_bytes = [b.cut_bytes for b in profile.blocks]
    # The joins as measured; measured segments (refinement) then correct the blocks around them.
    measured_joins = {n: joins_of(d, cut_bytes, stat) for n, d in profile.devices.items()}
    profile = corrected_profile(profile, threshold)
    # Without a cluster: the profile's devices, each as declared (a configuration's entry is no device).
    names = cluster.device_names if cluster is not None else \
        tuple(n for n in profile.devices if CONFIGURATION_SEP not in n)
    if not names:
        raise ProfileError("the profile has no devices", "profile the model on at least one device")
    for name in names:
        if name not in profile.devices:
            raise ProfileError(
                f"device {name!r} is in the cluster but not in the profile",
                f"profile the model on {name} (`splitinfer profile`), or remove it from the cluster",
            )
    compute = {n: _compute(profile.devices[n], stat) for n in names}
    joins = {n: measured_joins[n] for n in names if any(j is not None for j in measured_joins[n])}
    needs = block_memory(profile, names)
    check_number(context, "context", low=0, whole=True, error=ProfileError, fix="tokens per sequence")
    weights = [w + b.state_bytes_per_token * context * in_flight
               for w, b in zip(needs.weight_bytes, profile.blocks, strict=True)]
    capacity = {}
    power = {}
    for n in names:
        declared = cluster.device(n) if cluster is not None else None
        cap = declared.memory_bytes if declared is not None else None
        free = profile.devices[n].memory_bytes  # what the worker had free when profiled
        # cluster.yaml may say less (memory kept for something else), never more than is there.
        known = [c for c in (cap, free) if c is not None]
        capacity[n] = min(known) if known else None
        measured = _power(declared.power if declared is not None else None, profile.devices[n])
        if measured is not None:
            power[n] = measured
    source = cluster.source if cluster is not None else names[0]
    if isinstance(sink, AtSource):
        sink = cluster.sink if cluster is not None else source
    return Problem(
        names,
        compute,
        [round(float(np.mean(b.cut_bytes_seen))) if b.cut_bytes_seen else b.cut_bytes  # varying: the mean
         for b in profile.blocks[:-1]],
        profile.input_bytes,
        profile.output_bytes,
        _links(profile, cluster, names),
        weights,
        needs.activation_bytes,
        capacity,
        power,
        source,
        sink,
        joins,
        in_flight=in_flight,
        messaging=messaging_of(profile, names),
        exits=() if full_depth else exit_mix(profile.exits, exit_thresholds),
        configurations=_configurations(profile, cluster, stat, measured_joins),
        created_bytes=needs.created_bytes,
        moment_bytes=needs.moment_bytes,
        shared_moment_bytes=needs.shared_moment_bytes,
        held_cut_cap_bytes=held_cut_cap(profile, names),
    )


def _as_configured(profile: Profile, cluster: Cluster | None) -> Profile:
    """``profile`` with each device the cluster runs in a configuration (a deployed plan's choice,
    ``Cluster.configured``) read from that configuration's entry, under the device's name."""
    devices_of = cluster.devices if cluster is not None else ()
    moved = {d.name: d.profile_name for d in devices_of if d.configuration}
    if not moved:
        return profile
    devices = dict(profile.devices)
    for name, entry in moved.items():
        if entry not in devices:
            raise ProfileError(f"device {name!r} runs as {entry!r}, which is not in the profile",
                               "profile again with the cluster.yaml that declares it")
        devices[name] = devices[entry]
    return msgspec.structs.replace(profile, devices=devices)


def _compute(device: DeviceProfile, stat: str) -> list[float | None]:
    return [None if s is None else getattr(s, stat) for s in device.blocks]


def _power(declared: ClusterPower | None, device: DeviceProfile) -> Power | None:
    """A device's power figures: cluster.yaml's, with what a power log joined with the profile measured
    (``energy join``: watts per block, idle watts) in their place. A measured device counts in the
    energy objective: its power was measured to be counted."""
    energy = device.energy
    if energy is None or not energy.busy_w:
        if declared is None:
            return None
        p = declared
        return Power(p.busy_w, p.idle_w, p.radio_w, p.radio_j_per_byte, p.battery)
    base = declared or ClusterPower()
    busy = tuple(base.busy_w if w is None else w for w in energy.busy_w)
    idle = base.idle_w if energy.idle_w is None else energy.idle_w
    return Power(base.busy_w, idle, base.radio_w, base.radio_j_per_byte, True, busy_w_blocks=busy)


def _configurations(profile: Profile, cluster: Cluster | None, stat: str,
                    measured_joins: Mapping[str, Sequence[float | None]]
                    ) -> dict[str, list[DeviceConfiguration]]:
    """Each device's configurations (cluster.yaml), costed from their own entries in the profile."""
    out: dict[str, list[DeviceConfiguration]] = {}
    for d in cluster.devices if cluster is not None else ():
        if not d.configurations:
            continue
        configs = []
        for name in d.configuration_names:
            variant = d.configured(name)
            entry = profile.devices.get(variant.profile_name)
            if entry is None:
                raise ProfileError(f"device {d.name!r} configuration {name!r} is not in the profile",
                                   "profile again with this cluster.yaml: `splitinfer profile` measures "
                                   "every configuration (as DEVICE@CONFIGURATION)")
            joins = measured_joins.get(variant.profile_name)
            configs.append(DeviceConfiguration(name, _compute(entry, stat),
                                               joins if joins and any(j is not None for j in joins) else None,
                                               _power(variant.power, entry)))
        out[d.name] = configs
    return out
