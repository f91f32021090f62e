"""The power log readers on recorded excerpts (tests/energy/data/) and on malformed copies of them."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from splitinfer.energy import read_power_csv, read_smartpower3, read_tegrastats
from splitinfer.energy._files import MAX_LINE_BYTES, MAX_LOG_BYTES
from splitinfer.errors import ProfileError

DATA = Path(__file__).parent / "data"


def _copy_with(tmp_path: Path, name: str, edit) -> Path:
    lines = (DATA / name).read_text().splitlines()
    path = tmp_path / name
    path.write_text("\n".join(edit(lines)) + "\n")
    return path


# ---- SmartPower3 ---------------------------------------------------------------------------------
def test_dime_csv_on_the_host_clock() -> None:
    trace = read_smartpower3(DATA / "smartpower3_dime.csv")
    assert trace.watts.tolist() == [2.754, 3.060, 3.365, 3.212, 2.907]
    np.testing.assert_allclose(trace.times_s - 1717000000.0,
                               [0.001234567, 0.011234567, 0.021234567, 0.031234567, 0.041234567], atol=1e-6)
    assert "host clock" in trace.source


def test_dime_csv_channel_0_on_the_meter_clock() -> None:
    trace = read_smartpower3(DATA / "smartpower3_dime.csv", channel=0, clock="meter")
    assert trace.watts.tolist() == [2.092, 2.397, 2.703, 2.550, 2.244]
    np.testing.assert_allclose(trace.times_s, [1200.0, 1200.01, 1200.02, 1200.03, 1200.04])


def test_meter_lines_as_printed() -> None:
    # Lines a SmartPower3 printed (from the osp3 library's tests), checksums included.
    trace = read_smartpower3(DATA / "smartpower3_serial.log")
    assert trace.watts.tolist() == [1.103, 1.287, 0.843]
    np.testing.assert_allclose(trace.times_s, [343732.187, 343732.197, 343732.207])
    with pytest.raises(ProfileError, match="no timestamp column"):
        read_smartpower3(DATA / "smartpower3_serial.log", clock="host")


def test_a_damaged_line_is_named_or_skipped(tmp_path: Path) -> None:
    def damage(lines):
        lines[1] = lines[1].replace("01287", "01387")  # one digit flipped in transit
        return lines

    path = _copy_with(tmp_path, "smartpower3_serial.log", damage)
    with pytest.raises(ProfileError, match=r"smartpower3_serial.log:2: the checksums 09,17 do not match"):
        read_smartpower3(path)
    assert read_smartpower3(path, skip_damaged=True).watts.tolist() == [1.103, 0.843]


def test_a_resaved_csv_without_leading_zeros_still_reads(tmp_path: Path) -> None:
    path = _copy_with(tmp_path, "smartpower3_dime.csv",
                      lambda lines: [lines[0]] + [",".join(f.lstrip("0") or "0" for f in li.split(","))
                                                  for li in lines[1:]])
    assert read_smartpower3(path).watts.tolist() == [2.754, 3.060, 3.365, 3.212, 2.907]


def test_smartpower3_bad_inputs(tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("time,watts\n0,1\n")
    with pytest.raises(ProfileError, match=r"other.csv:1: the header is not a SmartPower3 log's"):
        read_smartpower3(other)
    cut = _copy_with(tmp_path, "smartpower3_serial.log", lambda lines: [lines[0], lines[1][:40]])
    with pytest.raises(ProfileError,
                       match=r"smartpower3_serial.log:2: 7 fields where a SmartPower3 log line has 17"):
        read_smartpower3(cut)
    with pytest.raises(ProfileError, match="channel is 2"):
        read_smartpower3(DATA / "smartpower3_serial.log", channel=2)


# ---- generic CSV ---------------------------------------------------------------------------------
def test_time_watts_csv() -> None:
    trace = read_power_csv(DATA / "power_watts.csv")
    assert trace.times_s.tolist() == [0.0, 0.5, 1.0, 1.5]
    assert trace.watts.tolist() == [2.0, 2.5, 3.0, 2.0]


def test_time_volts_amps_whitespace() -> None:
    trace = read_power_csv(DATA / "power_volts_amps.txt")
    assert trace.times_s.tolist() == [0.0, 0.25, 0.5]
    np.testing.assert_allclose(trace.watts, [6.0, 9.0, 11.9])


def test_rows_out_of_order_are_sorted(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("Power_W,Time_S\n3,1.0\n1,0.0\n2,0.5\n")
    trace = read_power_csv(path)
    assert trace.times_s.tolist() == [0.0, 0.5, 1.0] and trace.watts.tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(("text", "message"), [
    ("time,temperature\n0,40\n", r"p.csv:1: the header 'time,temperature' has no time and power columns"),
    ("time,volts\n0,5\n", r"p.csv:1: the header 'time,volts' has no time and power columns"),
    ("time,watts\n0,2\n0.5,two\n", r"p.csv:3: watts 'two' is not a number"),
    ("time,watts\n0,2\n0.5\n", r"p.csv:3: 1 fields where the header has 2"),
    ("time,watts\n0,2\n0.5,nan\n", r"p.csv:3: watts is nan"),
    ("time,watts\n0,-2\n", r"p.csv:2: watts is -2.0"),
    ("time,watts,power_w\n0,2,2\n", r"the header names the watts column twice"),
    ("# only a comment\n", r"has no header"),
    ("time,watts\n", r"has no samples"),
])
def test_csv_bad_inputs(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.csv"
    path.write_text(text)
    with pytest.raises(ProfileError, match=message):
        read_power_csv(path)


# ---- tegrastats ----------------------------------------------------------------------------------
def test_tegrastats_stamped_lines() -> None:
    trace = read_tegrastats(DATA / "tegrastats_orin.log", interval_ms=500, timezone=UTC)
    second = datetime(2024, 6, 1, 10, 15, 30, tzinfo=UTC).timestamp()
    # Two lines in second :30, spread 500 ms apart in it; the VDD_IN "now" values, not the averages.
    assert (trace.times_s - second).tolist() == [0.0, 0.5, 1.0]
    assert trace.watts.tolist() == [5.034, 7.420, 7.302]
    east = read_tegrastats(DATA / "tegrastats_orin.log", interval_ms=500,
                           timezone=timezone(timedelta(hours=2)))
    assert (trace.times_s - east.times_s).tolist() == [7200.0] * 3  # 10:15 in UTC+2 is 08:15 UTC


def test_tegrastats_another_rail() -> None:
    trace = read_tegrastats(DATA / "tegrastats_orin.log", interval_ms=500, rail="VDD_CPU_GPU_CV",
                            timezone=UTC)
    assert trace.watts.tolist() == [1.452, 3.104, 3.011]


def test_tegrastats_older_unstamped_lines() -> None:
    trace = read_tegrastats(DATA / "tegrastats_nano.log", interval_ms=200, start_s=10.0)
    np.testing.assert_allclose(trace.times_s, [10.0, 10.2, 10.4])
    assert trace.watts.tolist() == [3.210, 5.330, 5.410]


def test_tegrastats_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ProfileError,
                       match=r"3 lines stamped 06-01-2024 10:15:30, more than one every 1000 ms"):
        read_tegrastats(_copy_with(tmp_path, "tegrastats_orin.log",
                                   lambda lines: [li.replace("10:15:31", "10:15:30") for li in lines]))
    with pytest.raises(ProfileError, match=r"tegrastats_nano.log:2: no POM_5V_IN rail on this line "
                                           r"\(rails found: POM_5V_GPU, POM_5V_CPU\)"):
        read_tegrastats(_copy_with(tmp_path, "tegrastats_nano.log",
                                   lambda lines: [lines[0], lines[1].replace("POM_5V_IN 5330/4270 ", "")]))
    with pytest.raises(ProfileError, match=r"x.log:1: no VDD_IN or POM_5V_IN rail"):
        (tmp_path / "x.log").write_text("hello world\n")
        read_tegrastats(tmp_path / "x.log")
    with pytest.raises(ProfileError, match="some lines carry a date and time and others do not"):
        read_tegrastats(_copy_with(tmp_path, "tegrastats_orin.log", lambda lines: [lines[0], lines[1][20:]]))
    with pytest.raises(ProfileError, match="interval_ms is 0"):
        read_tegrastats(DATA / "tegrastats_nano.log", interval_ms=0)


# ---- bounds --------------------------------------------------------------------------------------
def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    with path.open("wb") as handle:  # sparse: no disk used
        handle.truncate(MAX_LOG_BYTES + 1)
    for reader in (read_power_csv, read_smartpower3, read_tegrastats):
        with pytest.raises(ProfileError, match=rf"huge.csv has {MAX_LOG_BYTES + 1} bytes, over the limit"):
            reader(path)
    os.remove(path)


def test_a_huge_line_and_binary_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text("time,watts\n" + "0," + "1" * MAX_LINE_BYTES + "\n")
    with pytest.raises(ProfileError, match=r"long.csv:2: line is over 65536 bytes"):
        read_power_csv(path)
    path.write_bytes(b"time,watts\n\xff\xfe\x00\x01\n")
    with pytest.raises(ProfileError, match=r"long.csv:2: not UTF-8 text"):
        read_power_csv(path)
    with pytest.raises(ProfileError, match=r"cannot read power CSV .*missing.csv"):
        read_power_csv(tmp_path / "missing.csv")


def test_read_power_log_tells_the_format_from_the_file():
    from splitinfer.energy import read_power_log

    data = DATA
    assert "tegrastats" in read_power_log(data / "tegrastats_nano.log").source
    assert "SmartPower3" in read_power_log(data / "smartpower3_dime.csv").source
    auto = read_power_log(data / "power_watts.csv")
    assert list(auto.watts) == list(read_power_csv(data / "power_watts.csv").watts) == [2.0, 2.5, 3.0, 2.0]
    with pytest.raises(ProfileError, match="log format 'xml' is not known"):
        read_power_log(data / "power_watts.csv", "xml")
