"""Profiling trade-offs: quality costs on calibration data, then each device's seconds per option.

``splitinfer profile --tradeoffs int8,fp16,lz4 --calibration DATA`` runs this after the blocks'
fp32 timing: :func:`~splitinfer.profile.sensitivity.measure_sensitivity` once (in this process:
quality does not depend on the device), then on every device, through its runner, each block
quantised to each precision (timed like any partition) and each compression of each cut's real
tensors (``Runner.time_compression``: compressing as a sender, restoring as a receiver). The
result is the profile's ``tradeoffs`` section; :func:`tradeoffs_for_planning` turns it into the
planner's :class:`~splitinfer.plan.tradeoffs.Tradeoffs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec
import numpy as np

from splitinfer.compression import parse_compression
from splitinfer.errors import PlanError, ProfileError
from splitinfer.graph.quantize import PRECISIONS
from splitinfer.plan.tradeoffs import CompressionOption, PrecisionOption, Tradeoffs
from splitinfer.profile.profiler import ProfileSettings
from splitinfer.profile.schema import (
    CodecTiming,
    CompressionProfile,
    PrecisionProfile,
    Profile,
    Stats,
    TradeoffProfile,
)
from splitinfer.profile.sensitivity import Progress, Sensitivity, compared_output, measure_sensitivity
from splitinfer.profile.timing import summarize

CODEC_BUDGET_S = 0.2  # timed work per cut and device for all compressions together


def split_options(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """``--tradeoffs`` names into (precisions, compressions): int8 and fp16 are both a precision (of a
    block) and a compression (of a cut tensor), so ``int8`` alone means both;
    ``precision:int8`` / ``compression:int8`` say which."""
    precisions, compressions = [], []
    for raw in names:
        name = raw.strip()
        kind, _, rest = name.partition(":")
        if kind == "precision":
            precisions.append(rest)
        elif kind == "compression":
            compressions.append(str(parse_compression(rest)))
        elif name in PRECISIONS and name != "fp32":
            precisions.append(name)
            compressions.append(name)
        elif name in ("fp32", "none"):
            continue  # always options
        else:
            compressions.append(str(parse_compression(name)))  # PlanError names an unknown one
    for p in precisions:
        if p not in PRECISIONS:
            raise PlanError(f"precision {p!r} is unknown", f"use one of {', '.join(PRECISIONS)}")
    return list(dict.fromkeys(precisions)), list(dict.fromkeys(compressions))


def output_compared(model) -> str:
    """The output whose top-1 agreement measures a loaded model's trade-offs; ProfileError if none."""
    output = compared_output([(o.name, o.dtype, tuple(o.shape)) for o in model.outputs])
    if output is None:
        raise ProfileError(
            "trade-offs are measured as top-1 agreement of class scores, and no output of the model is "
            "class scores (rows x classes)",
            "profile without --tradeoffs (a detector's or an encoder's quality needs its own measure)",
        )
    return output


def sensitivity_of(
    prepared,
    x: np.ndarray,
    precisions: Sequence[str],
    compressions: Sequence[str],
    *,
    limit: int = 128,
    progress: Progress | None = None,
) -> Sensitivity:
    """Quality costs of the options on samples ``x``, for a model prepared by ``prepare_model``."""
    model = prepared.model
    if len(model.inputs) != 1:
        raise ProfileError(
            f"the model has {len(model.inputs)} inputs; trade-offs are measured on one-input models",
            "profile without --tradeoffs",
        )
    spec = model.inputs[0]
    output = output_compared(model)
    cuts = [[t.name for t in c.tensors] for c in prepared.analysis.cuts]
    return measure_sensitivity(
        prepared.block_bytes,
        cuts,
        spec.name,
        tuple(spec.shape),
        output,
        x,
        precisions,
        compressions,
        limit=limit,
        progress=progress,
    )


def time_on_device(
    runner,
    prepared,
    sens: Sensitivity,
    *,
    budget_s: float,
    slowdown: float = 1.0,
    settings=None,
    progress: Progress | None = None,
) -> tuple[dict[str, tuple[Stats | None, ...]], dict[str, CodecTiming]]:
    """One device's seconds: each quantised block (per precision), each cut's compressions.
    ``progress(done, total, what)`` is called before each item."""
    settings = settings or ProfileSettings(budget_s=budget_s)
    num = prepared.num_blocks
    per_block = settings.item_budget_s(max(1, num * max(1, len(sens.quantized_blocks))))
    total = num * len(sens.quantized_blocks) + len(sens.cut_tensors) + 1
    done = 0

    def step(what: str) -> None:
        nonlocal done
        if progress is not None:
            progress(done, total, what)
        done += 1

    precisions: dict[str, tuple[Stats | None, ...]] = {}
    for name, parts in sens.quantized_blocks.items():
        times: list[Stats | None] = []
        for b, part in enumerate(parts):
            step(f"block {b} in {name}")
            if part is None:
                times.append(None)
                continue
            result = runner.profile(
                part,
                prepared.block_feeds[b],
                num_warmup=settings.num_warmup,
                min_runs=settings.min_runs,
                max_runs=settings.max_runs,
                budget_s=per_block,
                rel_precision=settings.rel_precision,
                slowdown=slowdown,
            )
            times.append(summarize(result.times_s))
        precisions[name] = tuple(times)
    names = list(sens.cut_bytes)

    def timed(tensors: Mapping[str, np.ndarray]) -> dict:
        """Compressing as a sender and restoring as a receiver, per compression (none measured: {})."""
        if not names or not tensors:
            return {}
        return runner.time_compression(tensors, names, budget_s=CODEC_BUDGET_S, slowdown=slowdown)

    cuts = []
    for c, tensors in enumerate(sens.cut_tensors):
        step(f"compressing cut {c}")
        cuts.append(timed(tensors))
    step("compressing the input")
    upload = timed(sens.input_tensors)
    codecs = {
        n: CodecTiming(
            tuple(t[n].compress_s for t in cuts),
            tuple(t[n].decompress_s for t in cuts),
            upload[n].compress_s if n in upload else None,
            upload[n].decompress_s if n in upload else None,
        )
        for n in names
    }
    if progress is not None:
        progress(total, total, "trade-offs timed")
    return precisions, codecs


def tradeoff_profile(
    sens: Sensitivity, devices: Mapping[str, tuple], calibration: str = ""
) -> TradeoffProfile:
    """The profile section: quality costs and bytes from ``sens``; ``devices``: name -> the pair
    :func:`time_on_device` returned."""
    precisions = {
        p: PrecisionProfile(tuple(sens.block_quality[p]), {d: times[0][p] for d, times in devices.items()})
        for p in sens.block_quality
    }
    compressions = {
        c: CompressionProfile(
            tuple(sens.cut_bytes[c]),
            tuple(sens.cut_quality[c]),
            {d: times[1][c] for d, times in devices.items()},
            sens.input_bytes.get(c),
            sens.input_quality.get(c),
        )
        for c in sens.cut_bytes
    }
    return TradeoffProfile(sens.num_rows, calibration, precisions, compressions)


def with_tradeoffs(profile: Profile, section: TradeoffProfile) -> Profile:
    return msgspec.structs.replace(profile, tradeoffs=section)


def tradeoffs_for_planning(
    profile: Profile,
    devices: Sequence[str],
    *,
    precisions: Sequence[str] | None = None,
    compressions: Sequence[str] | None = None,
    max_quality_drop: float | None = None,
    stat: str = "median_s",
) -> Tradeoffs:
    """The planner's trade-offs from ``profile`` for ``devices``: every option the profile measured,
    or only those named. A device not timed in a precision does not run it; every device must have
    been timed for a compression (restoring is on every receiver)."""
    section = profile.tradeoffs
    if section is None:
        if precisions or compressions or max_quality_drop is not None:
            raise ProfileError(
                "the profile has no trade-offs measured",
                "profile with --tradeoffs int8,fp16,lz4 --calibration DATA",
            )
        return Tradeoffs()
    chosen_p = list(section.precisions) if precisions is None else list(precisions)
    chosen_c = list(section.compressions) if compressions is None else list(compressions)
    for kind, chosen, known in (
        ("precision", chosen_p, section.precisions),
        ("compression", chosen_c, section.compressions),
    ):
        missing = [n for n in chosen if n not in known]
        if missing:
            raise ProfileError(
                f"the profile did not measure {kind} {', '.join(missing)}",
                f"use one of: {', '.join(known) or 'none'}, or re-profile with --tradeoffs",
            )
    options_p = []
    for name in chosen_p:
        entry = section.precisions[name]
        compute = {
            d: [None if s is None else getattr(s, stat) for s in entry.devices[d]]
            for d in devices
            if d in entry.devices
        }
        costs = [0.0 if q is None else q for q in entry.quality_cost]  # None: no times either, never runs
        options_p.append(PrecisionOption(name, compute, costs))
    options_c = []
    for name in chosen_c:
        entry = section.compressions[name]
        absent = [d for d in devices if d not in entry.devices]
        if absent:
            raise ProfileError(
                f"compression {name} was not timed on {', '.join(absent)}",
                "profile the trade-offs on every device of the cluster",
            )
        present = list(devices)
        timed_input = entry.input_bytes is not None and all(
            entry.devices[d].input_compress_s is not None for d in present
        )
        options_c.append(
            CompressionOption(
                name,
                list(entry.cut_bytes),
                {d: list(entry.devices[d].compress_s) for d in present},
                {d: list(entry.devices[d].decompress_s) for d in present},
                list(entry.quality_cost),
                input_bytes=entry.input_bytes if timed_input else None,
                input_compress_s={d: entry.devices[d].input_compress_s or 0.0 for d in present},
                input_decompress_s={d: entry.devices[d].input_decompress_s or 0.0 for d in present},
                input_quality_cost=entry.input_quality_cost or 0.0,
            )
        )
    return Tradeoffs(tuple(options_p), tuple(options_c), max_quality_drop)
