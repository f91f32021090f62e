"""Live power sensors of this machine, each a small class: ``available()`` says None when it can be
read, else why not; ``counts_energy`` says whether it reads a counter (``read_joules()``: joules
since its first read) or the power now (``read_watts()``).

- :class:`RaplSensor`: Linux powercap RAPL (``intel-rapl:N/energy_uj``, all packages summed).
- :class:`NvmlSensor`: an NVIDIA GPU through NVML (``nvidia-ml-py``, imported when first used).
- :class:`BatterySensor`: a discharging laptop battery (``power_supply/BAT*``).

Sysfs roots are constructor arguments, so tests read fake trees. Every number read goes through
``check_number``; a value that cannot be read raises ProfileError.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from splitinfer.errors import ProfileError
from splitinfer.units import check_number

_PACKAGE_ZONE = re.compile(r"intel-rapl:\d+")  # not intel-rapl:0:0 (core, uncore): inside the package's


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            return handle.read(256).decode("ascii", "replace").strip()
    except OSError as e:
        raise ProfileError(f"cannot read {path}: {e.strerror or e}",
                           "check the sensor's permissions (RAPL's energy_uj is root's since Linux 5.10)"
                           ) from None


def _read_int(path: Path) -> int:
    text = _read_text(path)
    try:
        value = int(text)
    except ValueError:
        raise ProfileError(f"{path} holds {text[:40]!r}, not a whole number",
                           "check that the path is the sensor's") from None
    return int(check_number(value, str(path), low=-2**63, whole=True, error=ProfileError))


class RaplSensor:
    """The energy counters of every CPU package (``intel-rapl:N``) under ``root``, summed."""

    counts_energy = True

    def __init__(self, root: str | Path = "/sys/class/powercap") -> None:
        self.root = Path(root)
        self._last: dict[Path, int] = {}
        self._joules = 0.0

    @property
    def name(self) -> str:
        return f"RAPL {self.root}"

    def zones(self) -> list[Path]:
        """The package zones under ``root``, in name order."""
        try:
            found = [p for p in self.root.iterdir() if _PACKAGE_ZONE.fullmatch(p.name)]
        except OSError:
            return []
        return sorted(found, key=lambda p: p.name)

    def available(self) -> str | None:
        zones = self.zones()
        if not zones:
            return f"no RAPL package zone (intel-rapl:N) under {self.root}: not Linux on Intel or AMD x86"
        try:
            for zone in zones:
                _read_int(zone / "energy_uj")
                _read_int(zone / "max_energy_range_uj")
        except ProfileError as e:
            return e.problem
        return None

    def read_joules(self) -> float:
        """Joules all packages used since the first read (0.0 then); a counter that wrapped around
        (past ``max_energy_range_uj``) is counted on. Read more often than a counter wraps (minutes)."""
        zones = self.zones()
        if not zones:
            raise ProfileError(f"no RAPL package zone under {self.root}", "use another sensor")
        for zone in zones:
            now = _read_int(zone / "energy_uj")
            last = self._last.get(zone)
            if last is not None:
                delta = now - last
                if delta < 0:
                    delta += _read_int(zone / "max_energy_range_uj")
                self._joules += max(delta, 0) / 1e6
            self._last[zone] = now
        return self._joules


class NvmlSensor:
    """GPU ``index`` through NVML: its total energy counter (mJ, Volta and later) where the GPU has
    one, else its power draw (mW)."""

    def __init__(self, index: int = 0) -> None:
        self.index = int(check_number(index, "index", low=0, whole=True, error=ProfileError))
        self._nvml: Any = None
        self._handle: Any = None
        self._reason: str | None = None
        self._first_mj: int | None = None
        self.counts_energy = False

    @property
    def name(self) -> str:
        return f"NVML GPU {self.index}"

    def available(self) -> str | None:
        if self._handle is None and self._reason is None:
            self._reason = self._open()
        return self._reason

    def _open(self) -> str | None:
        try:
            import pynvml  # nvidia-ml-py: only where a GPU is read
        except ImportError:
            return "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            return f"NVML cannot start ({e}): no NVIDIA driver on this machine"
        try:
            count = pynvml.nvmlDeviceGetCount()
            if self.index >= count:
                pynvml.nvmlShutdown()
                return f"NVML sees {count} GPU(s), no GPU {self.index}"
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            try:
                pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                self.counts_energy = True
            except pynvml.NVMLError:
                pynvml.nvmlDeviceGetPowerUsage(handle)  # no counter: power must then be readable
        except pynvml.NVMLError as e:
            pynvml.nvmlShutdown()
            return f"NVML cannot read GPU {self.index}'s energy or power ({e})"
        self._nvml, self._handle = pynvml, handle
        return None

    def _ready(self) -> Any:
        reason = self.available()
        if reason is not None:
            raise ProfileError(f"{self.name} cannot be read: {reason}", "use another sensor")
        return self._handle

    def read_joules(self) -> float:
        """Joules the GPU used since the first read (0.0 then)."""
        handle = self._ready()
        if not self.counts_energy:
            raise ProfileError(f"{self.name} has no energy counter", "use read_watts")
        try:
            millijoules = self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except self._nvml.NVMLError as e:
            raise ProfileError(f"{self.name}: cannot read its energy ({e})", "check the driver") from None
        check_number(millijoules, f"{self.name} energy (mJ)", low=0, error=ProfileError)
        if self._first_mj is None:
            self._first_mj = int(millijoules)
        return (int(millijoules) - self._first_mj) / 1e3

    def read_watts(self) -> float:
        """The GPU's power draw now (NVML averages it over a short time, about a second on most GPUs)."""
        handle = self._ready()
        try:
            milliwatts = self._nvml.nvmlDeviceGetPowerUsage(handle)
        except self._nvml.NVMLError as e:
            raise ProfileError(f"{self.name}: cannot read its power ({e})", "check the driver") from None
        return check_number(milliwatts, f"{self.name} power (mW)", low=0, error=ProfileError) / 1e3

    def close(self) -> None:
        """Releases NVML (each successful open holds one reference)."""
        if self._handle is not None:
            self._handle = None
            self._nvml.nvmlShutdown()
        self._reason = "closed"


class BatterySensor:
    """A battery's discharge (``name``, or the first ``BAT*`` under ``root``): what the machine
    draws while it runs on battery. ``power_now`` (µW), else ``current_now`` (µA) x ``voltage_now`` (µV)."""

    counts_energy = False

    def __init__(self, root: str | Path = "/sys/class/power_supply", name: str | None = None) -> None:
        self.root = Path(root)
        self.battery_name = name

    @property
    def name(self) -> str:
        battery = self._battery()
        return f"battery {battery if battery is not None else self.root}"

    def _battery(self) -> Path | None:
        if self.battery_name is not None:
            path = self.root / self.battery_name
            return path if path.is_dir() else None
        try:
            found = sorted(p for p in self.root.iterdir() if p.name.startswith("BAT") and p.is_dir())
        except OSError:
            return None
        return found[0] if found else None

    def available(self) -> str | None:
        battery = self._battery()
        if battery is None:
            return f"no battery {self.battery_name or 'BAT*'} under {self.root}"
        try:
            self.read_watts()
        except ProfileError as e:
            return e.problem
        return None

    def read_watts(self) -> float:
        """The watts the battery delivers now; ProfileError when it is not discharging (plugged in,
        its power is the charger's business, not what the machine draws)."""
        battery = self._battery()
        if battery is None:
            raise ProfileError(f"no battery {self.battery_name or 'BAT*'} under {self.root}",
                               "use another sensor")
        status = _read_text(battery / "status")
        if status != "Discharging":
            raise ProfileError(f"battery {battery.name} is {status!r}, not discharging",
                               "unplug the charger while measuring")
        if (battery / "power_now").exists():
            return abs(_read_int(battery / "power_now")) / 1e6
        if (battery / "current_now").exists() and (battery / "voltage_now").exists():
            # Some drivers sign the current (negative while discharging): only its size is power.
            return abs(_read_int(battery / "current_now")) * abs(_read_int(battery / "voltage_now")) / 1e12
        raise ProfileError(f"battery {battery.name} has neither power_now nor current_now and voltage_now",
                           "use another sensor")
