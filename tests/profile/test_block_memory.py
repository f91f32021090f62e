"""A stage's deploy peak in the planner's memory (issue 15, item 3): each block's kept weights and the
deploy's moment of copies taken from the whole model's session and shared out by the blocks' own
moments; never the partition's bytes besides (a worker maps a stage's weights from its cache, it does not
hold the partition). That mapped pages count with the weights: tests/runtime/test_partition_mapped.py."""

from __future__ import annotations

import msgspec
import pytest

from splitinfer import zoo
from splitinfer.profile.device import profile_model
from splitinfer.profile.problem import block_memory, build_problem, held_cut_cap
from splitinfer.profile.profiler import ProfileSettings
from splitinfer.profile.schema import BlockMemory


@pytest.fixture(scope="module")
def profile():
    data = zoo.build("resnet18", resolution=64, width=0.5).SerializeToString()
    return profile_model(data, max_blocks=8, settings=ProfileSettings(budget_s=0.3, min_runs=2))


def test_the_whole_models_session_is_measured_like_a_blocks(profile):
    (device,) = profile.devices.values()
    whole = device.whole_memory
    assert whole is not None and whole.weight_bytes > 0
    params = sum(b.param_bytes for b in profile.blocks)
    # its session holds the weights at least once, and creating it held copies for a moment
    assert whole.weight_bytes >= 0.9 * params and whole.transient_bytes > 0


def test_the_moment_of_copies_is_the_whole_models_shared_out_by_the_blocks_own(profile):
    (name, device), = profile.devices.items()
    own = [m.transient_bytes for m in device.memory]
    moment = 10 * sum(own)  # made up, so that the share is plain to see
    set_moment = msgspec.structs.replace(
        device, whole_memory=BlockMemory(device.whole_memory.weight_bytes, 0, moment))
    needs = block_memory(msgspec.structs.replace(profile, devices={name: set_moment}), [name])
    assert needs.shared_moment_bytes == [pytest.approx(10 * m, abs=1) for m in own]
    # what its session kept: the partition's bytes are not held besides, the moment is not with the runs
    assert needs.weight_bytes == [m.weight_bytes for m in device.memory]
    assert needs.activation_bytes == [m.activation_bytes for m in device.memory]
    # without the whole model's measure (weights on disk: never timed whole), no share: each block's
    # own moment is still charged as its session is created (the next test)
    unmeasured = msgspec.structs.replace(device, whole_memory=None)
    alone = block_memory(msgspec.structs.replace(profile, devices={name: unmeasured}), [name])
    assert alone.shared_moment_bytes == [0] * len(own)
    assert alone.weight_bytes == [m.weight_bytes for m in device.memory]


def test_creating_a_blocks_session_is_charged_what_it_allocated_and_its_own_moment(profile):
    """plan/memory.py's creation term: per block, what its session allocated and kept (its weights
    less the pages it maps from the partition's file, which only a run reads) and its own moment."""
    (name, device), = profile.devices.items()
    mapped = [msgspec.structs.replace(m, weight_bytes=m.weight_bytes + 1000, mapped_bytes=1000)
              for m in device.memory]
    needs = block_memory(msgspec.structs.replace(profile, devices={name: msgspec.structs.replace(
        device, memory=mapped)}), [name])
    assert needs.created_bytes == [m.weight_bytes for m in device.memory]
    assert needs.moment_bytes == [m.transient_bytes for m in device.memory]
    assert any(m.transient_bytes > 0 for m in device.memory)  # a block's own moment is measured


def test_a_stages_held_cuts_are_capped_by_what_the_whole_model_touched_beyond_its_largest_block(profile):
    """plan/memory.py's held cuts: at most the whole model's activations less its largest block's, the
    most over the plan's devices; 0 where the whole model was not measured, or touched no more."""
    (name, device), = profile.devices.items()
    largest = max(m.activation_bytes for m in device.memory)

    def whole(activation: int | None):
        memory = None if activation is None else BlockMemory(device.whole_memory.weight_bytes, activation, 0)
        return msgspec.structs.replace(device, whole_memory=memory)

    two = msgspec.structs.replace(profile, devices={"a": whole(largest + 6000), "b": whole(largest + 2000)})
    assert held_cut_cap(two, ["a", "b"]) == 6000 and held_cut_cap(two, ["b"]) == 2000
    assert build_problem(two).held_cut_cap_bytes == 6000  # the planner is given it
    unmeasured = msgspec.structs.replace(profile, devices={name: whole(None)})
    assert held_cut_cap(unmeasured, [name]) == 0
    less = msgspec.structs.replace(profile, devices={name: whole(largest // 2)})
    assert held_cut_cap(less, [name]) == 0
