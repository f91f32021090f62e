"""``splitinfer energy join``: a recorded power log joined with a profile's energy windows; ``energy record``:
a live sensor of this machine logged to a ``time,watts`` CSV on its clock."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from splitinfer.cli._common import check_writable, console
from splitinfer.energy import BatterySensor, NvmlSensor, RaplSensor, Sampler, read_power_log
from splitinfer.energy.logs import FORMATS
from splitinfer.errors import ProfileError
from splitinfer.profile.energy_windows import join_power_log
from splitinfer.profile.files import load_profile, save_profile
from splitinfer.units import check_number

JOIN_HELP = "\n\n".join([
    "Join a power log recorded while `splitinfer profile --energy-window S` ran with the profile: the watts "
    "while each block ran, the joules per block run and the device's idle watts, written into the profile "
    "(then `plan --objective energy` prices that device's blocks with them).",
    "Logs: a SmartPower3's (DIME's logger CSV, or the meter's serial lines), a CSV `time,watts` or "
    "`time,volts,amps` (seconds), or Jetson `tegrastats` lines. --clock says whose clock the log's times "
    "are on: `device` (kept on the device: tegrastats, `energy record`) or `profiler` (kept on the machine "
    "that ran `splitinfer profile`, e.g. a SmartPower3 on its USB port); --offset adds that clock's skew "
    "in seconds (the log's time minus that clock's at one moment).",
    "Example: splitinfer energy join profile.json --device camera --log power.csv --clock profiler",
])
JOIN_SHORT = "Join a power log with a profile's energy windows: watts and joules per block, idle watts."


def join_command(
    profile_path: Path = typer.Argument(..., metavar="PROFILE", help="profile.json with energy windows."),
    device: str = typer.Option(..., "--device", metavar="NAME", help="The device the log measured."),
    log: Path = typer.Option(..., "--log", metavar="FILE", help="The power log."),
    log_format: str = typer.Option("auto", "--format", help="auto | smartpower3 | csv | tegrastats."),
    clock: str = typer.Option("device", "--clock", help="Whose clock the log is on: device | profiler."),
    offset: float = typer.Option(0.0, "--offset", metavar="S", help="The log clock's skew in seconds."),
    channel: str = typer.Option("input", "--channel", help="SmartPower3: input, 0 or 1."),
    rail: str | None = typer.Option(None, "--rail", help="tegrastats: the rail (default VDD_IN/POM_5V_IN)."),
    interval_ms: float = typer.Option(1000.0, "--interval-ms",
                                      help="tegrastats without time stamps: its --interval."),
    output: Path | None = typer.Option(None, "-o", "--output",
                                       help="Where to write the joined profile (default: PROFILE itself)."),
) -> None:
    if clock not in ("device", "profiler"):
        raise ProfileError(f"--clock is {clock!r}", "use device or profiler")
    check_number(offset, "--offset", error=ProfileError, fix="seconds, e.g. -3.5")
    check_writable(output, "-o")
    if log_format not in FORMATS:
        raise ProfileError(f"--format is {log_format!r}", f"use one of: {', '.join(FORMATS)}")
    profile = load_profile(profile_path)
    trace = read_power_log(log, log_format, channel=channel, rail=rail, interval_ms=interval_ms)
    joined = join_power_log(profile, device, trace, clock=clock, offset_s=offset)  # type: ignore[arg-type]
    energy = joined.devices[device].energy
    assert energy is not None
    console.print(f"{device}: idle {energy.idle_w:.3f} W; per block (watts while it runs, joules per run):",
                  highlight=False)
    for b, (watts, joules) in enumerate(zip(energy.busy_w, energy.block_j, strict=True)):
        shown = "cannot run there" if watts is None else \
            f"{watts:8.3f} W  {joules * 1e3:10.4f} mJ" if joules is not None else f"{watts:8.3f} W"
        console.print(f"  block {b:3d}  {shown}", highlight=False)
    target = output or profile_path
    save_profile(joined, target)
    console.print(f"wrote {target}", highlight=False)


SENSORS = {"rapl": RaplSensor, "nvml": NvmlSensor, "battery": BatterySensor}

RECORD_HELP = "\n\n".join([
    "Log a live power sensor of this machine to a `time,watts` CSV (Unix seconds on this machine's clock) "
    "until --duration passes or Ctrl-C: run it on the device while `splitinfer profile --energy-window S` "
    "profiles it, then `splitinfer energy join ... --log FILE` (the default --clock device).",
    "Sensors: `rapl` (Intel/AMD CPU packages through Linux powercap; root since Linux 5.10), `nvml` (an "
    "NVIDIA GPU, `pip install 'splitinfer[energy]'`), `battery` (a discharging laptop battery).",
    "Example: sudo splitinfer energy record --sensor rapl -o rapl.csv --duration 120",
])
RECORD_SHORT = "Log a live power sensor of this machine (RAPL, NVML, battery) to a time,watts CSV."


def record_command(
    sensor: str = typer.Option(..., "--sensor", help="rapl | nvml | battery."),
    output: Path = typer.Option(..., "-o", "--output", help="The CSV to write (time,watts)."),
    interval: float = typer.Option(0.1, "--interval", metavar="S", help="Seconds between reads."),
    duration: float = typer.Option(0.0, "--duration", metavar="S", help="Stop after S seconds (0: Ctrl-C)."),
) -> None:
    if sensor not in SENSORS:
        raise ProfileError(f"--sensor is {sensor!r}", f"use one of: {', '.join(SENSORS)}")
    check_number(interval, "--interval", low=1e-3, high=3600, error=ProfileError, fix="seconds, e.g. 0.1")
    check_number(duration, "--duration", low=0, error=ProfileError, fix="seconds (0: until Ctrl-C)")
    check_writable(output, "-o")
    probe = SENSORS[sensor]()
    why = probe.available()
    if why is not None:
        raise ProfileError(f"the {sensor} sensor cannot be read here: {why}",
                           "use another --sensor, or an external meter (SmartPower3) and `energy join`")
    sampler = Sampler(probe, interval_s=interval).start()
    console.print(f"recording {probe.name} every {interval:g} s to {output} (Ctrl-C stops)", highlight=False)
    try:
        end = time.monotonic() + duration if duration else float("inf")
        while time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))
    except KeyboardInterrupt:
        pass
    trace = sampler.stop()
    rows = "".join(f"{t:.6f},{w:.6f}\n" for t, w in zip(trace.times_s, trace.watts, strict=True))
    output.write_text("time,watts\n" + rows)
    console.print(f"wrote {output}: {len(trace)} samples", highlight=False)
