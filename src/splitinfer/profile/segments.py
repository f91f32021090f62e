"""Segment costs: when blocks run together as one partition they may take more or less than
the sum of their separate times (ONNX Runtime fuses nodes across block bounds; each
partition run has a fixed overhead). The profile's pairs predict that (``plan/joins.py``);
measured segments (refinement) correct what the planner sees where the prediction missed: a
segment's blocks on its device are scaled so that they and the joins inside it sum to the
segment's measured time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec

from splitinfer.profile.schema import DeviceProfile, Profile, SegmentStats, Stats

# Segments within 2% of their blocks' sum leave the blocks as they are: about what one timing of a stage
# moves from deploy to deploy on a quiet machine. Refinement times a correction past it three times and keeps
# the middle (runtime/refine.py); at 5% a stage 4-5% off was never corrected, and the refined figure a user
# quotes (issue 15: worst 5%) had no margin left for the next deploy's own noise.
DEFAULT_THRESHOLD = 0.02


def _run_cost(device: DeviceProfile, stat: str) -> float | None:
    """The fixed cost of one run on ``device``: its trivial run, but never more than its fastest block
    (which paid it too: a trivial run timed slower than a block is noise, or a cold start)."""
    if device.run_overhead is None:
        return None
    blocks = [getattr(b, stat) for b in device.blocks if b is not None]
    return min([getattr(device.run_overhead, stat), *blocks])


def _seconds_per_cut_byte(device: DeviceProfile, cut_bytes: Sequence[int], stat: str) -> float:
    """What a cut costs per byte crossing it beyond the fixed cost of a run, fitted on the whole model.

    A partition hands its cut tensors in and out in ONNX Runtime's plain layout; inside one partition
    they may stay in a faster one (NCHWc for convolutions), and no copy is made. So the whole model
    runs faster than its blocks less one trivial run per cut, by an amount that grows with the bytes
    crossing the cuts: that amount over those bytes (0 when the whole model is not faster).
    """
    whole, overhead = device.whole_model, _run_cost(device, stat)
    if whole is None or overhead is None or any(b is None for b in device.blocks) or not sum(cut_bytes[:-1]):
        return 0.0
    apart = math.fsum(getattr(b, stat) for b in device.blocks if b is not None)
    gap = apart - (len(device.blocks) - 1) * overhead - getattr(whole, stat)
    return max(0.0, gap / sum(cut_bytes[:-1]))


def joins_of(device: DeviceProfile, cut_bytes: Sequence[int], stat: str = "median_s") -> list[float | None]:
    """Per cut, what running its two blocks together adds on ``device`` (``plan/joins.py``).

    Each block was timed as its own ONNX Runtime run, so each holds the fixed cost of a run once and
    hands its tensors over at its cuts; a stage runs once and hands over only at its ends. Where the
    pair was timed (``profile --pairs``), the join is the pair's time less the two blocks'. Else it is
    minus the device's trivial run (``run_overhead``, at most its fastest block) and minus the cut's
    bytes times what a byte crossing a cut cost on the whole model (:func:`_seconds_per_cut_byte`);
    None where neither the
    pair nor the trivial run was measured. Each within [-(the two blocks) / 2, 0], as ``plan/joins.py``
    holds them. ``cut_bytes``: the profile's blocks' (``BlockInfo.cut_bytes``).
    """
    overhead = _run_cost(device, stat)
    per_byte = _seconds_per_cut_byte(device, cut_bytes, stat)
    out: list[float | None] = []
    for b in range(len(device.blocks) - 1):
        pair = device.pairs[b] if device.pairs else None
        first, second = device.blocks[b], device.blocks[b + 1]
        if first is None or second is None or (pair is None and overhead is None):
            out.append(None)
            continue
        apart = getattr(first, stat) + getattr(second, stat)
        join = getattr(pair, stat) - apart if pair is not None else -overhead - per_byte * cut_bytes[b]
        # As the planner holds it (plan/joins.py): a join never makes two blocks slower than apart
        # (noise), nor takes more than half of them (so no stage costs less than nothing).
        out.append(min(0.0, max(-apart / 2, join)))
    return out


def segment_ratio(device: DeviceProfile, segment: SegmentStats,
                  joins: Sequence[float | None]) -> float | None:
    """Measured segment median / what the planner predicts for it, the sum of its block medians and
    its inner ``joins`` (:func:`joins_of`; None counts 0); None if a block cannot run there."""
    blocks = device.blocks[segment.first_block:segment.last_block + 1]
    if any(b is None for b in blocks):
        return None
    total = math.fsum(b.median_s for b in blocks if b is not None)
    total += math.fsum(j for j in joins[segment.first_block:segment.last_block] if j is not None)
    return segment.stats.median_s / total if total > 0 else None


def _scale(stats: Stats, factor: float) -> Stats:
    return msgspec.structs.replace(stats, median_s=stats.median_s * factor, mean_s=stats.mean_s * factor,
                                   p10_s=stats.p10_s * factor, p90_s=stats.p90_s * factor,
                                   std_s=stats.std_s * factor)


def corrected_device(device: DeviceProfile, joins: Sequence[float | None],
                     threshold: float = DEFAULT_THRESHOLD) -> DeviceProfile:
    """The device with block costs scaled to its measured segments that differ by more than ``threshold``
    from their blocks and inner ``joins`` (:func:`joins_of` of the device as measured).

    The blocks of such a segment are scaled so that they and its joins add up to its measurement; the
    joins are not corrected (a stage that covers part of the segment keeps its own), so the planner
    takes them from the profile as measured. Segments are applied in the order listed (later ones win
    where they overlap); the whole model's time counts as the segment of every block.
    """
    blocks = list(device.blocks)
    segments = list(device.segments)
    if device.whole_model is not None and not any(
            s.first_block == 0 and s.last_block == len(blocks) - 1 for s in segments):
        segments.insert(0, SegmentStats(0, len(blocks) - 1, device.whole_model))
    for seg in segments:
        ratio = segment_ratio(msgspec.structs.replace(device, blocks=tuple(blocks)), seg, joins)
        if ratio is None or abs(ratio - 1.0) <= threshold:
            continue
        inner = math.fsum(j for j in joins[seg.first_block:seg.last_block] if j is not None)
        ratio = (seg.stats.median_s - inner) / math.fsum(
            b.median_s for b in blocks[seg.first_block:seg.last_block + 1] if b is not None)
        for i in range(seg.first_block, seg.last_block + 1):
            block = blocks[i]
            assert block is not None  # segment_ratio is None otherwise
            blocks[i] = _scale(block, ratio)
    return msgspec.structs.replace(device, blocks=tuple(blocks))


def corrected_profile(profile: Profile, threshold: float = DEFAULT_THRESHOLD,
                      *, use_whole_model: bool = False) -> Profile:
    """The profile with every device's block costs corrected by its measured segments (the joins of
    each device as measured: :func:`joins_of` of ``profile``, not of the result).

    ``use_whole_model``: also treat each device's whole-model time as a segment. Off by
    default: scaling every block to the whole model's time would smear the fusion effect
    of one segment over all of them; refinement measures the segments a plan really uses.
    """
    cut_bytes = [b.cut_bytes for b in profile.blocks]
    devices = {}
    for name, dev in profile.devices.items():
        base = dev if use_whole_model else msgspec.structs.replace(dev, whole_model=None)
        fixed = corrected_device(base, joins_of(dev, cut_bytes), threshold)
        devices[name] = msgspec.structs.replace(fixed, whole_model=dev.whole_model)
    return msgspec.structs.replace(profile, devices=devices)


def add_segments(profile: Profile, device: str, segments: list[SegmentStats]) -> Profile:
    """The profile with ``segments`` recorded on ``device`` (replacing earlier ones of the same blocks)."""
    dev = profile.devices[device]
    new = {(s.first_block, s.last_block) for s in segments}
    kept = [s for s in dev.segments if (s.first_block, s.last_block) not in new]
    devices = dict(profile.devices)
    devices[device] = msgspec.structs.replace(dev, segments=(*kept, *segments))
    return msgspec.structs.replace(profile, devices=devices)
