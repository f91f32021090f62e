"""Human quantities in files and flags."""

from __future__ import annotations

import numpy as np
import pytest

from splitinfer.errors import SplitinferError
from splitinfer.units import check_address, check_number, parse_rate_bps, parse_size_bytes, parse_time_s


@pytest.mark.parametrize(
    ("text", "bps"),
    [("20Mbit/s", 2.5e6), ("20Mbps", 2.5e6), ("8 mbit/s", 1e6), ("2.5MB/s", 2.5e6),
     ("1KiB/s", 1024), (1e6, 1e6), ("1000", 1000), ("1e3 B/s", 1000), ("1Gbit/s", 1.25e8)],
)
def test_rates(text, bps):
    assert parse_rate_bps(text) == pytest.approx(bps)


@pytest.mark.parametrize(("text", "s"), [("5ms", 0.005), ("0.2s", 0.2), (0.01, 0.01), ("250us", 2.5e-4)])
def test_times(text, s):
    assert parse_time_s(text) == pytest.approx(s)


@pytest.mark.parametrize(("text", "n"), [("2GiB", 2 * 1024**3), ("512MB", 512_000_000), (1024, 1024)])
def test_sizes(text, n):
    assert parse_size_bytes(text) == n


@pytest.mark.parametrize("bad", ["fast", "5 furlongs", "-3ms", True, "nan"])
def test_bad_quantities_raise_with_a_fix(bad):
    with pytest.raises(SplitinferError) as e:
        parse_time_s(bad)
    assert e.value.fix


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), "1e400", "1e400 ms", -1.0])
def test_infinite_and_negative_quantities_raise_with_a_fix(bad):
    for parse in (parse_time_s, parse_rate_bps, parse_size_bytes):
        with pytest.raises(SplitinferError) as e:
            parse(bad)
        assert e.value.fix and "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("value", "limits", "fix"),
    [
        (float("nan"), {"low": 1}, "use a finite number >= 1"),
        (float("inf"), {"low": 1}, "use a finite number >= 1"),
        (-float("inf"), {}, "use a finite number"),
        (0.5, {"low": 1, "high": 8}, "use a finite number from 1 to 8"),
        (0, {"low": 0, "low_open": True}, "use a finite number > 0"),
        (2.5, {"low": 0, "high": 4, "whole": True}, "use a whole number from 0 to 4"),
        (9, {"low": 0, "low_open": True, "high": 4}, "use a finite number > 0 and <= 4"),
        (True, {}, "use a finite number"),
        ("3", {}, "use a finite number"),
        (None, {}, "use a finite number"),
    ],
)
def test_check_number_names_the_field_the_value_and_the_range(value, limits, fix):
    with pytest.raises(SplitinferError) as e:
        check_number(value, "slowdown", **limits)
    assert e.value.problem == f"slowdown is {value!r}" and e.value.fix == fix


def test_check_number_passes_values_in_range_through():
    assert check_number(3, "n", low=1, high=3, whole=True) == 3 and check_number(1e-9, "x", low=0) == 1e-9
    assert check_number(np.int64(2), "n", low=0, whole=True) == 2


@pytest.mark.parametrize("good", ["tcp://10.0.0.7:5555", "tcp://[::1]:1", "tcp://edge-1.lan:65535", "local"])
def test_addresses_in_range(good):
    assert check_address(good, "address", words=("local",)) == good


@pytest.mark.parametrize("bad", ["garbage", "tcp://h:0", "tcp://h:65536", "tcp://h", "tcp://h:*", "http://h:80",
                                 "inproc://wake", "h:80", "", None, 5])
def test_addresses_out_of_range_name_the_forms_allowed(bad):
    with pytest.raises(SplitinferError) as e:
        check_address(bad, "device 'a' address", words=("local",))
    assert e.value.problem == f"device 'a' address {bad!r} is not an address"
    assert e.value.fix == "use tcp://HOST:PORT or 'local', with a port from 1 to 65535"
