"""Energy per block from measured power: timing windows recorded while profiling, joined with a power
log afterwards (DIME's workflow: a meter logs while the blocks run, joined with the timing).

A power meter samples every 10 ms to 1 s, and a block runs for a millisecond: a block's own runs in
interleaved rounds cannot be told apart in a log. So ``profile --energy-window S`` runs each block
*alone and back to back* for ``S`` seconds (:func:`time_energy_windows`) and records the window it
ran in on the device's clock, then leaves the device idle for ``S`` seconds (the idle window). Later,
:func:`join_power_log` reads the log's samples in each window: the mean watts while a block runs, its
joules per run (those watts x its median seconds) and the device's idle watts.

Clocks: windows are on the device's clock (``time.time()`` where the block ran). A log kept on the
device (tegrastats, RAPL, a logger on the device) is on that clock; a log kept on the profiling
machine (a SmartPower3 on its USB port, DIME's logger) is moved by the device's clock offset
measured while profiling; ``offset_s`` adds the log clock's own skew.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal

import msgspec

from splitinfer.energy import PowerTrace, energy_in_windows, idle_power
from splitinfer.errors import ProfileError
from splitinfer.profile.partition_timing import MAX_TIMED_RUNS, PartitionTiming
from splitinfer.profile.schema import DeviceEnergy, Profile, Stats
from splitinfer.units import check_number

MAX_ENERGY_WINDOW_S = 600.0  # one block's window; a longer one only spends the profile's time
LogClock = Literal["device", "profiler"]


def time_energy_windows(runner: object, block_bytes: Sequence[bytes], block_feeds: list[dict], *,
                        window_s: float, slowdown: float = 1.0, blocks: list[Stats | None] | None = None,
                        progress: Callable[[int, int, str], None] | None = None,
                        sleep: Callable[[float], None] = time.sleep) -> DeviceEnergy:
    """Each block run alone for ``window_s`` seconds on ``runner``'s device (a profiler Runner), its
    window recorded; then the device left idle as long. ``blocks[i]`` None: block i cannot run there
    (no window). The runner's ``clock_offset_s()`` (when it has one) is recorded with them."""
    check_number(window_s, "window_s", low=0, low_open=True, high=MAX_ENERGY_WINDOW_S, error=ProfileError,
                 fix="seconds each block runs back to back while power is logged, e.g. 1")
    offset = float(runner.clock_offset_s()) if hasattr(runner, "clock_offset_s") else 0.0
    windows: list[tuple[float, float] | None] = []
    total = len(block_bytes) + 1
    for i, (part, feeds) in enumerate(zip(block_bytes, block_feeds, strict=True)):
        if blocks is not None and blocks[i] is None:
            windows.append(None)
            continue
        if progress:
            progress(i, total, f"block {i} alone for {window_s:g} s (energy window)")
        # rel_precision 0: never precise enough, so it runs until the window's seconds are spent.
        timing: PartitionTiming = runner.profile(part, feeds, num_warmup=1, min_runs=1,
                                                 max_runs=MAX_TIMED_RUNS, budget_s=window_s,
                                                 rel_precision=0.0, slowdown=slowdown)
        windows.append(timing.window_s)
    if progress:
        progress(total - 1, total, f"idle for {window_s:g} s (idle window)")
    start = time.time()
    sleep(window_s)
    end = time.time()
    return DeviceEnergy(windows=tuple(windows), idle_window=(start + offset, end + offset),
                        clock_offset_s=offset)


def _log_offset(energy: DeviceEnergy, clock: LogClock, offset_s: float) -> float:
    """The log's clock minus the device's: what a device time is moved by to read the log."""
    if clock == "device":
        return offset_s
    if clock == "profiler":
        return offset_s - energy.clock_offset_s
    raise ProfileError(f"clock is {clock!r}", "use 'device' (the log was kept on the device) or 'profiler' "
                       "(on the machine that ran `splitinfer profile`)")


def join_power_log(profile: Profile, device: str, trace: PowerTrace, *, clock: LogClock = "device",
                   offset_s: float = 0.0, min_samples: int = 2) -> Profile:
    """``profile`` with ``device``'s energy filled from ``trace``: mean watts in each block's window,
    joules per run, idle watts. ``clock``: whose clock the trace's times are on ('device' or
    'profiler'); ``offset_s``: that clock's skew (the trace's time minus that clock's at one moment).
    ProfileError names a device without windows, a window the trace does not cover or holds too few
    samples of, or a gap in the trace inside a window."""
    if device not in profile.devices:
        raise ProfileError(f"device {device!r} is not in the profile",
                           f"use one of: {', '.join(profile.devices) or '(none)'}")
    dev = profile.devices[device]
    energy = dev.energy
    if energy is None:
        raise ProfileError(f"the profile has no energy windows for device {device!r}",
                           "profile again with energy windows (`splitinfer profile --energy-window 1`, or "
                           "ProfileSettings(energy_window_s=1)) while the power log runs")
    offset_s = float(check_number(offset_s, "offset_s", error=ProfileError))
    shift = _log_offset(energy, clock, offset_s)
    timed = [(b, w) for b, w in enumerate(energy.windows) if w is not None]
    measured = energy_in_windows(trace, [w for _, w in timed], offset_s=shift, min_samples=min_samples)
    busy: list[float | None] = [None] * len(energy.windows)
    joules: list[float | None] = [None] * len(energy.windows)
    for (b, _), got in zip(timed, measured, strict=True):
        busy[b] = got.mean_watts
        stats = dev.blocks[b] if b < len(dev.blocks) else None
        joules[b] = got.mean_watts * stats.median_s if stats is not None else None
    idle = idle_power(trace, [w for _, w in timed], offset_s=shift, idle=energy.idle_window)
    joined = msgspec.structs.replace(energy, busy_w=tuple(busy), block_j=tuple(joules), idle_w=idle,
                                     source=trace.source)
    devices = dict(profile.devices)
    devices[device] = msgspec.structs.replace(dev, energy=joined)
    return msgspec.structs.replace(profile, devices=devices)
