"""The tables ``splitinfer profile`` prints: blocks by device, devices, links, trade-offs."""

from __future__ import annotations

from rich.table import Table

from splitinfer.cli._common import format_bytes, format_count
from splitinfer.graph.sizes import describe_size
from splitinfer.profile.schema import Profile
from splitinfer.profile.segments import joins_of


def _stat_ms(stats: object) -> str:
    return "-" if stats is None else f"{stats.median_s * 1000:.3f}"  # type: ignore[attr-defined]


def profile_table(profile: Profile) -> Table:
    """Per block: FLOPs, parameters, cut and activation bytes, the median ms on every device;
    then each device's sum of blocks, its trivial run, the whole model as the planner predicts one
    stage of it (blocks and joins) and as measured."""
    names = list(profile.devices)
    table = Table(title=f"profile of {profile.model.name} ({profile.model.sha256[:12]}), median ms",
                  title_justify="left")
    for col in ("block", "GFLOPs", "params", "cut", "act.", *names):
        table.add_column(col, justify="right", no_wrap=True, min_width=6 if col in names else None)
    for b in profile.blocks:
        times = [_stat_ms(profile.devices[n].blocks[b.index]) for n in names]
        table.add_row(str(b.index), f"{b.flops / 1e9:.3f}", format_count(b.num_params),
                      format_bytes(b.cut_bytes), format_bytes(b.activation_bytes), *times)
    rows: dict[str, list[str]] = {"sum": [], "trivial run": [], "as one stage": [], "whole": [],
                                  "whole/one stage": []}
    cut_bytes = [b.cut_bytes for b in profile.blocks]
    for n in names:
        dev = profile.devices[n]
        total = sum(s.median_s for s in dev.blocks if s is not None)
        # What the planner predicts for the whole model as one stage: its blocks and the joins between
        # them (one run instead of one per block, and fusion where pairs were timed).
        one = total + sum(j for j in joins_of(dev, cut_bytes) if j is not None)
        rows["sum"].append(f"{total * 1000:.3f}")
        rows["trivial run"].append(_stat_ms(dev.run_overhead))
        rows["as one stage"].append(f"{one * 1000:.3f}")
        rows["whole"].append(_stat_ms(dev.whole_model))
        whole = dev.whole_model
        rows["whole/one stage"].append("-" if whole is None or not one else f"{whole.median_s / one:.2f}")
    table.add_section()
    for label, values in rows.items():
        table.add_row(label, "", "", "", "", *values)
    return table


def devices_table(profile: Profile) -> Table:
    """Providers, num_threads, memory, date and host of each device."""
    table = Table(title="devices", title_justify="left")
    for col in ("device", "providers", "num_threads", "memory free", "slowdown", "noise", "hop ms",
                "date", "onnxruntime", "note"):
        table.add_column(col, overflow="fold", no_wrap=col == "date")
    for name, dev in profile.devices.items():
        memory = "-" if dev.memory_bytes is None else format_bytes(dev.memory_bytes)
        note = "partial" if dev.host.get("complete") is False else ""
        note += f" {len(dev.segments)} segments" if dev.segments else ""
        note += f" re-measured {dev.remeasured} of {len(dev.blocks)} blocks" if dev.remeasured else ""
        note += f" rest {dev.rest_s * 1e3:g} ms" if dev.rest_s else ""  # profile/rounds.py's rule Rest
        noise = "-" if dev.noise is None else f"{dev.noise:.2f}"  # the median block's p90/p10
        providers = ",".join(p.removesuffix("ExecutionProvider") for p in dev.providers)
        ort_version = dev.versions.get("onnxruntime", "")
        m = dev.messaging  # a hop between the coordinator and the device: fixed + per MB
        hop = "-" if m is None else f"{m.fixed_s * 1e3:.2f}+{m.s_per_byte * 1e9:.2f}/MB"
        table.add_row(name, providers, str(dev.num_threads or "default"), memory,
                      str(dev.host.get("slowdown", "")), noise, hop, dev.date[:10], ort_version, note.strip())
    return table


def links_table(profile: Profile) -> Table:
    """Latency, bandwidth, fit quality and origin of each link."""
    table = Table(title="links", title_justify="left")
    for col in ("from", "to", "latency ms", "bandwidth Mbit/s", "r2", "source"):
        table.add_column(col, justify="left" if col in ("from", "to", "source") else "right")
    for x in profile.links:
        table.add_row(x.src, x.dst, f"{x.latency_s * 1000:.3f}", f"{x.bandwidth_bps * 8 / 1e6:.2f}",
                      "-" if x.r2 is None else f"{x.r2:.4f}", x.source)
    return table


def _percent(values) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    low, high = min(known) * 100, max(known) * 100
    return f"{low:.2f}" if low == high else f"{low:.2f}-{high:.2f}"


def tradeoffs_table(profile: Profile) -> Table:
    """Each measured precision and compression: its quality cost (top-1 agreement drop, range over
    blocks or cuts), its bytes against raw (compressions), and the devices it was timed on."""
    section = profile.tradeoffs
    assert section is not None
    table = Table(title=f"trade-offs, quality measured on {section.calibration or 'calibration data'} "
                        f"({section.num_rows} rows)", title_justify="left")
    for col in ("option", "applies to", "quality drop %", "raw/compressed bytes", "timed on"):
        table.add_column(col, justify="left" if col in ("option", "applies to", "timed on") else "right")
    raw = [b.cut_bytes for b in profile.blocks[:-1]]
    for name, p in section.precisions.items():
        table.add_row(f"precision {name}", "each block", _percent(p.quality_cost), "-", ", ".join(p.devices))
    for name, c in section.compressions.items():
        ratios = [r / b for r, b in zip(raw, c.cut_bytes, strict=False) if b > 0]
        shrink = "-" if not ratios else f"{min(ratios):.2f}-{max(ratios):.2f}"
        table.add_row(f"compression {name}", "each cut", _percent(c.quality_cost), shrink,
                      ", ".join(c.devices))
    return table


def sizes_table(profile: Profile) -> Table:
    """A profile made at several input sizes: per size, its input bytes and each device's sum of blocks
    (the table above is of the first size; `plan --input-shape` plans for another)."""
    names = list(profile.devices)
    table = Table(title="input sizes profiled (sum of blocks, median ms)", title_justify="left")
    for col in ("size", "input", *names):
        table.add_column(col, justify="left" if col == "size" else "right", no_wrap=col != "size")
    for each in (profile, *profile.other_sizes):
        sums = []
        for name in names:
            device = each.devices.get(name)
            blocks = device.blocks if device is not None else [None]
            total = None if any(b is None for b in blocks) else sum(b.median_s for b in blocks)  # type: ignore[union-attr]
            sums.append("-" if total is None else f"{total * 1e3:.3f}")
        table.add_row(describe_size(each.model.input_shapes), format_bytes(each.input_bytes), *sums)
    return table
