"""Profiling on one device in process: real intermediate tensors, calibration checks, the profile file."""

from __future__ import annotations

import dataclasses

import msgspec
import numpy as np
import onnxruntime as ort
import pytest

from splitinfer import zoo
from splitinfer.errors import ModelError, ProfileError, ShapeError, WorkerError
from splitinfer.graph import analyze, load_model
from splitinfer.host import MACHINE_KEYS
from splitinfer.profile.device import (
    DeviceRecord,
    profile_device,
    profile_model,
    profile_segments,
    sum_of_blocks_s,
)
from splitinfer.profile.files import decode_profile, encode_profile, load_profile, save_profile
from splitinfer.profile.partition_timing import PartitionFailure
from splitinfer.profile.profiler import (
    LocalRunner,
    ProfileInterrupted,
    ProfileSettings,
    load_calibration,
    prepare_model,
)
from splitinfer.profile.schema import DeviceProfile, SegmentStats, Stats
from splitinfer.profile.segments import (
    DEFAULT_THRESHOLD,
    corrected_device,
    corrected_profile,
    joins_of,
    segment_ratio,
)

FAST = ProfileSettings(budget_s=0.3, num_warmup=1, min_runs=3, max_runs=30)


@pytest.fixture(scope="module")
def resnet_bytes() -> bytes:
    return zoo.build_small("resnet18").SerializeToString()


@pytest.fixture(scope="module")
def prepared(resnet_bytes):
    return prepare_model(resnet_bytes, max_blocks=6)


def test_profile_round_trips_and_validates(tmp_path, resnet_bytes):
    profile = profile_model(resnet_bytes, device_name="laptop", num_threads=1, max_blocks=6, settings=FAST)
    assert list(profile.devices) == ["laptop"]
    device = profile.devices["laptop"]
    assert len(device.blocks) == len(profile.blocks) == 6
    assert all(b is not None and b.median_s > 0 and b.n >= FAST.min_runs for b in device.blocks)
    assert all(b.p10_s <= b.median_s <= b.p90_s for b in device.blocks if b is not None)
    assert device.whole_model is not None and device.whole_model.median_s > 0
    assert device.memory_bytes is not None and device.memory_bytes > 0
    assert device.versions["onnxruntime"] == ort.__version__
    assert device.num_threads == 1 and device.host.get("complete") is None
    path = tmp_path / "p.json"
    save_profile(profile, path)
    assert load_profile(path) == profile
    assert decode_profile(encode_profile(profile)) == profile


def test_model_info_rebuilds_the_same_blocks(resnet_bytes):
    profile = profile_model(resnet_bytes, max_blocks=5, max_cut_tensors=2, settings=FAST)
    info = profile.model
    assert info.sha256 == load_model(resnet_bytes).sha256
    assert (info.max_blocks, info.max_cut_tensors) == (5, 2)
    again = analyze(load_model(resnet_bytes, input_shapes=info.input_shapes),
                    max_cut_tensors=info.max_cut_tensors, max_blocks=info.max_blocks)
    assert [b.nodes for b in again.blocks] == [b.nodes for b in profile.blocks]
    assert [b.cut_bytes for b in again.blocks] == [b.cut_bytes for b in profile.blocks]
    assert all(b.activation_bytes > 0 for b in profile.blocks)
    assert sum(b.param_bytes for b in profile.blocks) >= again.param_bytes


def test_blocks_get_the_real_intermediate_tensors(prepared):
    """Each block's inputs are what the block before it really made: the chain ends at the model output."""
    whole = ort.InferenceSession(prepared.whole_bytes, providers=["CPUExecutionProvider"])
    (expected,) = whole.run(None, prepared.whole_feeds)
    last = ort.InferenceSession(prepared.block_bytes[-1], providers=["CPUExecutionProvider"])
    (got,) = last.run(None, prepared.block_feeds[-1])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    middle = next(iter(prepared.block_feeds[2].values()))
    assert middle.dtype == np.float32 and float(np.std(middle)) > 0  # not zeros, not a constant


def test_calibration_file_is_used_and_checked(tmp_path, resnet_bytes):
    model = load_model(resnet_bytes)
    x = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", image=x)
    for source in (tmp_path / "x.npy", tmp_path / "x.npz", {"image": x}, x):
        assert np.array_equal(load_calibration(model, source)["image"], x)
    cal = prepare_model(resnet_bytes, calibration=tmp_path / "x.npz", max_blocks=3)
    assert np.array_equal(cal.block_feeds[0]["image"], x)
    np.savez(tmp_path / "shape.npz", image=x[:, :, :16])
    with pytest.raises(ShapeError, match=r"shape \[1, 3, 16, 32\].*takes \[1, 3, 32, 32\]"):
        prepare_model(resnet_bytes, calibration=tmp_path / "shape.npz")
    with pytest.raises(ShapeError, match="dtype float64"):
        load_calibration(model, {"image": x.astype(np.float64)})
    with pytest.raises(ShapeError, match="arrays \\['img'\\]"):
        load_calibration(model, {"img": x})
    (tmp_path / "junk.npz").write_bytes(b"not numpy")
    with pytest.raises(ShapeError, match="cannot read calibration file"):
        load_calibration(model, tmp_path / "junk.npz")


def test_generated_token_ids_stay_in_the_vocabulary():
    """BERT's embedding Gather fails on ids past the vocabulary: generated ids must fit."""
    profile = profile_model(zoo.build_small("bert").SerializeToString(), max_blocks=4, settings=FAST)
    assert all(b is not None for b in profile.devices["local"].blocks)


def test_slowdown_scales_the_times():
    """Slowdown 3 profiles about 3x slower than slowdown 1 (loose bounds: the machine is noisy)."""
    # Blocks of about a millisecond: a sleep's overshoot on a loaded machine (a tenth of one, or more)
    # would dwarf the tiny model's blocks of 20 us and pass for slowdown.
    model = zoo.build("resnet18", resolution=64, width=0.5).SerializeToString()
    prepared = prepare_model(model, max_blocks=6)
    runner = LocalRunner(num_threads=1)
    settings = ProfileSettings(budget_s=0.3, num_warmup=2, min_runs=7, max_runs=60)
    totals: dict[float, list[float]] = {1.0: [], 3.0: []}
    for _ in range(3):  # interleaved, and the least disturbed round of each counts
        for slowdown, found in totals.items():
            record = profile_device(runner, prepared, settings, slowdown=slowdown)
            found.append(sum(b.median_s for b in record.blocks))
    # Above 3: the emulated wait sleeps, and a sleep on a loaded machine overshoots; slowdown ignored
    # (1x) or applied twice (9x) still fails.
    assert 2.0 < min(totals[3.0]) / min(totals[1.0]) < 6.0


def test_whole_model_and_segments_against_the_sum_of_blocks(prepared):
    runner = LocalRunner(num_threads=1)
    record = profile_device(runner, prepared, dataclasses.replace(FAST, pairs=True))
    segments = profile_segments(runner, prepared, [(0, 2), (3, 5)], FAST)
    assert [(s.first_block, s.last_block) for s in segments] == [(0, 2), (3, 5)]
    assert all(s.stats.median_s > 0 for s in segments)
    device = record.to_device_profile(("CPUExecutionProvider",), 1)
    assert sum_of_blocks_s(device) == pytest.approx(sum(b.median_s for b in device.blocks))
    profile = msgspec.structs.replace(prepared.empty_profile(), devices={
        "d": msgspec.structs.replace(device, segments=tuple(segments))})
    fixed_dev = corrected_profile(profile).devices["d"]
    assert len(device.pairs) == prepared.num_blocks - 1 and all(p is not None for p in device.pairs)
    joins = joins_of(device, [b.cut_bytes for b in prepared.blocks])  # the planner's: as measured
    for seg in segments:
        inner = sum(joins[seg.first_block:seg.last_block])
        # the prediction a segment is checked against: its blocks and the joins at its inner cuts
        predicted = sum_of_blocks_s(device, seg.first_block, seg.last_block) + inner
        corrected = sum_of_blocks_s(fixed_dev, seg.first_block, seg.last_block) + inner
        if abs(seg.stats.median_s / predicted - 1) > DEFAULT_THRESHOLD:
            assert corrected == pytest.approx(seg.stats.median_s)
        else:
            assert corrected == pytest.approx(predicted)


def test_a_block_that_cannot_run_is_null_and_named():
    prep = prepare_model(zoo.build_small("resnet18").SerializeToString(), max_blocks=3)
    refused = {prep.block_bytes[1], prep.block_bytes[2]}

    class Refusing(LocalRunner):
        def profile_set(self, parts, feeds, **kw):
            timed = super().profile_set(parts, feeds, **kw)
            return [PartitionFailure(WorkerError("no kernel for this op", "use another provider"))
                    if part in refused else t for part, t in zip(parts, timed, strict=True)]

    record = profile_device(Refusing(num_threads=1), prep, FAST)
    assert record.blocks[0] is not None and record.blocks[1] is None and record.blocks[2] is None
    assert record.failures[0].startswith("block 1: no kernel")
    assert record.whole_model is not None and record.run_overhead is not None

    class RefusingAll(LocalRunner):
        def profile_set(self, parts, feeds, **kw):
            return [PartitionFailure(ModelError("cannot load", "fix it")) for _ in parts]

    with pytest.raises(ProfileError, match="no block of"):
        profile_device(RefusingAll(), prep, FAST)


def test_unknown_provider_is_refused_before_any_block():
    with pytest.raises(WorkerError, match="NoSuchExecutionProvider not available"):
        LocalRunner(["NoSuchExecutionProvider"])


def test_the_local_runner_describes_this_host_with_its_threads():
    info = LocalRunner(num_threads=2).info()
    assert info["num_threads"] == 2 and info["providers"] == ["CPUExecutionProvider"]
    assert info["num_cpus"] >= 1 and info["versions"]["onnxruntime"] == ort.__version__
    record = DeviceRecord([None], info=info, complete=True)
    device = record.to_device_profile(["CPUExecutionProvider"], 0)
    assert device.num_threads == 2 and device.host["num_cpus"] == info["num_cpus"]
    assert set(device.host) <= set(MACHINE_KEYS) | {"slowdown", "complete"}


def test_ctrl_c_in_process_keeps_the_sets_measured(resnet_bytes):
    """The blocks are timed as one set, then the pairs: Ctrl-C as the pairs start keeps the blocks."""
    seen = []

    def interrupt_at_the_pairs(done: int, total: int, what: str) -> None:
        seen.append(what)
        if what.startswith("blocks 0-1"):
            raise KeyboardInterrupt

    settings = dataclasses.replace(FAST, pairs=True)
    with pytest.raises(ProfileInterrupted) as caught:
        profile_model(resnet_bytes, max_blocks=5, settings=settings, progress=interrupt_at_the_pairs)
    assert seen == ["trivial run .. whole model in rounds", "blocks 0-1 .. blocks 3-4 in rounds"]
    partial = caught.value.profile
    device = partial.devices["local"]
    assert all(b is not None for b in device.blocks) and device.whole_model is not None
    assert device.host["complete"] is False and device.pairs == ()
    assert decode_profile(encode_profile(partial)) == partial


def _stats(median: float) -> Stats:
    return Stats(median_s=median, mean_s=median, p10_s=median, p90_s=median, std_s=0.0, n=5)


def test_segment_corrections_scale_only_segments_off_by_more_than_the_threshold():
    device = DeviceProfile(blocks=tuple(_stats(t) for t in (1.0, 2.0, 3.0, 4.0)),
                           segments=(SegmentStats(0, 1, _stats(1.5)),  # 3.0 -> 1.5: fused
                                     SegmentStats(2, 3, _stats(7.1))))  # 7.0 -> 7.1: within 2%
    none = [None, None, None]
    fixed = corrected_device(device, none)
    assert [b.median_s for b in fixed.blocks] == pytest.approx([0.5, 1.0, 3.0, 4.0])
    assert fixed.blocks[0].p90_s == pytest.approx(0.5) and fixed.segments == device.segments
    # 3.6% off is past the threshold: what one deploy's noise does not explain is corrected
    off = msgspec.structs.replace(device, segments=(SegmentStats(2, 3, _stats(7.25)),))
    slower = corrected_device(off, none)
    assert [b.median_s for b in slower.blocks[2:]] == pytest.approx([3.0 * 7.25 / 7, 4.0 * 7.25 / 7])
    whole = corrected_device(msgspec.structs.replace(device, segments=(), whole_model=_stats(5.0)), none)
    assert sum(b.median_s for b in whole.blocks) == pytest.approx(5.0)  # the whole model is a segment too
    assert segment_ratio(device, device.segments[0], none) == pytest.approx(0.5)
    with_null = msgspec.structs.replace(device, blocks=(None, *device.blocks[1:]))
    assert segment_ratio(with_null, device.segments[0], none) is None
    assert corrected_device(with_null, none).blocks[0] is None
    # With a join of -0.3 at cut 0, blocks 0-1 are scaled so that they and the join make 1.5.
    joined = corrected_device(device, [-0.3, None, None])
    assert [b.median_s for b in joined.blocks[:2]] == pytest.approx([0.6, 1.2])
    assert segment_ratio(device, device.segments[0], [-0.3, None, None]) == pytest.approx(1.5 / 2.7)


@pytest.mark.parametrize(("field", "value"), [
    ("budget_s", float("nan")), ("budget_s", 0.0), ("budget_s", 1e12), ("num_warmup", -1), ("min_runs", 0),
    ("max_runs", 10**9), ("rel_precision", float("inf")), ("min_item_budget_s", -1.0),
])
def test_profile_settings_out_of_range_name_the_field(field, value):
    with pytest.raises(ProfileError) as caught:
        ProfileSettings(**{field: value})
    assert caught.value.problem == f"ProfileSettings.{field} is {value!r}"
    assert caught.value.fix.startswith("use a ")


def test_a_huge_budget_still_gives_each_partition_a_budget_a_worker_takes():
    from splitinfer.profile.timing import MAX_PARTITION_BUDGET_S

    assert ProfileSettings(budget_s=7 * 86_400).item_budget_s(1) == MAX_PARTITION_BUDGET_S


@pytest.mark.parametrize("num_threads", [-1, 10**6, 1.5])
def test_the_local_runner_refuses_thread_counts_out_of_range(num_threads):
    with pytest.raises(ProfileError, match=f"num_threads is {num_threads!r}"):
        LocalRunner(num_threads=num_threads)
