"""What splitting gains: the best plan measured side by side with the best single-device plan (``gain.json``).

:func:`splitinfer.runtime.gain.measure_gain` measures; this module holds the record, the gain
arithmetic and the one sentence that says it, so the CLI and the report say the same thing
without loading the runtime. Per objective (one :class:`SplitGain`):

- latency: both plans at concurrency 1, the gain is the single device's median latency over the
  best plan's (2.0: the split answers in half the time);
- throughput: both plans pipelined at the same concurrency, the gain is the best plan's requests
  per second over the single device's.

The gain is always of measured figures; the prediction's gain is kept beside it. The single
device compared with is the one that measured best among the single-device plans measured (the
best one-stage plan, and any other predicted close enough to it that noise in the profile could
have put it second): a near tie in prediction must not flatter the split. When the best plan runs
on one device it is its own single-device plan: measured once, gain 1.0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import msgspec

from splitinfer.errors import SchemaError, read_file
from splitinfer.plan import describe_stages
from splitinfer.records.bench import RankedBench, RankFigure, decode_record, encode_record, measured_ranks

GAIN_SCHEMA = 1


class SplitGain(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One objective: the best plan against the single-device plans, measured together."""

    objective: RankFigure  # latency (median at concurrency 1) or throughput (requests/s, pipelined)
    num_requests: int  # measured requests per plan
    concurrency: int
    interleaved: bool  # all deployed at once and sent requests in turn (noise falls on each alike)
    note: str  # why they were measured one after another ("" when interleaved)
    best: RankedBench  # the best plan, unconstrained
    # Every single-device plan measured, in predicted order: ``(best,)`` when the best plan has one stage;
    # () when no single device can run the whole model (memory, pins), so there is nothing to compare with.
    singles: tuple[RankedBench, ...]
    single: RankedBench | None  # the one of ``singles`` that measured best: what the gain is against
    gain: float | None  # measured, > 1 when the best plan beats the single device (None: no single device)
    predicted_gain: float | None  # the same ratio of the same two plans' predictions

    @property
    def is_split(self) -> bool:
        """True when the best plan has two stages or more."""
        return len(self.best.bench.plan.stages) > 1


class GainResult(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The gain of splitting for each objective measured (``gain.json``)."""

    schema: int = GAIN_SCHEMA
    kind: Literal["gain"] = "gain"  # tells this file from a bench.json or a ranked bench
    gains: tuple[SplitGain, ...]
    date: str  # ISO 8601
    host: dict[str, str]

    def of(self, objective: str) -> SplitGain | None:
        """The gain measured for ``objective``, or None."""
        return next((g for g in self.gains if g.objective == objective), None)


def gain_ratio(objective: RankFigure, best: float, single: float) -> float:
    """How many times better ``best`` is than ``single``: the single device's latency over the best
    plan's, or the best plan's throughput over the single device's (inf when the other figure is 0)."""
    num, den = (single, best) if objective == "latency" else (best, single)
    if den <= 0:
        return 1.0 if num <= 0 else math.inf
    return num / den


def split_gain(objective: RankFigure, best: RankedBench, singles: Sequence[RankedBench], *,
               num_requests: int, concurrency: int, interleaved: bool = True, note: str = "") -> SplitGain:
    """The record of one objective from the measured plans: the gain of ``best`` over the one of
    ``singles`` (single-device plans, predicted order; empty: there is none) that measured best."""
    single = measured = predicted = None
    if singles:
        ranks = measured_ranks([s.measured for s in singles], objective)
        single = singles[ranks.index(1)]
        measured = gain_ratio(objective, best.measured, single.measured)
        predicted = gain_ratio(objective, best.predicted, single.predicted)
    return SplitGain(objective=objective, num_requests=num_requests, concurrency=concurrency,
                     interleaved=interleaved, note=note, best=best, singles=tuple(singles), single=single,
                     gain=measured, predicted_gain=predicted)


def _figure(objective: RankFigure, value: float) -> str:
    if objective == "latency":
        return f"{value * 1e3:.1f} ms"
    return "inf req/s" if math.isinf(value) else f"{value:.2f} req/s"


def gain_line(g: SplitGain) -> str:
    """One sentence for people: what the split gained, measured, and on which plans."""
    best = describe_stages(g.best.bench.plan)
    if g.single is None:
        return (f"split: no single device can run the whole model; the best {g.objective} plan ({best}) "
                f"measured {_figure(g.objective, g.best.measured)}")
    if not g.is_split:
        return (f"no split: the best {g.objective} plan runs on one device ({best}), gain 1.0x, "
                f"measured {_figure(g.objective, g.best.measured)}")
    single = describe_stages(g.single.bench.plan)
    if len(g.singles) > 1:
        single += f", the {'fastest' if g.objective == 'latency' else 'best'} of {len(g.singles)} measured"
    times = "x" if g.gain is None or math.isinf(g.gain) else f"{g.gain:.2f}x"
    if g.objective == "throughput":
        what = "the throughput of the best single device"
    elif g.gain is not None and g.gain < 1.0:  # measured slower than predicted: say it, not "0.5x faster"
        what = "the speed of the fastest single device: slower"
    else:
        what = "faster than the fastest single device"
    return (f"split: {times} {what} ({best}, measured {_figure(g.objective, g.best.measured)} vs "
            f"{_figure(g.objective, g.single.measured)} on {single}; predicted {g.predicted_gain:.2f}x)")


def encode_gain(result: GainResult) -> bytes:
    """gain.json text (indented)."""
    return encode_record(result)


def decode_gain(data: bytes | str, where: str = "gain file") -> GainResult:
    """Parse gain.json; SchemaError for another schema or a malformed file."""
    return decode_record(data, where, "gain", GAIN_SCHEMA, GainResult,
                         "write it with splitinfer.runtime.gain.measure_gain (or `splitinfer demo`)",
                         "measure again")


def save_gain(result: GainResult, path: str | Path) -> None:
    """Write ``result`` to ``path`` as JSON."""
    Path(path).write_bytes(encode_gain(result))


def load_gain(path: str | Path) -> GainResult:
    """Read a gain.json written by :func:`save_gain`."""
    return decode_gain(read_file(path, "gain file", "check the path", SchemaError), str(path))

