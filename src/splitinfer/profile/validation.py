"""Checks of a profile file's consistency beyond its types (:mod:`.schema` says the format)."""

from __future__ import annotations

import math

from splitinfer.errors import ProfileError, SchemaError
from splitinfer.profile.schema import PROFILE_SCHEMA, DeviceProfile, Profile, Stats, TradeoffProfile


def _bad_number(value: float, allow_inf: bool = False) -> bool:
    return math.isnan(value) or value < 0 or (math.isinf(value) and not allow_inf)


def _validate_tradeoffs(t: TradeoffProfile, num_blocks: int) -> None:
    def check(values: tuple, n: int, where: str) -> None:
        if len(values) != n:
            raise ProfileError(f"tradeoffs {where} has {len(values)} entries, expected {n}",
                               "re-profile with --tradeoffs")
        for v in values:
            figure = v.median_s if isinstance(v, Stats) else v
            if figure is not None and _bad_number(float(figure)):
                raise ProfileError(f"tradeoffs {where} has {figure}", "give finite numbers >= 0")

    for name, p in t.precisions.items():
        check(p.quality_cost, num_blocks, f"precision {name} quality_cost")
        for device, times in p.devices.items():
            check(times, num_blocks, f"precision {name} on {device}")
    for name, c in t.compressions.items():
        check(c.cut_bytes, num_blocks - 1, f"compression {name} cut_bytes")
        check(c.quality_cost, num_blocks - 1, f"compression {name} quality_cost")
        check((c.input_bytes, c.input_quality_cost), 2, f"compression {name} input")
        for device, codec in c.devices.items():
            check(codec.compress_s, num_blocks - 1, f"compression {name} compress_s on {device}")
            check(codec.decompress_s, num_blocks - 1, f"compression {name} decompress_s on {device}")
            upload = (codec.input_compress_s, codec.input_decompress_s)
            check(upload, 2, f"compression {name} input on {device}")


def _validate_device(name: str, dev: DeviceProfile, num_blocks: int) -> None:
    if len(dev.blocks) != num_blocks:
        raise ProfileError(
            f"device {name!r} has times for {len(dev.blocks)} blocks, the model has {num_blocks}",
            f"profile every block on {name} (null where a block cannot run there)",
        )
    if dev.pairs and len(dev.pairs) != num_blocks - 1:
        raise ProfileError(
            f"device {name!r} has times for {len(dev.pairs)} pairs of blocks, the model has {num_blocks - 1}",
            f"re-profile {name}: one pair per cut (null where a pair cannot run), or none",
        )
    named = [(f"block {i}", s) for i, s in enumerate(dev.blocks)]
    named += [(f"blocks {i}-{i + 1}", s) for i, s in enumerate(dev.pairs)]
    named += [(f"segment {g.first_block}-{g.last_block}", g.stats) for g in dev.segments]
    named += [("whole model", dev.whole_model), ("trivial run", dev.run_overhead)]
    for what, stats in named:
        if stats is None:
            continue
        for field in ("median_s", "mean_s", "p10_s", "p90_s", "std_s"):
            value = getattr(stats, field)
            if _bad_number(value):
                raise ProfileError(
                    f"device {name!r} {what}: {field} is {value}",
                    "re-profile it: times must be finite and >= 0",
                )
        if stats.n < 1:
            raise ProfileError(f"device {name!r} {what}: n is {stats.n}", "re-profile it: n counts >= 1 runs")
    if dev.num_threads < 0 or (dev.memory_bytes is not None and dev.memory_bytes <= 0):
        raise ProfileError(f"device {name!r} has num_threads {dev.num_threads}, memory_bytes "
                           f"{dev.memory_bytes}", "give num_threads >= 0 and memory_bytes > 0 (or null)")
    if dev.memory and len(dev.memory) != num_blocks:
        raise ProfileError(f"device {name!r} has memory for {len(dev.memory)} blocks, the model has "
                           f"{num_blocks}",
                           f"re-profile {name}: one entry per block (null where not measured), or none")
    for b, m in enumerate(dev.memory):
        if m is not None and (min(m.weight_bytes, m.activation_bytes, m.transient_bytes, m.mapped_bytes) < 0
                              or m.mapped_bytes > m.weight_bytes):
            raise ProfileError(f"device {name!r} block {b} memory is {m}",
                               "give bytes >= 0, and mapped_bytes at most weight_bytes")
    if (dev.noise is not None and (math.isnan(dev.noise) or dev.noise < 1)) or dev.remeasured < 0 \
            or (dev.session_bytes or 0) < 0:
        raise ProfileError(f"device {name!r} has noise {dev.noise}, remeasured {dev.remeasured}, "
                           f"session_bytes {dev.session_bytes}",
                           "give noise >= 1 (a p90/p10 ratio) or null, remeasured and session_bytes >= 0")
    m = dev.messaging
    if m is not None and (_bad_number(m.fixed_s) or _bad_number(m.s_per_byte) or m.n < 0):
        raise ProfileError(f"device {name!r} has messaging {m}",
                           "give fixed_s and s_per_byte finite and >= 0")
    for g in dev.segments:
        if not 0 <= g.first_block <= g.last_block < num_blocks:
            raise ProfileError(
                f"device {name!r} has segment {g.first_block}-{g.last_block}",
                f"segments lie within blocks 0..{num_blocks - 1}",
            )


def _validate_exits(profile: Profile) -> None:
    """Each exit made by a block but the last, in block order, with probabilities that add up to 1 at most."""
    blocks = [e.block for e in profile.exits]
    if blocks != sorted(set(blocks)) or any(not 0 <= b < len(profile.blocks) - 1 for b in blocks):
        raise ProfileError(f"the profile's exits are made by blocks {blocks}",
                           f"give each exit its own block, in order, below {len(profile.blocks) - 1}")
    for e in profile.exits:
        if not 0 <= e.probability <= 1 or e.output_bytes < 0 or e.num_samples < 0:
            raise ProfileError(f"exit {e.output!r} has probability {e.probability}, output_bytes "
                               f"{e.output_bytes}, num_samples {e.num_samples}",
                               "give a fraction 0 to 1 and counts >= 0")
    if sum(e.probability for e in profile.exits) > 1 + 1e-9:
        raise ProfileError("the profile's exit probabilities add up to more than 1",
                           "give each exit the fraction of all requests that leave there")


def _validate_sizes(profile: Profile) -> None:
    """Each other size: a complete profile of the same blocks at a size the model info lists."""
    listed = list(profile.model.sizes)
    if profile.other_sizes and not listed:
        raise ProfileError("the profile has other_sizes but its model lists no sizes",
                           "list every input size in model.sizes (the profile's own first)")
    for other in profile.other_sizes:
        where = f"the profile at {other.model.input_shapes}"
        if other.other_sizes:
            raise ProfileError(f"{where} holds other sizes itself", "keep every size at the top level")
        if other.model.input_shapes not in listed or other.model.input_shapes == profile.model.input_shapes:
            raise ProfileError(f"{where} is not one of the other sizes of model.sizes",
                               "list it in model.sizes, or drop it")
        if [b.nodes for b in other.blocks] != [b.nodes for b in profile.blocks]:
            raise ProfileError(f"{where} has other blocks than the profile",
                               "profile every size with the same cuts (one `splitinfer profile` run)")
        validate_profile(other)


def validate_profile(profile: Profile) -> Profile:
    """``profile`` if consistent; ProfileError naming the first problem otherwise."""
    if profile.schema != PROFILE_SCHEMA:
        raise SchemaError(
            f"profile has schema {profile.schema}, this splitinfer reads {PROFILE_SCHEMA}",
            "re-profile with this version of splitinfer",
        )
    if not profile.blocks:
        raise ProfileError("the profile has no blocks", "profile a model with at least one block")
    for i, block in enumerate(profile.blocks):
        if block.index != i:
            raise ProfileError(
                f"block {i} of the profile has index {block.index}: blocks are missing or out of order",
                "list blocks 0, 1, 2, ... in order",
            )
        for field in ("flops", "num_params", "param_bytes", "output_bytes", "cut_bytes", "activation_bytes"):
            if getattr(block, field) < 0:
                raise ProfileError(f"block {i} has negative {field}", "fix the figure (>= 0)")
    if profile.input_bytes < 0 or profile.output_bytes < 0:
        raise ProfileError("input_bytes or output_bytes is negative", "fix the figure (>= 0)")
    if _bad_number(profile.hop_overhead_s):
        raise ProfileError(f"hop_overhead_s is {profile.hop_overhead_s}",
                           "give a finite number of seconds >= 0")
    if profile.tradeoffs is not None:
        _validate_tradeoffs(profile.tradeoffs, len(profile.blocks))
    for name, dev in profile.devices.items():
        _validate_device(name, dev, len(profile.blocks))
    _validate_sizes(profile)
    _validate_exits(profile)
    seen = set()
    for link in profile.links:
        where = f"link {link.src}->{link.dst}"
        if link.src == link.dst:
            raise ProfileError(f"{where} connects a device to itself", "remove it")
        if (link.src, link.dst) in seen:
            raise ProfileError(f"{where} is listed twice", "keep one of them")
        seen.add((link.src, link.dst))
        if (
            _bad_number(link.latency_s)
            or _bad_number(link.bandwidth_bps, allow_inf=True)
            or link.bandwidth_bps == 0
        ):
            raise ProfileError(
                f"{where} has latency {link.latency_s} s, bandwidth {link.bandwidth_bps} B/s",
                "give latency >= 0 and a positive bandwidth",
            )
    return profile
