"""Timing a hop's compression of one cut's tensors in this process (``time_compression``, ``LocalRunner``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from splitinfer.compression import COMPRESSIONS
from splitinfer.errors import PlanError, ProfileError, TransportError
from splitinfer.profile import timing
from splitinfer.profile.partition_timing import CompressionTiming
from splitinfer.profile.profiler import LocalRunner
from splitinfer.profile.timing import time_compression

FAST = {"budget_s": 0.05, "min_runs": 3, "max_runs": 5}


def _cut(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 64, 56, 56)).astype(np.float32)


def test_every_compression_is_timed_with_its_wire_and_raw_bytes():
    x = _cut()
    names = [*COMPRESSIONS, "int8:per_channel:axis=1", "zstd:level=3"]
    timings = time_compression({"t": x}, names, **FAST)
    assert list(timings) == names  # keyed by the text given, in order
    for name, t in timings.items():
        assert isinstance(t, CompressionTiming)
        assert math.isfinite(t.compress_s) and t.compress_s > 0, name
        assert math.isfinite(t.decompress_s) and t.decompress_s > 0, name
        assert t.raw_bytes == x.nbytes, name
    raw = x.nbytes
    assert raw <= timings["none"].wire_bytes < raw + 100  # the bytes and a small header
    assert raw / 2 <= timings["fp16"].wire_bytes < raw / 2 + 100
    assert raw / 4 <= timings["int8"].wire_bytes < raw / 4 + 100
    assert raw / 4 + 64 * 8 <= timings["int8:per_channel:axis=1"].wire_bytes < raw / 4 + 64 * 9 + 200
    assert timings["none"].compress_s < timings["zstd"].compress_s  # a view costs next to nothing


def test_lossless_ones_restore_bit_exact_what_they_compressed(monkeypatch):
    arrays = {"relu": np.maximum(_cut(1), 0), "ids": np.arange(10_000, dtype=np.int64),
              "mask": np.arange(999) % 3 == 0}
    restored = []

    def spy(c, **kw):
        out = real(c, **kw)
        restored.append(out)
        return out

    real = timing.decompress
    monkeypatch.setattr(timing, "decompress", spy)
    timings = time_compression(arrays, ["lz4"], **FAST)
    assert len(restored) >= 3 * len(arrays)  # every tensor restored in every (timed or warm-up) run
    for got, want in zip(restored[-3:], arrays.values(), strict=True):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    raw = sum(a.nbytes for a in arrays.values())
    assert timings["lz4"].raw_bytes == raw and timings["lz4"].wire_bytes < 0.8 * raw  # zeros and runs shrink


def test_a_tensor_a_lossy_compression_does_not_take_travels_raw(monkeypatch):
    ids = np.arange(5_000, dtype=np.int64)
    x = _cut()
    both = time_compression({"x": x, "ids": ids}, ["int8", "fp16"], **FAST)
    only_ids = time_compression({"ids": ids}, ["int8", "fp16"], **FAST)
    for name in ("int8", "fp16"):
        assert only_ids[name].wire_bytes == only_ids[name].raw_bytes == ids.nbytes
        assert both[name].raw_bytes == x.nbytes + ids.nbytes
    assert x.nbytes / 4 + ids.nbytes <= both["int8"].wire_bytes < x.nbytes / 4 + ids.nbytes + 100
    restored = []
    monkeypatch.setattr(timing, "decompress", lambda c, **kw: restored.append(c))
    time_compression({"ids": ids}, ["int8"], **FAST)
    assert restored == []  # nothing was compressed, so nothing is restored


def test_the_medians_are_scaled_by_the_slowdown_and_the_budget_is_shared(monkeypatch):
    calls = []

    def fake_measure(run, **kw):
        run()
        calls.append(kw)
        return [0.003, 0.001, 0.002]

    monkeypatch.setattr(timing, "measure", fake_measure)
    timings = time_compression({"x": _cut()}, ["fp16", "int8", "lz4", "none"], slowdown=2.5, budget_s=0.8)
    for t in timings.values():
        assert t.compress_s == pytest.approx(0.002 * 2.5) and t.decompress_s == pytest.approx(0.002 * 2.5)
    assert len(calls) == 8 and all(kw["budget_s"] == pytest.approx(0.8 / 8) for kw in calls)


def test_slowdown_scales_real_timings():
    x = _cut()
    fast = time_compression({"x": x}, ["zstd"], **FAST)["zstd"]
    slow = time_compression({"x": x}, ["zstd"], slowdown=1000.0, **FAST)["zstd"]
    assert slow.compress_s > 50 * fast.compress_s and slow.decompress_s > 50 * fast.decompress_s
    assert slow.wire_bytes == fast.wire_bytes


def test_an_unknown_compression_is_a_plan_error_naming_it_before_anything_is_timed(monkeypatch):
    timed = []
    monkeypatch.setattr(timing, "measure", lambda run, **kw: timed.append(run) or [0.0])
    with pytest.raises(PlanError, match="gzip") as info:
        time_compression({"x": _cut()}, ["fp16", "gzip"])
    assert "fp16" in info.value.fix and timed == []
    with pytest.raises(PlanError, match="level"):
        time_compression({"x": _cut()}, ["zstd:level=99"])


@pytest.mark.parametrize(("field", "value"), [("budget_s", float("nan")), ("budget_s", -1.0),
                                              ("slowdown", 0.0), ("min_runs", 0), ("max_runs", 10**9),
                                              ("rel_precision", float("inf")), ("num_warmup", -1)])
def test_numbers_out_of_range_are_a_profile_error_naming_them(field, value):
    with pytest.raises(ProfileError, match=field):
        time_compression({"x": _cut()}, ["none"], **{field: value})


def test_values_a_compression_cannot_carry_fail_as_on_a_hop():
    with pytest.raises(TransportError, match="65504"):
        time_compression({"x": np.full(4, 1e6, np.float32)}, ["fp16"])


def test_no_tensors_or_no_compressions():
    assert time_compression({"x": _cut()}, []) == {}
    empty = time_compression({}, ["int8", "none"], **FAST)
    assert all(t.wire_bytes == t.raw_bytes == 0 for t in empty.values())


def test_the_local_runner_times_compressions_here():
    runner = LocalRunner(num_threads=1)
    timings = runner.time_compression({"x": _cut()}, ["int8", "lz4"], budget_s=0.05, slowdown=2.0)
    assert set(timings) == {"int8", "lz4"} and timings["int8"].compress_s > 0
    assert timings["int8"].wire_bytes < timings["lz4"].wire_bytes
