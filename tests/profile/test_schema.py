"""profile.json: the documented example, round trips, bad files, merging, and the planner problem."""

from __future__ import annotations

import json
import re

import msgspec
import pytest

from splitinfer.cluster import parse_cluster
from splitinfer.errors import InfeasibleError, ProfileError, SchemaError
from splitinfer.graph.analysis import DEFAULT_MAX_BLOCKS, DEFAULT_MAX_CUT_TENSORS
from splitinfer.plan import solve
from splitinfer.profile import schema, validation
from splitinfer.profile.files import (
    decode_profile,
    encode_profile,
    load_profile,
    merge_profiles,
    save_profile,
)
from splitinfer.profile.problem import build_problem
from splitinfer.profile.schema import DeviceProfile, LinkProfile, Stats


def documented_example() -> dict:
    """The JSON example in the schema module's docstring (with a full sha256)."""
    body = re.search(r"::\n\n(.*?)\n\n", schema.__doc__, re.S).group(1)
    return json.loads(body.replace("9f2c...", "9f2c" + "0" * 60))


def example_dict(**changes) -> dict:
    doc = documented_example()
    doc.update(changes)
    return doc


def test_the_documented_example_loads(tmp_path):
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(documented_example()))
    profile = load_profile(path)
    assert len(profile.blocks) == 2 and profile.devices["camera"].blocks[1] is None
    assert profile.links[0].bandwidth_bps == 2.5e6


def test_save_and_load_round_trip(tmp_path):
    profile = decode_profile(json.dumps(documented_example()))
    path = tmp_path / "p.json"
    save_profile(profile, path)
    assert load_profile(path) == profile


def test_a_profile_with_the_old_threads_key_loads_and_is_written_with_num_threads():
    doc = documented_example()
    doc["devices"]["camera"]["threads"] = doc["devices"]["camera"].pop("num_threads")
    profile = decode_profile(json.dumps(doc))
    assert profile.devices["camera"].num_threads == 1
    written = json.loads(encode_profile(profile))["devices"]["camera"]
    assert written["num_threads"] == 1 and "threads" not in written


def test_a_profile_without_block_settings_was_made_with_the_defaults():
    doc = documented_example()
    assert "max_blocks" not in doc["model"] and "max_cut_tensors" not in doc["model"]
    info = decode_profile(json.dumps(doc)).model
    assert (info.max_blocks, info.max_cut_tensors) == (DEFAULT_MAX_BLOCKS, DEFAULT_MAX_CUT_TENSORS)


def _with_device(doc: dict, **device) -> dict:
    dev = dict(doc["devices"]["camera"])
    dev.update(device)
    doc["devices"] = {"camera": dev}
    return doc


STATS = {"median_s": 0.05, "mean_s": 0.05, "p10_s": 0.05, "p90_s": 0.05, "std_s": 0.0, "n": 3}


@pytest.mark.parametrize(
    ("doc", "error", "match"),
    [
        (example_dict(schema=2), SchemaError, "schema 2"),
        (example_dict(blocks="many"), SchemaError, r"\$\.blocks"),
        (example_dict(input_bytes="big"), SchemaError, r"\$\.input_bytes"),
        (_with_device(example_dict(), blocks=[STATS]), ProfileError, "times for 1 blocks, the model has 2"),
        (
            _with_device(example_dict(), blocks=[STATS, {**STATS, "median_s": -0.1}]),
            ProfileError,
            "block 1: median_s is -0.1",
        ),
        (
            _with_device(example_dict(), blocks=[STATS, {**STATS, "p90_s": 1e999}]),
            SchemaError,
            "out of range",
        ),
        (
            example_dict(blocks=[{"index": 0}, {"index": 2}]),
            ProfileError,
            "block 1 of the profile has index 2",
        ),
        (example_dict(blocks=[]), ProfileError, "no blocks"),
        (
            example_dict(links=[{"src": "a", "dst": "b", "latency_s": 0.0, "bandwidth_bps": 0.0}]),
            ProfileError,
            "link a->b",
        ),
        (example_dict(hop_overhead_s=-1.0), ProfileError, "hop_overhead_s is -1.0"),
        (_with_device(example_dict(), num_threads=-2), ProfileError, "num_threads -2"),
        (_with_device(example_dict(), memory_bytes=0), ProfileError, "memory_bytes 0"),
    ],
)
def test_bad_profiles_are_refused_clearly(doc, error, match):
    with pytest.raises(error, match=match):
        decode_profile(json.dumps(doc).replace("Infinity", "1e999"))


def test_malformed_json_and_missing_files(tmp_path):
    with pytest.raises(SchemaError, match="not valid JSON"):
        decode_profile("{oops")
    with pytest.raises(SchemaError, match=r"NaN|not valid JSON"):
        decode_profile('{"schema": 1, "x": NaN}')
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(tmp_path / "nope.json")


def _device(median: float, date: str) -> DeviceProfile:
    return DeviceProfile(blocks=(Stats(median, median, median, median, 0.0, 5),) * 2, date=date)


def test_merge_unions_devices_and_newer_runs_win():
    base = decode_profile(json.dumps(documented_example()))
    a = msgspec.structs.replace(
        base,
        devices={
            "camera": _device(0.5, "2026-01-01T00:00:00Z"),
            "edge": _device(0.1, "2026-01-01T00:00:00Z"),
        },
    )
    b = msgspec.structs.replace(
        base,
        devices={
            "camera": _device(0.4, "2025-12-01T00:00:00Z"),
            "cloud": _device(0.01, "2026-02-01T00:00:00Z"),
        },
        links=(LinkProfile("camera", "edge", 0.001, 1e6, date="2026-03-01"),),
    )
    merged = merge_profiles(a, b)
    assert set(merged.devices) == {"camera", "edge", "cloud"}
    assert merged.devices["camera"].blocks[0].median_s == 0.5  # a's run is newer
    assert merged.links[0].latency_s == 0.001  # b's link replaces the older one
    assert merge_profiles(b, a).devices["camera"].blocks[0].median_s == 0.5
    other = msgspec.structs.replace(base, model=msgspec.structs.replace(base.model, sha256="ab" * 32))
    with pytest.raises(ProfileError, match="different models"):
        merge_profiles(base, other)


CLUSTER = {
    "devices": [
        {
            "name": "camera",
            "memory": "3MB",
            "power": {"busy_w": 3, "idle_w": 1, "radio_w": 2, "battery": True},
        },
        {"name": "edge"},
    ],
    "links": [
        {"from": "edge", "to": "camera", "bandwidth": "80Mbit/s", "latency": "2ms", "symmetric": False},
        {"from": "camera", "to": "edge", "measure": True, "symmetric": False},
    ],
}


def two_device_profile() -> schema.Profile:
    doc = documented_example()
    doc["devices"]["edge"] = {"blocks": [STATS, {**STATS, "median_s": 0.01}], "memory_bytes": 10**9}
    return decode_profile(json.dumps(doc))


def test_build_problem_takes_declared_links_first_then_measurements():
    problem = build_problem(two_device_profile(), parse_cluster(CLUSTER))
    links = {(x.src, x.dst): x for x in problem.links}
    assert links[("edge", "camera")].bandwidth_bps == 1e7 and links[("edge", "camera")].latency_s == 0.002
    assert links[("camera", "edge")].bandwidth_bps == 2.5e6  # measured, from the profile
    assert problem.compute_s["camera"] == [0.051, None]
    assert problem.capacity_bytes == {"camera": 3_000_000, "edge": 10**9}
    assert problem.weight_bytes == [37632, 2052000] and problem.activation_bytes == [1605632, 806816]
    assert problem.power["camera"].battery and problem.cut_bytes == [802816]
    plans = solve(problem, "energy")
    assert plans[0].energy_j is not None and plans[0].stages[-1].device == "edge"


def test_build_problem_adds_the_measured_hop_overhead_to_every_link():
    base = two_device_profile()
    refined = msgspec.structs.replace(base, hop_overhead_s=0.001)
    before = {(x.src, x.dst): x.latency_s for x in build_problem(base, parse_cluster(CLUSTER)).links}
    after = {(x.src, x.dst): x.latency_s for x in build_problem(refined, parse_cluster(CLUSTER)).links}
    assert before.keys() == after.keys()
    assert all(after[k] == pytest.approx(before[k] + 0.001) for k in before)
    # it survives the file and a merge
    assert decode_profile(encode_profile(refined)).hop_overhead_s == 0.001
    assert merge_profiles(refined, base).hop_overhead_s == 0.001


def test_build_problem_charges_hops_their_measured_messaging():
    base = two_device_profile()
    hop = schema.HopCost(fixed_s=0.0004, s_per_byte=1e-9, n=30)
    devices = {n: msgspec.structs.replace(d, messaging=hop) for n, d in base.devices.items()}
    profile = msgspec.structs.replace(base, devices=devices)
    cluster = parse_cluster(CLUSTER)
    before = {(x.src, x.dst): x for x in build_problem(base, cluster).links}
    problem = build_problem(profile, cluster)
    assert problem.messaging["camera"].fixed_s == 0.0004 and problem.messaging["edge"].s_per_byte == 1e-9
    links = {(x.src, x.dst): x for x in problem.links}
    declared, measured = links[("edge", "camera")], links[("camera", "edge")]
    # a declared link: the network's figures, plus what the runtime adds at its ends
    assert declared.latency_s == pytest.approx(before[("edge", "camera")].latency_s + 0.0004)
    assert 1 / declared.bandwidth_bps == pytest.approx(1 / before[("edge", "camera")].bandwidth_bps + 1e-9)
    assert measured == before[("camera", "edge")]  # a probe's round trips hold the messaging already
    # the file keeps it, and a bad one is refused
    assert decode_profile(encode_profile(profile)).devices["camera"].messaging == hop
    bad = msgspec.structs.replace(devices["camera"], messaging=schema.HopCost(fixed_s=-1.0, s_per_byte=0.0))
    with pytest.raises(ProfileError, match="messaging"):
        validation.validate_profile(msgspec.structs.replace(profile, devices={**devices, "camera": bad}))


def test_build_problem_charges_one_run_per_stage_from_the_trivial_run_and_the_whole_model():
    base = two_device_profile()
    edge = msgspec.structs.replace(base.devices["edge"], run_overhead=Stats(0.001, 0.001, 0.001, 0.001, 0, 9),
                                   whole_model=Stats(0.058, 0.058, 0.058, 0.058, 0, 9))
    profile = msgspec.structs.replace(base, devices={**base.devices, "edge": edge})
    problem = build_problem(profile, parse_cluster(CLUSTER))
    # edge: blocks 0.05 + 0.01, one run 1 ms less, and the whole model 1 ms faster still over 802816 bytes
    assert problem.join_s == {"edge": [pytest.approx(-0.002)]}
    assert "camera" not in problem.join_s  # nothing measured there: no join
    assert build_problem(base, parse_cluster(CLUSTER)).join_s == {}


def test_build_problem_takes_measured_memory_the_most_any_device_saw_else_the_estimate():
    base = two_device_profile()
    measured = (schema.BlockMemory(1000, 200, 500), None)
    camera = msgspec.structs.replace(base.devices["camera"], memory=measured)
    edge = msgspec.structs.replace(base.devices["edge"], memory=(schema.BlockMemory(900, 300), None))
    profile = msgspec.structs.replace(base, devices={"camera": camera, "edge": edge})
    problem = build_problem(profile, parse_cluster(CLUSTER))
    # what the session kept (a worker maps a stage's weights from its cache: no copy of the partition's
    # bytes besides), and apart from it, for the deploy's creation, what creating it held for a moment;
    # unmeasured: the parameters, and nothing for a moment
    assert problem.weight_bytes == [1000, 2052000] and problem.activation_bytes == [300, 806816]
    assert problem.created_bytes == [1000, 0] and problem.moment_bytes == [500, 0]


def test_build_problem_without_cluster_uses_the_profile_devices():
    problem = build_problem(two_device_profile(), stat="p90_s", sink=None)
    assert problem.devices == ("camera", "edge") and problem.source == "camera" and problem.sink is None
    assert problem.compute_s["camera"][0] == 0.055
    assert solve(problem, "latency")[0].stages[-1].device == "edge"
    # Only camera -> edge is measured: the result cannot come back to the camera.
    with pytest.raises(InfeasibleError, match="link to the sink camera"):
        solve(build_problem(two_device_profile()), "latency")


def test_build_problem_errors():
    cluster = parse_cluster({"devices": [{"name": "camera"}, {"name": "phone"}]})
    with pytest.raises(ProfileError, match="'phone' is in the cluster but not in the profile"):
        build_problem(two_device_profile(), cluster)
    doc = documented_example()
    doc["devices"]["edge"] = {"blocks": [STATS, STATS]}
    doc["links"] = []
    with pytest.raises(ProfileError, match="link camera->edge is to be measured"):
        build_problem(decode_profile(json.dumps(doc)), parse_cluster(CLUSTER))
    with pytest.raises(ProfileError, match="unknown statistic"):
        build_problem(two_device_profile(), stat="max_s")
