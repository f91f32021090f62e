"""Joules per timing window: a power trace integrated over the windows a profile timed its runs in.

Windows are ``(start_s, end_s)`` pairs on the profile's clock; ``offset_s`` is the trace's clock minus
that clock (a log timed on another machine, or from its own start): a window covers trace times
``start_s + offset_s`` to ``end_s + offset_s``. Power between samples is interpolated linearly, so
a window's energy is the trapezoid rule over its edges (power interpolated there) and the samples
inside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from splitinfer.energy.trace import PowerTrace
from splitinfer.errors import ProfileError
from splitinfer.units import check_number

# A gap between samples wider than this many of the trace's median spacing is a hole in the log
# (the logger stalled, the meter reset), not a slow sample: no window may span one.
GAP_FACTOR = 5.0


@dataclass(frozen=True)
class WindowEnergy:
    """The energy a trace gives one window."""

    start_s: float  # the window as given, on the profile's clock
    end_s: float
    joules: float
    mean_watts: float  # joules / (end_s - start_s)
    samples: int  # trace samples inside the window (its edges included)


def _windows(windows: Sequence[tuple[float, float]], offset_s: float) -> np.ndarray:
    rows = []
    for k, window in enumerate(windows):
        try:
            start, end = window
        except (TypeError, ValueError):
            raise ProfileError(f"windows[{k}] is {window!r}", "give (start_s, end_s) pairs") from None
        check_number(start, f"windows[{k}] start_s", error=ProfileError)
        check_number(end, f"windows[{k}] end_s", low=start, low_open=True, error=ProfileError,
                     fix="a window ends after it starts")
        rows.append((float(start) + offset_s, float(end) + offset_s))
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


def _check_trace(trace: PowerTrace) -> None:
    if len(trace) < 2:
        raise ProfileError(f"power trace {trace.source} has {len(trace)} sample(s)",
                           "record power for longer than the runs (two samples at least)")


def energy_in_windows(trace: PowerTrace, windows: Sequence[tuple[float, float]], *, offset_s: float = 0.0,
                      min_samples: int = 2, max_gap_s: float | None = None) -> tuple[WindowEnergy, ...]:
    """The joules and mean watts of ``trace`` in each of ``windows``.

    Errors (ProfileError, naming the window): a window not inside the trace; a window holding fewer
    than ``min_samples`` samples (a trace too sparse for it: 0 accepts the power interpolated between
    the samples around it); a window spanning a gap between samples wider than ``max_gap_s`` (None:
    5 times the trace's median spacing).
    """
    offset_s = float(check_number(offset_s, "offset_s", error=ProfileError))
    check_number(min_samples, "min_samples", low=0, whole=True, error=ProfileError)
    _check_trace(trace)
    times, watts = trace.times_s, trace.watts
    spacing = np.diff(times)
    if max_gap_s is None:
        median = float(np.median(spacing))
        max_gap_s = GAP_FACTOR * median if median > 0 else float("inf")
    else:
        check_number(max_gap_s, "max_gap_s", low=0, low_open=True, error=ProfileError)
    first, last = trace.span_s
    results = []
    for k, (start, end) in enumerate(_windows(windows, offset_s)):
        shown = f"windows[{k}] ({start - offset_s:.6f} s to {end - offset_s:.6f} s"
        shown += f", {start:.6f} s to {end:.6f} s on the trace's clock)" if offset_s else ")"
        if start < first or end > last:
            raise ProfileError(f"{shown} is not inside power trace {trace.source}, which runs from "
                               f"{first:.6f} s to {last:.6f} s",
                               "record power through the whole profile, or set offset_s to the trace's "
                               "clock minus the profile's")
        lo = int(np.searchsorted(times, start, side="left"))  # first sample at or after start
        hi = int(np.searchsorted(times, end, side="right"))  # first sample after end
        inside = hi - lo
        if inside < min_samples:
            every = float(np.median(spacing))
            raise ProfileError(f"{shown} holds {inside} sample(s) of power trace {trace.source} (one every "
                               f"{every:.6g} s): the trace is too sparse for it, {min_samples} are needed",
                               "sample power faster, time longer windows (many runs back to back), or "
                               "pass min_samples=0 to interpolate between the samples around it")
        # The spacings the window overlaps: from the sample before it to the sample after it.
        before, after = max(lo - 1, 0), min(hi, len(times) - 1)
        if after > before:
            gaps = spacing[before:after]
            worst = int(np.argmax(gaps))
            if gaps[worst] > max_gap_s:
                at = before + worst
                raise ProfileError(f"{shown} spans a gap in power trace {trace.source}: no sample from "
                                   f"{times[at]:.6f} s to {times[at + 1]:.6f} s ({gaps[worst]:.6g} s, over "
                                   f"max_gap_s {max_gap_s:.6g} s)",
                                   "profile again while the logger runs without stalls, or drop the window")
        t = np.concatenate(([start], times[lo:hi], [end]))
        w = np.concatenate(([np.interp(start, times, watts)], watts[lo:hi], [np.interp(end, times, watts)]))
        joules = float(np.sum((w[1:] + w[:-1]) * np.diff(t)) / 2.0)
        results.append(WindowEnergy(float(start - offset_s), float(end - offset_s), joules,
                                    float(joules / (end - start)), inside))
    return tuple(results)


def idle_power(trace: PowerTrace, windows: Sequence[tuple[float, float]] = (), *, offset_s: float = 0.0,
               idle: tuple[float, float] | None = None) -> float:
    """The watts a device draws doing nothing: the median of the samples of ``trace`` inside ``idle``
    (a window on the profile's clock, when given), else of the samples outside all ``windows``."""
    offset_s = float(check_number(offset_s, "offset_s", error=ProfileError))
    _check_trace(trace)
    times = trace.times_s
    if idle is not None:
        (start, end), = _windows([idle], offset_s)
        chosen = (times >= start) & (times <= end)
        where = f"the idle window ({start - offset_s:.6f} s to {end - offset_s:.6f} s)"
    else:
        chosen = np.ones(times.shape, dtype=bool)
        for start, end in _windows(windows, offset_s):
            chosen &= ~((times >= start) & (times <= end))
        where = "outside the windows"
    if not chosen.any():
        raise ProfileError(f"power trace {trace.source} has no sample {where}",
                           "record power for a while before or after the runs, or give an idle window "
                           "that holds samples")
    return float(np.median(trace.watts[chosen]))
