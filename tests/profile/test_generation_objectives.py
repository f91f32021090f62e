"""A decoder planned by its own measures (issue 20, item 4): time to first token, time per output token
and tokens/s, with decode steps timed at two pasts and read off the line through them."""

from __future__ import annotations

import msgspec
import pytest
from helpers.cli import one_error_line, run_cli

from splitinfer import zoo
from splitinfer.errors import ProfileError
from splitinfer.graph.state import DEFAULT_PROMPT_LEN, LONG_PAST
from splitinfer.profile.device import profile_device, profile_model
from splitinfer.profile.files import save_profile
from splitinfer.profile.generation import (
    decode_at,
    decode_profiles,
    generation_problem,
    past_of,
    prefill_profile,
)
from splitinfer.profile.profiler import DECODER_REST_S, LocalRunner, ProfileSettings, prepare_model


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    path = zoo.save("gpt2", tmp_path_factory.mktemp("gen") / "gpt2.onnx", small=True)
    return profile_model(path, max_blocks=6, settings=ProfileSettings(budget_s=0.3, min_runs=2))


def _medians(profile):
    (device,) = profile.devices.values()
    return [b.median_s for b in device.blocks]


def _with_medians(profile, medians):
    (name, device), = profile.devices.items()
    blocks = tuple(msgspec.structs.replace(b, median_s=m)
                   for b, m in zip(device.blocks, medians, strict=True))
    return msgspec.structs.replace(profile, devices={name: msgspec.structs.replace(device, blocks=blocks)})


def test_a_decoder_is_profiled_at_its_prefill_and_decode_steps_of_two_pasts(profile):
    assert past_of(prefill_profile(profile)) == 0
    assert [past for past, _ in decode_profiles(profile)] == [DEFAULT_PROMPT_LEN, LONG_PAST]


def test_a_decode_step_between_and_beyond_the_profiled_pasts_is_on_their_line(profile):
    (short, p1), (long, p2) = decode_profiles(profile)
    # made-up times that grow with the past: the line through them is exact
    p1, p2 = _with_medians(p1, [1.0] * len(p1.blocks)), _with_medians(p2, [3.0] * len(p2.blocks))
    two = msgspec.structs.replace(p1, other_sizes=(p2, prefill_profile(profile)))
    assert _medians(decode_at(two, short)) == _medians(p1)
    middle = (short + long) / 2
    assert _medians(decode_at(two, middle)) == pytest.approx([2.0] * len(p1.blocks))
    assert _medians(decode_at(two, 2 * long - short)) == pytest.approx([5.0] * len(p1.blocks))
    # a longer past timed faster is noise: the line stays flat, never below the shorter past's time
    falling = msgspec.structs.replace(p1, other_sizes=(_with_medians(p2, [0.5] * len(p2.blocks)),))
    assert _medians(decode_at(falling, long * 4)) == _medians(p1)


def test_each_named_objective_plans_its_size(profile):
    ttft = generation_problem(profile, None, "ttft")
    assert (ttft.objective, ttft.past) == ("latency", 0.0)
    assert past_of(ttft.profile) == 0
    tpot = generation_problem(profile, None, "tpot", context=48)
    # the mean past of the steps after a 16-token prompt up to 48 tokens: 16 .. 47
    assert (tpot.objective, tpot.past) == ("latency", (16 + 47) / 2)
    tokens = generation_problem(profile, None, "tokens", context=48, in_flight=4)
    assert tokens.objective == "throughput" and tokens.problem.in_flight == 4
    # a longer context: a slower step (the line never falls) and more cache in memory
    longer = generation_problem(profile, None, "tpot", context=4 * LONG_PAST)
    assert sum(_medians(longer.profile)) >= sum(_medians(tpot.profile))
    with pytest.raises(ProfileError, match="unknown generation objective"):
        generation_problem(profile, None, "speed")


def test_a_model_without_a_cache_has_no_generation_objectives(tmp_path):
    path = zoo.save("mlp", tmp_path / "mlp.onnx", small=True)
    plain = profile_model(path, max_blocks=3, settings=ProfileSettings(budget_s=0.1, min_runs=2))
    with pytest.raises(ProfileError, match="no decoder sizes"):
        generation_problem(plain, None, "tpot")


def test_a_decoders_blocks_are_timed_after_a_rest_and_a_plain_models_back_to_back(profile, tmp_path, capsys):
    """A stage of one sequence's decode idles while the others work: a decoder's every size is timed with
    DECODER_REST_S of idle before each run, unless the settings say otherwise; other models, back to back."""
    sizes = (profile, *profile.other_sizes)
    assert len(sizes) == 3 and all(d.rest_s == DECODER_REST_S for s in sizes for d in s.devices.values())
    asked = []

    class Recording(LocalRunner):
        def profile_set(self, parts, feeds, **kw):
            asked.append(kw["rest_s"])
            return super().profile_set(parts, feeds, **kw)

    decoder = prepare_model(zoo.build_small("gpt2").SerializeToString(), max_blocks=3)
    plain = prepare_model(zoo.build_small("mlp").SerializeToString(), max_blocks=3)
    quick = ProfileSettings(budget_s=0.1, min_runs=2)
    for prepared, settings, rest in ((decoder, quick, DECODER_REST_S), (plain, quick, 0.0),
                                     (decoder, ProfileSettings(budget_s=0.1, min_runs=2, rest_s=0.0), 0.0),
                                     (plain, ProfileSettings(budget_s=0.1, min_runs=2, rest_s=0.002), 0.002)):
        asked.clear()
        record = profile_device(Recording(num_threads=1), prepared, settings)
        assert record.rest_s == rest and asked and set(asked) == {rest}
        assert record.to_device_profile(["CPUExecutionProvider"], 1).rest_s == rest
    save_profile(profile, tmp_path / "profile.json")
    code, out, _ = run_cli(capsys, "profile", "show", tmp_path / "profile.json")
    assert code == 0 and "rest 30 ms" in " ".join(out.split())
    for bad in (-0.01, 2.0, float("nan")):
        with pytest.raises(ProfileError, match=r"ProfileSettings\.rest_s"):
            ProfileSettings(rest_s=bad)


def test_plan_takes_the_named_objectives(profile, tmp_path, capsys):
    path = tmp_path / "profile.json"
    save_profile(profile, path)
    for objective, title in (("ttft", "time to first token"), ("tpot", "time per output token"),
                             ("tokens", "tokens per second")):
        code, out, err = run_cli(capsys, "plan", path, "--objective", objective, "--context", "64")
        assert code == 0, err
        assert f"{title} plans" in " ".join(out.split())
    code, _, err = run_cli(capsys, "plan", path, "--objective", "tpot", "--input-shape", "input_ids=1,1")
    assert code == 2 and "--input-shape" in one_error_line(err)
