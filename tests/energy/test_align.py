"""Joules per window against hand-computed values, and the errors of windows a trace cannot measure."""

from __future__ import annotations

import numpy as np
import pytest

from splitinfer.energy import PowerTrace, energy_in_windows, idle_power
from splitinfer.errors import ProfileError


def _constant(watts: float, until: float = 1.0, every: float = 0.1) -> PowerTrace:
    times = np.round(np.arange(0.0, until + every / 2, every), 9)  # 0.7, not 0.7000000000000001
    return PowerTrace.of(times, np.full(times.shape, watts), "constant")


def test_constant_two_watts_for_half_a_second_is_one_joule() -> None:
    (window,) = energy_in_windows(_constant(2.0), [(0.2, 0.7)])
    assert window.joules == pytest.approx(1.0)
    assert window.mean_watts == pytest.approx(2.0)
    assert window.samples == 6  # 0.2, 0.3, ..., 0.7


def test_a_ramp_between_samples_is_integrated_exactly() -> None:
    # watts = t, sampled each second; windows with edges between samples: the integral of t dt.
    trace = PowerTrace.of(np.arange(11.0), np.arange(11.0), "ramp")
    first, second = energy_in_windows(trace, [(2.5, 4.5), (0.0, 10.0)], min_samples=1)
    assert first.joules == pytest.approx((4.5**2 - 2.5**2) / 2)  # 7 J
    assert first.mean_watts == pytest.approx(3.5)
    assert second.joules == pytest.approx(50.0)


def test_clock_skew_is_an_offset() -> None:
    # The meter's clock runs 1000.25 s ahead of the profile's: the same windows, the same joules.
    trace = PowerTrace.of(np.arange(11.0), np.arange(11.0), "ramp")
    skewed = trace.shifted(1000.25)
    (plain,) = energy_in_windows(trace, [(2.5, 4.5)])
    (joined,) = energy_in_windows(skewed, [(2.5, 4.5)], offset_s=1000.25)
    assert joined.joules == pytest.approx(plain.joules)
    assert (joined.start_s, joined.end_s) == (2.5, 4.5)
    with pytest.raises(ProfileError, match=r"windows\[0\] \(2.500000 s to 4.500000 s\) is not inside"):
        energy_in_windows(skewed, [(2.5, 4.5)])


def test_a_window_outside_the_trace_is_named() -> None:
    with pytest.raises(ProfileError, match=r"windows\[1\] \(0.900000 s to 1.200000 s\) is not inside power "
                                           r"trace constant, which runs from 0.000000 s to 1.000000 s"):
        energy_in_windows(_constant(1.0), [(0.1, 0.5), (0.9, 1.2)])


def test_a_trace_too_sparse_for_a_window_says_so() -> None:
    trace = _constant(3.0, until=10.0, every=1.0)
    with pytest.raises(ProfileError, match=r"windows\[0\] .* holds 0 sample\(s\) of power trace constant "
                                           r"\(one every 1 s\): the trace is too sparse for it"):
        energy_in_windows(trace, [(2.1, 2.2)])
    (window,) = energy_in_windows(trace, [(2.1, 2.2)], min_samples=0)
    assert window.joules == pytest.approx(0.3)


def test_a_gap_in_the_log_is_named() -> None:
    times = np.concatenate((np.arange(0.0, 5.0, 0.1), np.arange(9.0, 12.0, 0.1)))
    trace = PowerTrace.of(times, np.full(times.shape, 1.5), "gappy")
    with pytest.raises(ProfileError, match=r"spans a gap in power trace gappy: no sample from 4.900000 s to "
                                           r"9.000000 s"):
        energy_in_windows(trace, [(4.5, 9.5)])
    (window,) = energy_in_windows(trace, [(9.2, 9.7)])  # after the gap: fine
    assert window.joules == pytest.approx(0.75)


@pytest.mark.parametrize(("windows", "message"), [
    ([(0.5, 0.5)], r"windows\[0\] end_s is 0.5"),
    ([(0.5, 0.2)], r"windows\[0\] end_s is 0.2"),
    ([(0.1, float("nan"))], r"windows\[0\] end_s is nan"),
    ([(0.1,)], r"windows\[0\] is \(0.1,\)"),
])
def test_bad_windows(windows, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        energy_in_windows(_constant(1.0), windows)


def test_idle_power_outside_the_windows_or_in_an_idle_window() -> None:
    times = np.arange(0.0, 10.01, 0.5)
    watts = np.where((times >= 2) & (times <= 4), 9.0, 2.0)
    watts[-1] = 2.4
    trace = PowerTrace.of(times, watts, "busy then idle")
    assert idle_power(trace, [(2.0, 4.0)]) == pytest.approx(2.0)
    assert idle_power(trace, idle=(9.5, 10.0)) == pytest.approx(2.2)
    with pytest.raises(ProfileError, match="no sample outside the windows"):
        idle_power(trace, [(0.0, 10.0)])


def test_a_trace_checks_its_samples() -> None:
    with pytest.raises(ProfileError, match="not in ascending order"):
        PowerTrace(np.array([1.0, 0.0]), np.array([1.0, 1.0]), "backwards")
    with pytest.raises(ProfileError, match="negative watts"):
        PowerTrace.of([0.0, 1.0], [1.0, -1.0], "negative")
    with pytest.raises(ProfileError, match="has 1 sample"):
        energy_in_windows(PowerTrace.of([0.0], [1.0], "one"), [(0.0, 0.0001)])
