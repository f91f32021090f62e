"""Live sensors on fake sysfs trees (RAPL, battery), NVML where this machine has it, and the Sampler."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from splitinfer.energy import BatterySensor, NvmlSensor, RaplSensor, Sampler, energy_in_windows
from splitinfer.errors import ProfileError


def _zone(root: Path, name: str, energy_uj: int, max_uj: int = 262143328850) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


def test_rapl_sums_the_packages_and_skips_their_subzones(tmp_path: Path) -> None:
    zero, one = _zone(tmp_path, "intel-rapl:0", 1_000_000), _zone(tmp_path, "intel-rapl:1", 5_000_000)
    _zone(tmp_path, "intel-rapl:0:0", 7_000_000)  # core: inside package 0's count already
    sensor = RaplSensor(tmp_path)
    assert sensor.available() is None
    assert sensor.read_joules() == 0.0
    (zero / "energy_uj").write_text("3500000\n")
    (one / "energy_uj").write_text("6000000\n")
    (tmp_path / "intel-rapl:0:0" / "energy_uj").write_text("9000000\n")
    assert sensor.read_joules() == pytest.approx(3.5)


def test_rapl_counts_on_past_the_counter_wrap(tmp_path: Path) -> None:
    zone = _zone(tmp_path, "intel-rapl:0", 999_000_000, max_uj=1_000_000_000)
    sensor = RaplSensor(tmp_path)
    sensor.read_joules()
    (zone / "energy_uj").write_text("2000000\n")  # 1 J to the wrap, 2 J after it
    assert sensor.read_joules() == pytest.approx(3.0)
    (zone / "energy_uj").write_text("2500000\n")
    assert sensor.read_joules() == pytest.approx(3.5)


def test_rapl_unavailable_says_why(tmp_path: Path) -> None:
    assert "no RAPL package zone" in RaplSensor(tmp_path).available()
    zone = _zone(tmp_path, "intel-rapl:0", 0)
    (zone / "energy_uj").write_text("lots\n")
    assert "holds 'lots', not a whole number" in RaplSensor(tmp_path).available()


def _battery(root: Path, status: str = "Discharging", **values: int) -> Path:
    battery = root / "BAT0"
    battery.mkdir(parents=True)
    (battery / "status").write_text(status + "\n")
    for name, value in values.items():
        (battery / name).write_text(f"{value}\n")
    (root / "AC").mkdir()
    return battery


def test_battery_power_now(tmp_path: Path) -> None:
    _battery(tmp_path, power_now=12_500_000)
    sensor = BatterySensor(tmp_path)
    assert sensor.available() is None
    assert sensor.read_watts() == pytest.approx(12.5)


def test_battery_current_times_voltage(tmp_path: Path) -> None:
    _battery(tmp_path, current_now=-1_200_000, voltage_now=11_400_000)  # some drivers sign the current
    assert BatterySensor(tmp_path).read_watts() == pytest.approx(13.68)


def test_battery_unavailable_says_why(tmp_path: Path) -> None:
    assert BatterySensor(tmp_path).available() == f"no battery BAT* under {tmp_path}"
    battery = _battery(tmp_path, status="Charging", power_now=1)
    assert "battery BAT0 is 'Charging', not discharging" in BatterySensor(tmp_path).available()
    (battery / "status").write_text("Discharging\n")
    (battery / "power_now").unlink()
    assert "neither power_now nor current_now" in BatterySensor(tmp_path).available()


def test_nvml_where_this_machine_has_it() -> None:
    sensor = NvmlSensor(0)
    reason = sensor.available()
    if reason is not None:
        pytest.skip(f"NVML: {reason}")
    try:
        assert 0.0 < sensor.read_watts() < 2000.0
        if sensor.counts_energy:
            assert sensor.read_joules() == 0.0
    finally:
        sensor.close()


class _Counter:
    """A fake energy counter: 5 W on a fake clock that advances 10 ms per read."""

    name = "fake counter"
    counts_energy = True

    def __init__(self) -> None:
        self.ticks = itertools.count()
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def available(self) -> str | None:
        return None

    def read_joules(self) -> float:
        self.now = next(self.ticks) * 0.01
        return 5.0 * self.now


def test_sampler_turns_a_counter_into_watts() -> None:
    sensor = _Counter()
    with Sampler(sensor, interval_s=0.001, clock=sensor.clock) as sampler:
        while sensor.now < 0.1:
            pass
    trace = sampler.trace
    assert len(trace) >= 3
    np.testing.assert_allclose(trace.watts, 5.0)
    start, end = trace.span_s
    (window,) = energy_in_windows(trace, [(start, end)], min_samples=0)
    assert window.joules == pytest.approx(5.0 * (end - start))


class _Broken:
    name = "broken"
    counts_energy = False

    def __init__(self, reason: str | None = None) -> None:
        self.reason, self.reads = reason, 0

    def available(self) -> str | None:
        return self.reason

    def read_watts(self) -> float:
        self.reads += 1
        if self.reads == 3:  # once, in the polling thread: stop() must raise it there
            raise ProfileError("the sensor went away", "plug it in")
        return 1.0


def test_sampler_errors() -> None:
    with pytest.raises(ProfileError, match="broken cannot be read: unplugged"):
        Sampler(_Broken("unplugged")).start()
    sampler = Sampler(_Broken(), interval_s=0.001).start()
    while sampler._thread.is_alive():
        pass
    with pytest.raises(ProfileError, match="the sensor went away"):
        sampler.stop()
    with pytest.raises(ProfileError, match="interval_s is 0"):
        Sampler(_Broken(), interval_s=0)
