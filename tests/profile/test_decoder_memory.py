"""A decoder's cache in the planner's memory (issue 20, item 4): each block's cache bytes per token, held
for the context of each sequence in flight."""

from __future__ import annotations

import pytest

from splitinfer import zoo
from splitinfer.cluster import parse_cluster
from splitinfer.errors import InfeasibleError, ProfileError
from splitinfer.plan import solve
from splitinfer.plan.cost import runs_of
from splitinfer.plan.memory import device_needs
from splitinfer.plan.problem import prepare
from splitinfer.profile.device import profile_model
from splitinfer.profile.problem import build_problem
from splitinfer.profile.profiler import ProfileSettings

# gpt2 small: 2 layers, each a key and a value of 4 heads x 16 dims, float32
PER_TOKEN = 2 * 2 * 4 * 16 * 4


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    path = zoo.save("gpt2", tmp_path_factory.mktemp("kv") / "gpt2.onnx", small=True)
    return profile_model(path, max_blocks=6, settings=ProfileSettings(budget_s=0.3, min_runs=2))


def test_each_block_knows_the_cache_it_keeps_per_token(profile):
    assert sum(b.state_bytes_per_token for b in profile.blocks) == PER_TOKEN
    assert sum(b.state_bytes_per_token > 0 for b in profile.blocks) >= 1


def test_the_cache_for_the_context_of_each_sequence_counts_with_the_weights(profile):
    plain = prepare(build_problem(profile))
    cached = prepare(build_problem(profile, context=1000, in_flight=3))
    whole = runs_of([0] * plain.num_blocks)
    grown = float(device_needs(cached, whole)[0] - device_needs(plain, whole)[0])
    # the cache, plus the in-flight requests' own buffers that --in-flight 3 adds
    assert grown >= PER_TOKEN * 1000 * 3
    assert grown - PER_TOKEN * 1000 * 3 < 0.05 * grown + 2e6
    with pytest.raises(ProfileError, match="context"):
        build_problem(profile, context=-1)


def test_a_device_that_holds_the_weights_but_not_the_cache_is_refused(profile):
    name = next(iter(profile.devices))
    need = float(device_needs(prepare(build_problem(profile)), runs_of([0] * len(profile.blocks)))[0])
    cluster = parse_cluster({"devices": [{"name": name, "memory": int(need * 1.05)}]})
    assert solve(build_problem(profile, cluster), "latency")  # fits without a cache
    with pytest.raises(InfeasibleError, match="memory"):
        solve(build_problem(profile, cluster, context=int(need // PER_TOKEN)), "latency")
