"""The device clocks a configuration sets (DVFS): the CPU's highest frequency through Linux cpufreq and an
NVIDIA GPU's application clocks through NVML, applied before a stage is deployed or a partition is
timed, and put back when the worker stops.

A clock is the whole machine's, not a stage's: the last request that sets one wins, as on any device
whose governor is shared. Where the device cannot set it (no cpufreq, as in most containers; not
root; no NVML), the request fails with a WorkerError saying so, and nothing is changed.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

from splitinfer.errors import WorkerError
from splitinfer.runtime.device._resources import visible_gpu
from splitinfer.runtime.wire.messages import Clocks

CPU_ROOT = Path("/sys/devices/system/cpu")


def _read_khz(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError) as e:
        raise WorkerError(f"cannot read {path}: {e}", "check the device's cpufreq driver") from None


class ClockControl:
    """Sets and restores this machine's clocks; ``cpu_root`` and ``nvml`` (the ``pynvml`` module) are
    parameters so that tests use a fake sysfs tree and a fake NVML."""

    def __init__(self, cpu_root: Path | None = None, nvml: Any = None) -> None:
        self.cpu_root = Path(cpu_root) if cpu_root is not None else CPU_ROOT
        self._nvml = nvml
        self._saved_cpu: dict[Path, str] = {}  # scaling_max_freq as found, to put back
        self._gpu_handle: Any = None  # set once application clocks were changed
        self._applied: Clocks | None = None  # what the last apply set: the same again changes nothing
        self._lock = threading.Lock()

    def apply(self, clocks: Clocks | None) -> None:
        """Set what ``clocks`` names (0 / empty: leave it)."""
        if clocks is None or clocks == self._applied:  # profiling sends a device's clocks with each request
            return
        if clocks.restore:
            self.restore()
        with self._lock:
            self._applied = None  # until it succeeds
            if clocks.cpu_max_khz:
                self._set_cpu(clocks.cpu_max_khz)
            if clocks.gpu_clocks_mhz:
                self._set_gpu(*clocks.gpu_clocks_mhz)
            self._applied = clocks

    def _set_cpu(self, khz: int) -> None:
        policies = sorted(self.cpu_root.glob("cpu[0-9]*/cpufreq"))
        if not policies:
            raise WorkerError(f"this device has no cpufreq ({self.cpu_root}/cpu*/cpufreq): its CPU clock "
                              "cannot be set", "drop cpu_max_khz from the configuration, or run the worker "
                              "on the device itself rather than in a container")
        for policy in policies:
            low, high = _read_khz(policy / "cpuinfo_min_freq"), _read_khz(policy / "cpuinfo_max_freq")
            if not low <= khz <= high:
                raise WorkerError(f"cpu_max_khz {khz} is outside {policy.parent.name}'s range {low}-{high} "
                                  "kHz",
                                  "give a frequency the CPU supports (scaling_available_frequencies)")
        for policy in policies:
            target = policy / "scaling_max_freq"
            try:
                self._saved_cpu.setdefault(target, target.read_text().strip())
                target.write_text(f"{khz}\n")
            except OSError as e:
                raise WorkerError(f"cannot set {target}: {e.strerror or e}",
                                  "run the worker as root (cpufreq is root's), or drop cpu_max_khz") from None

    def _set_gpu(self, memory_mhz: int, graphics_mhz: int) -> None:
        nvml = self._nvml
        if nvml is None:
            try:
                import pynvml as nvml  # the energy extra: nvidia-ml-py
            except ImportError:
                raise WorkerError("gpu_clocks_mhz needs NVML, which is not installed here",
                                  "pip install 'splitinfer[energy]' on the device, or drop "
                                  "gpu_clocks_mhz") from None
            self._nvml = nvml
        try:
            if self._gpu_handle is None:  # NVML initialised once, when its GPU is first opened
                nvml.nvmlInit()
            handle = self._gpu_handle or visible_gpu(nvml)[0]
            nvml.nvmlDeviceSetApplicationsClocks(handle, int(memory_mhz), int(graphics_mhz))
        except Exception as e:  # NVMLError: no GPU, not permitted, clocks not supported
            raise WorkerError(f"cannot set the GPU's application clocks to {memory_mhz}/{graphics_mhz} MHz: "
                              f"{e}",
                              "give clocks the GPU supports (nvidia-smi -q -d SUPPORTED_CLOCKS) and run the "
                              "worker as root, or drop gpu_clocks_mhz") from None
        self._gpu_handle = handle

    def restore(self) -> None:
        """Put back what :meth:`apply` changed (errors are ignored: the worker is stopping)."""
        with self._lock:
            self._applied = None
            for target, value in self._saved_cpu.items():
                with contextlib.suppress(OSError):
                    target.write_text(f"{value}\n")
            self._saved_cpu.clear()
            if self._gpu_handle is not None:
                with contextlib.suppress(Exception):  # best effort: the worker is stopping
                    self._nvml.nvmlDeviceResetApplicationsClocks(self._gpu_handle)
                    self._nvml.nvmlShutdown()  # the nvmlInit of _set_gpu
                self._gpu_handle = None
