"""Energy from measured power: recorded power logs and live sensors into one form, and the joules
in each timing window. Plain Python and numpy (no model runtime, no network). Modules:

- ``trace``: :class:`PowerTrace`, power samples (seconds, watts, ascending) and where they came from.
- ``logs``: readers of recorded logs: :func:`read_smartpower3` (an ODROID SmartPower3's serial log,
  raw or as DIME's host logger saves it), :func:`read_power_csv` (``time,watts`` or
  ``time,volts,amps``), :func:`read_tegrastats` (a Jetson's input rail). Bounded, never executing
  anything; malformed input is a ProfileError naming the file and line.
- ``align``: :func:`energy_in_windows` (joules and mean watts per ``(start_s, end_s)`` window, the
  trace interpolated and integrated by the trapezoid rule, with a clock offset) and
  :func:`idle_power` (the median power outside the windows, or in an idle window).
- ``sensors``: live sensors with ``available()``: :class:`RaplSensor` (Linux powercap),
  :class:`NvmlSensor` (NVIDIA GPUs through nvidia-ml-py), :class:`BatterySensor` (sysfs battery).
- ``sampler``: :class:`Sampler`, one sensor polled in a background thread into a PowerTrace.

Typical use, a recorded log joined with runs timed on the same clock::

    from splitinfer.energy import energy_in_windows, idle_power, read_smartpower3

    trace = read_smartpower3("power.csv", channel=0)
    per_run = energy_in_windows(trace, [(t0, t1), (t2, t3)])
    idle_w = idle_power(trace, [(t0, t1), (t2, t3)])
"""

from splitinfer.energy.align import WindowEnergy, energy_in_windows, idle_power
from splitinfer.energy.logs import read_power_csv, read_power_log, read_smartpower3, read_tegrastats
from splitinfer.energy.sampler import Sampler
from splitinfer.energy.sensors import BatterySensor, NvmlSensor, RaplSensor
from splitinfer.energy.trace import PowerTrace

__all__ = [
    "BatterySensor",
    "NvmlSensor",
    "PowerTrace",
    "RaplSensor",
    "Sampler",
    "WindowEnergy",
    "energy_in_windows",
    "idle_power",
    "read_power_csv",
    "read_power_log",
    "read_smartpower3",
    "read_tegrastats",
]
