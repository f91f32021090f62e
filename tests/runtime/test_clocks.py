"""A configuration's clocks on the worker: cpufreq on a fake sysfs tree, NVML through a fake module, and
through a worker's timing request (real cpufreq and NVML clocks need root on a device that has them)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from helpers.runtime_models import mlp_parts, whole_and_parts

from splitinfer.cluster import parse_cluster
from splitinfer.errors import TransportError, WorkerError
from splitinfer.runtime import WorkerClient
from splitinfer.runtime.coordinator.pipeline import clocks_of
from splitinfer.runtime.device import _clocks
from splitinfer.runtime.device._clocks import ClockControl
from splitinfer.runtime.device.config import WorkerConfig
from splitinfer.runtime.device.worker import Worker
from splitinfer.runtime.wire.messages import Clocks


def _cpus(root: Path, count: int = 2, current: int = 2_400_000) -> Path:
    for k in range(count):
        policy = root / f"cpu{k}" / "cpufreq"
        policy.mkdir(parents=True)
        (policy / "cpuinfo_min_freq").write_text("600000\n")
        (policy / "cpuinfo_max_freq").write_text("2400000\n")
        (policy / "scaling_max_freq").write_text(f"{current}\n")
    (root / "cpufreq").mkdir()  # the kernel's global policy folder: not a CPU
    return root


def _max(root: Path, k: int) -> int:
    return int((root / f"cpu{k}" / "cpufreq" / "scaling_max_freq").read_text())


def test_cpu_clock_is_set_on_every_cpu_and_put_back(tmp_path):
    root = _cpus(tmp_path)
    control = ClockControl(root)
    control.apply(Clocks(cpu_max_khz=1_200_000))
    assert _max(root, 0) == _max(root, 1) == 1_200_000
    control.apply(Clocks(cpu_max_khz=900_000))
    control.apply(Clocks(restore=True))  # the default configuration: as the worker found them
    assert _max(root, 0) == _max(root, 1) == 2_400_000
    control.apply(Clocks(cpu_max_khz=600_000))
    control.restore()
    assert _max(root, 1) == 2_400_000


def test_a_clock_the_device_cannot_set_is_a_worker_error_that_changes_nothing(tmp_path):
    root = _cpus(tmp_path)
    with pytest.raises(WorkerError, match="outside cpu0's range 600000-2400000"):
        ClockControl(root).apply(Clocks(cpu_max_khz=3_000_000))
    assert _max(root, 0) == 2_400_000
    with pytest.raises(WorkerError, match=r"has no cpufreq.*cannot be set"):
        ClockControl(tmp_path / "none").apply(Clocks(cpu_max_khz=1_000_000))
    (root / "cpu1" / "cpufreq" / "scaling_max_freq").unlink()
    (root / "cpu1" / "cpufreq" / "scaling_max_freq").mkdir()  # cannot be written
    with pytest.raises(WorkerError, match=r"cannot set .*scaling_max_freq.*run the worker as root"):
        ClockControl(root).apply(Clocks(cpu_max_khz=1_000_000))


class _FakeNvml:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple] = []
        self.fail = fail

    def nvmlInit(self) -> None:
        self.calls.append(("init",))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceSetApplicationsClocks(self, handle: str, memory: int, graphics: int) -> None:
        if self.fail:
            raise RuntimeError("Insufficient Permissions")
        self.calls.append(("set", handle, memory, graphics))

    def nvmlDeviceResetApplicationsClocks(self, handle: str) -> None:
        self.calls.append(("reset", handle))

    def nvmlShutdown(self) -> None:
        self.calls.append(("shutdown",))


def test_gpu_clocks_through_nvml(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    nvml = _FakeNvml()
    control = ClockControl(nvml=nvml)
    control.apply(Clocks(gpu_clocks_mhz=[5001, 1590]))
    control.apply(Clocks(gpu_clocks_mhz=[5001, 1590]))  # profiling sends them with every request
    assert ("set", "gpu1", 5001, 1590) in nvml.calls
    assert nvml.calls.count(("init",)) == 1 and nvml.calls.count(("set", "gpu1", 5001, 1590)) == 1
    control.restore()
    assert nvml.calls[-2:] == [("reset", "gpu1"), ("shutdown",)]
    with pytest.raises(WorkerError, match=r"Insufficient Permissions.*SUPPORTED_CLOCKS"):
        ClockControl(nvml=_FakeNvml(fail=True)).apply(Clocks(gpu_clocks_mhz=[5001, 1590]))


def test_a_worker_sets_the_clocks_a_timing_request_carries_and_puts_them_back(tmp_path, monkeypatch):
    root = _cpus(tmp_path)
    monkeypatch.setattr(_clocks, "CPU_ROOT", root)
    w = Worker(WorkerConfig(name="w", listen="tcp://127.0.0.1:*", num_threads=1), b"tok")
    thread = threading.Thread(target=w.run_forever, daemon=True)
    thread.start()
    _, parts = whole_and_parts(mlp_parts(1, width=8, batch=2))
    feeds = {"t0": np.ones((2, 8), np.float32)}
    try:
        with WorkerClient(w.address, b"tok") as client:
            client.time_partition(parts[0][0], feeds, min_runs=2, max_runs=2,
                                  clocks=Clocks(cpu_max_khz=800_000))
            assert _max(root, 0) == 800_000
            with pytest.raises(WorkerError, match="outside cpu0's range"):
                client.time_partition(parts[0][0], feeds, min_runs=2, max_runs=2,
                                      clocks=Clocks(cpu_max_khz=9_000_000))
            with pytest.raises(TransportError, match="gpu_clocks_mhz has 3 values"):
                client.time_partition(parts[0][0], feeds, clocks=Clocks(gpu_clocks_mhz=[1, 2, 3]))
            assert client.health()  # still serving
    finally:
        w.stop.set()
        thread.join(5)
    assert _max(root, 0) == 2_400_000  # stopped: as found


def test_a_configured_device_tells_its_worker_its_clocks():
    cluster = parse_cluster({"devices": [{"name": "jetson", "configurations": [
        {"name": "low", "cpu_max_khz": 1_190_400, "gpu_clocks_mhz": [1600, 420]},
        {"name": "eight", "slowdown": 8}]}]})
    low = cluster.configured({"jetson": "low"}).device("jetson")
    assert clocks_of(low) == Clocks(cpu_max_khz=1_190_400, gpu_clocks_mhz=[1600, 420])
    assert clocks_of(cluster.configured({}).device("jetson")) == Clocks(restore=True)  # default: as found
    assert clocks_of(cluster.configured({"jetson": "eight"}).device("jetson")) is None
    variants = cluster.variants()
    assert clocks_of(variants.device("jetson@low")).cpu_max_khz == 1_190_400
    assert clocks_of(variants.device("jetson")).restore
