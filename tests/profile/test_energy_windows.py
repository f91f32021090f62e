"""Energy windows recorded while profiling, joined with a power log into joules per block."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from helpers.cli import one_error_line, run_cli
from helpers.runtime_models import mlp_parts, whole_and_parts
from typer.testing import CliRunner

from splitinfer.cli import app
from splitinfer.energy import PowerTrace
from splitinfer.errors import ProfileError
from splitinfer.profile.energy_windows import join_power_log, time_energy_windows
from splitinfer.profile.files import decode_profile, encode_profile, load_profile, save_profile
from splitinfer.profile.profiler import LocalRunner
from splitinfer.profile.schema import BlockInfo, DeviceEnergy, DeviceProfile, ModelInfo, Profile, Stats
from splitinfer.runtime import WorkerClient
from splitinfer.runtime.device.config import WorkerConfig
from splitinfer.runtime.device.worker import Worker


def _stats(median: float) -> Stats:
    return Stats(median_s=median, mean_s=median, p10_s=median, p90_s=median, std_s=0.0, n=5)


def _profile(energy: DeviceEnergy | None) -> Profile:
    blocks = (BlockInfo(0, cut_bytes=4), BlockInfo(1, cut_bytes=4), BlockInfo(2))
    dev = DeviceProfile(blocks=(_stats(0.01), _stats(0.02), None), energy=energy)
    return Profile(ModelInfo(name="m", sha256="0" * 64), blocks, 16, 8, devices={"cam": dev})


# Block 0 ran from 100 to 101 s, block 1 from 102 to 103 s (block 2 cannot run there), idle 104-105 s,
# all on the device's clock.
WINDOWS = DeviceEnergy(windows=((100.0, 101.0), (102.0, 103.0), None), idle_window=(104.0, 105.0),
                       clock_offset_s=50.0)


def _trace(shift: float = 0.0, gap: tuple[float, float] | None = None) -> PowerTrace:
    """10 Hz: 5 W in block 0's window, 8 W in block 1's, 2 W otherwise; times moved by ``shift``."""
    times = np.round(np.arange(99.0, 106.0001, 0.1), 6)
    second = np.where((times >= 102) & (times <= 103), 8.0, 2.0)
    watts = np.where((times >= 100) & (times <= 101), 5.0, second)
    if gap is not None:
        keep = (times < gap[0]) | (times > gap[1])
        times, watts = times[keep], watts[keep]
    return PowerTrace(times + shift, watts, "test log")


def test_a_log_on_the_device_clock_gives_each_blocks_watts_joules_and_idle_power():
    joined = join_power_log(_profile(WINDOWS), "cam", _trace())
    energy = joined.devices["cam"].energy
    assert energy.busy_w[0] == pytest.approx(5.0) and energy.busy_w[1] == pytest.approx(8.0)
    assert energy.busy_w[2] is None and energy.block_j[2] is None
    assert energy.block_j[0] == pytest.approx(5.0 * 0.01) and energy.block_j[1] == pytest.approx(8.0 * 0.02)
    assert energy.idle_w == pytest.approx(2.0) and energy.source == "test log"
    assert decode_profile(encode_profile(joined)) == joined  # the file keeps it


def test_clock_skew_is_undone_by_the_measured_offset_and_the_given_one():
    # A log kept on the profiling machine, whose clock is 50 s behind the device's, is read with
    # clock='profiler'; the same log 3 s late on that clock needs offset_s=3 too.
    on_profiler = join_power_log(_profile(WINDOWS), "cam", _trace(shift=-50.0), clock="profiler")
    late = join_power_log(_profile(WINDOWS), "cam", _trace(shift=-47.0), clock="profiler", offset_s=3.0)
    for joined in (on_profiler, late):
        assert joined.devices["cam"].energy.busy_w[:2] == pytest.approx((5.0, 8.0))
    wrong = join_power_log(_profile(WINDOWS), "cam", _trace(shift=-50.0), clock="device", offset_s=-50.5)
    assert wrong.devices["cam"].energy.busy_w[0] != pytest.approx(5.0)  # the clocks matter


def test_a_log_that_misses_a_window_or_has_a_gap_in_one_is_named():
    with pytest.raises(ProfileError, match=r"windows\[0\].*not inside power trace test log"):
        join_power_log(_profile(WINDOWS), "cam", _trace(shift=5.0))
    with pytest.raises(ProfileError, match=r"windows\[1\].*spans a gap"):
        join_power_log(_profile(WINDOWS), "cam", _trace(gap=(102.2, 102.9)))
    with pytest.raises(ProfileError, match=r"no energy windows for device 'cam'.*--energy-window"):
        join_power_log(_profile(None), "cam", _trace())
    with pytest.raises(ProfileError, match="'edge' is not in the profile"):
        join_power_log(_profile(WINDOWS), "edge", _trace())


def test_each_block_runs_alone_for_its_window_then_the_device_idles():
    _, parts = whole_and_parts(mlp_parts(2, width=8, batch=2))
    feeds = [{"t0": np.ones((2, 8), np.float32)}, {"t1": np.ones((2, 8), np.float32)}]
    slept = []
    energy = time_energy_windows(LocalRunner(num_threads=1), [p for p, _, _ in parts], feeds, window_s=0.05,
                                 sleep=slept.append)
    assert slept == [0.05] and energy.clock_offset_s == 0.0
    (a0, a1), (b0, b1) = energy.windows
    assert a0 < a1 <= b0 < b1 <= energy.idle_window[0]
    assert a1 - a0 >= 0.05 and b1 - b0 >= 0.05  # the runs fill the window
    skipped = time_energy_windows(LocalRunner(), [p for p, _, _ in parts], feeds, window_s=0.01,
                                  blocks=[None, _stats(0.001)], sleep=lambda s: None)
    assert skipped.windows[0] is None and skipped.windows[1] is not None


def test_a_worker_reports_its_windows_and_clock():
    w = Worker(WorkerConfig(name="w", listen="tcp://127.0.0.1:*", num_threads=1), b"tok")
    thread = threading.Thread(target=w.run_forever, daemon=True)
    thread.start()
    try:
        _, parts = whole_and_parts(mlp_parts(1, width=8, batch=2))
        with WorkerClient(w.address, b"tok") as client:
            timing = client.time_partition(parts[0][0], {"t0": np.ones((2, 8), np.float32)}, min_runs=3,
                                           max_runs=3)
            assert timing.window_s is not None and timing.window_s[0] < timing.window_s[1]
            assert abs(client.clock_offset_s()) < 0.05  # one machine: one clock
    finally:
        w.stop.set()
        thread.join(5)


def test_energy_join_command_writes_the_joined_profile(tmp_path, capsys):
    path = tmp_path / "profile.json"
    save_profile(_profile(WINDOWS), path)
    log = tmp_path / "power.csv"
    trace = _trace(shift=-50.0)
    rows = "".join(f"{t},{w}\n" for t, w in zip(trace.times_s, trace.watts, strict=True))
    log.write_text("time,watts\n" + rows)
    out = tmp_path / "joined.json"
    result = CliRunner().invoke(app, ["energy", "join", str(path), "--device", "cam", "--log", str(log),
                                      "--clock", "profiler", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "idle 2.000 W" in result.output and "cannot run there" in result.output
    assert load_profile(out).devices["cam"].energy.block_j[1] == pytest.approx(0.16)
    code, shown, _ = run_cli(capsys, "profile", "show", out)
    assert code == 0 and "cam: energy windows of 3 blocks; joined with" in shown
    assert "210.000 mJ per run of every block, idle 2.000 W" in shown  # 5 W x 10 ms + 8 W x 20 ms
    code, _, err = run_cli(capsys, "energy", "join", path, "--device", "cam", "--log", log, "--clock", "wall")
    assert code == 2 and "--clock is 'wall'" in one_error_line(err)


def test_energy_record_logs_a_live_sensor_to_a_csv_that_join_reads(tmp_path, capsys, monkeypatch):
    import threading as _threading

    from splitinfer.cli import _energy_join
    from splitinfer.energy import RaplSensor, read_power_csv

    zone = tmp_path / "rapl" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text("0\n")
    stop = _threading.Event()
    start = time.time()

    def burn() -> None:  # a package drawing 5 W: its counter at 5e6 uJ per second, updated atomically
        while not stop.wait(0.005):
            (zone / "next").write_text(f"{round(5e6 * (time.time() - start))}\n")
            os.replace(zone / "next", zone / "energy_uj")

    monkeypatch.setitem(_energy_join.SENSORS, "rapl", lambda: RaplSensor(tmp_path / "rapl"))
    writer = _threading.Thread(target=burn, daemon=True)
    writer.start()
    try:
        code, _, err = run_cli(capsys, "energy", "record", "--sensor", "rapl", "-o", tmp_path / "p.csv",
                                 "--interval", "0.05", "--duration", "0.6")
    finally:
        stop.set()
        writer.join(2)
    assert code == 0, err
    trace = read_power_csv(tmp_path / "p.csv")
    assert len(trace) >= 5 and float(np.median(trace.watts)) == pytest.approx(5.0, rel=0.2)
    code, _, err = run_cli(capsys, "energy", "record", "--sensor", "nope", "-o", tmp_path / "q.csv")
    assert code == 2 and "--sensor is 'nope'" in one_error_line(err)
