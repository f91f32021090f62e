"""Human quantities in files and flags."""

from __future__ import annotations

import pytest

from splitinfer.errors import SplitinferError
from splitinfer.units import parse_rate_bps, parse_size_bytes, parse_time_s


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
