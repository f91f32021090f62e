"""Segment costs: when blocks run together as one partition they may take more or less than
the sum of their separate times (ONNX Runtime fuses nodes across block bounds; each
partition run has a fixed overhead). The profile's pairs predict that (``plan/joins.py``);
measured segments (refinement) correct what the planner sees where the prediction missed: a
segment's blocks on its device are scaled so that they sum to the segment's measured time, and
the joins inside it are dropped (the measurement holds them).
"""

from __future__ import annotations

import math

import msgspec

from splitinfer.profile.schema import DeviceProfile, Profile, SegmentStats, Stats

DEFAULT_THRESHOLD = 0.05  # segments within 5% of their blocks' sum leave the blocks as they are


def _inner_joins(device: DeviceProfile, first: int, last: int) -> float:
    """The joins at the segment's inner cuts (``plan/joins.py``), from the pairs measured."""
    total = 0.0
    for b in range(first, last):
        pair = device.pairs[b] if b < len(device.pairs) else None
        one, two = device.blocks[b], device.blocks[b + 1]
        if pair is not None and one is not None and two is not None:
            total += pair.median_s - one.median_s - two.median_s
    return total


def segment_ratio(device: DeviceProfile, segment: SegmentStats) -> float | None:
    """Measured segment median / what the planner predicts for it, the sum of its block medians and
    inner joins (None if a block cannot run there)."""
    blocks = device.blocks[segment.first_block:segment.last_block + 1]
    if any(b is None for b in blocks):
        return None
    total = math.fsum(b.median_s for b in blocks if b is not None)
    total += _inner_joins(device, segment.first_block, segment.last_block)
    return segment.stats.median_s / total if total > 0 else None


def _scale(stats: Stats, factor: float) -> Stats:
    return msgspec.structs.replace(stats, median_s=stats.median_s * factor, mean_s=stats.mean_s * factor,
                                   p10_s=stats.p10_s * factor, p90_s=stats.p90_s * factor,
                                   std_s=stats.std_s * factor)


def corrected_device(device: DeviceProfile, threshold: float = DEFAULT_THRESHOLD) -> DeviceProfile:
    """The device with block costs scaled to its measured segments that differ by more than ``threshold``.

    Segments are applied in the order listed (later ones win where they overlap);
    the whole model's time counts as the segment of every block.
    """
    blocks = list(device.blocks)
    pairs = list(device.pairs)
    segments = list(device.segments)
    if device.whole_model is not None and not any(
            s.first_block == 0 and s.last_block == len(blocks) - 1 for s in segments):
        segments.insert(0, SegmentStats(0, len(blocks) - 1, device.whole_model))
    for seg in segments:
        current = msgspec.structs.replace(device, blocks=tuple(blocks), pairs=tuple(pairs))
        ratio = segment_ratio(current, seg)
        if ratio is None or abs(ratio - 1.0) <= threshold:
            continue
        # The measured segment holds its inner joins: its blocks alone are scaled to it, joins dropped.
        ratio = seg.stats.median_s / math.fsum(b.median_s for b in blocks[seg.first_block:seg.last_block + 1]
                                               if b is not None)
        for i in range(seg.first_block, seg.last_block + 1):
            block = blocks[i]
            assert block is not None  # segment_ratio is None otherwise
            blocks[i] = _scale(block, ratio)
        for b in range(seg.first_block, min(seg.last_block, len(pairs))):
            pairs[b] = None
    return msgspec.structs.replace(device, blocks=tuple(blocks), pairs=tuple(pairs))


def corrected_profile(profile: Profile, threshold: float = DEFAULT_THRESHOLD,
                      *, use_whole_model: bool = False) -> Profile:
    """The profile with every device's block costs corrected by its measured segments.

    ``use_whole_model``: also treat each device's whole-model time as a segment. Off by
    default: scaling every block to the whole model's time would smear the fusion effect
    of one segment over all of them; refinement measures the segments a plan really uses.
    """
    devices = {}
    for name, dev in profile.devices.items():
        base = dev if use_whole_model else msgspec.structs.replace(dev, whole_model=None)
        fixed = corrected_device(base, threshold)
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
