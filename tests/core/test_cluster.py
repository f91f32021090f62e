"""cluster.yaml parsing: defaults, units, symmetric links, and one clear error per mistake."""

from __future__ import annotations

import pytest
import yaml

from splitinfer.cluster import dump_cluster, load_cluster, parse_cluster
from splitinfer.errors import ClusterError, SchemaError

DEMO = {
    "devices": [
        {"name": "camera", "num_threads": 1, "slowdown": 8, "memory": "2GiB"},
        {"name": "edge", "slowdown": 2},
        {"name": "cloud"},
    ],
    "links": [
        {"from": "camera", "to": "edge", "bandwidth": "20Mbit/s", "latency": "5ms"},
        {"from": "edge", "to": "cloud", "bandwidth": "50Mbit/s", "latency": "20ms"},
        {"from": "camera", "to": "cloud", "bandwidth": "8Mbit/s", "latency": "40ms"},
    ],
}


def test_defaults_and_units():
    c = parse_cluster(DEMO)
    assert c.source == "camera" and c.sink == "camera" and c.backend == "local"
    cam = c.device("camera")
    assert cam.num_threads == 1 and cam.slowdown == 8 and cam.memory_bytes == 2 * 1024**3
    assert cam.is_local and cam.providers == ("CPUExecutionProvider",)
    link = c.link("camera", "edge")
    assert link.bandwidth_bps == pytest.approx(2.5e6) and link.latency_s == pytest.approx(0.005)


def test_links_are_symmetric_unless_reverse_given():
    doc = {**DEMO, "links": [*DEMO["links"],
                             {"from": "edge", "to": "camera", "bandwidth": 1000, "latency": 0.1}]}
    c = parse_cluster(doc)
    assert c.link("cloud", "edge").bandwidth_bps == pytest.approx(50e6 / 8)
    assert c.link("edge", "camera").bandwidth_bps == 1000  # explicit reverse wins
    assert c.link("camera", "edge").bandwidth_bps == pytest.approx(2.5e6)
    one_way = parse_cluster({"devices": DEMO["devices"], "links": [
        {"from": "camera", "to": "edge", "bandwidth": 1, "latency": 0, "symmetric": False}]})
    assert one_way.link("edge", "camera") is None


def test_a_file_with_the_old_threads_key_still_loads_and_is_written_with_num_threads(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("devices:\n  - {name: camera, threads: 2}\n  - {name: edge}\n")
    c = load_cluster(path)
    assert c.device("camera").num_threads == 2 and c.device("edge").num_threads == 0
    assert yaml.safe_load(dump_cluster(c))["devices"][0] == {"name": "camera", "num_threads": 2}
    with pytest.raises(ClusterError, match="both num_threads and threads"):
        parse_cluster({"devices": [{"name": "a", "num_threads": 1, "threads": 1}]})


def test_sink_none_and_explicit_source():
    c = parse_cluster({**DEMO, "source": "edge", "sink": "none"})
    assert c.source == "edge" and c.sink is None


def test_round_trip_through_yaml(tmp_path):
    c = parse_cluster({**DEMO, "links": [*DEMO["links"], {"from": "cloud", "to": "camera",
                                                           "measure": True, "symmetric": False}]})
    path = tmp_path / "cluster.yaml"
    path.write_text(dump_cluster(c))
    assert load_cluster(path) == c
    kernel = parse_cluster({**DEMO, "network": "netns"})
    assert kernel.network == "netns" and c.network == "software"
    path.write_text(dump_cluster(kernel))
    assert load_cluster(path) == kernel


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"devices": []}, "no devices"),
        ({"devices": [{"name": "a"}, {"name": "a"}]}, "repeat"),
        ({"devices": [{"name": "a", "slowdown": 0.5}]}, "slowdown"),
        ({"devices": [{"name": "a", "num_threads": -1}]}, "num_threads is -1"),
        ({"devices": [{"name": "a", "colour": "red"}]}, "colour"),
        ({"devices": [{"name": "a"}], "source": "b"}, "source 'b'"),
        ({"backend": "ray", "address": "auto", "devices": [{"name": "a", "address": "tcp://h:1"}]},
         "Ray places workers"),
        ({"devices": [{"name": "a"}, {"name": "b"}],
          "links": [{"from": "a", "to": "c", "bandwidth": 1, "latency": 1}]}, "unknown device 'c'"),
        ({"devices": [{"name": "a"}, {"name": "b"}], "links": [{"from": "a", "to": "b"}]},
         "no bandwidth or latency"),
        ({"devices": [{"name": "a"}, {"name": "b"}],
          "links": [{"from": "a", "to": "b", "bandwidth": "fast", "latency": 1}]}, "bandwidth"),
        ({"devices": [{"name": "a"}, {"name": "b"}],
          "links": [{"from": "a", "to": "b", "bandwidth": "3 parsecs", "latency": 1}]}, "unknown unit"),
        ({"devices": [{"name": "a"}], "backend": "ray"}, "address"),
        ({"devices": [{"name": "a"}], "backend": "k8s"}, "backend"),
    ],
)
def test_bad_cluster_names_the_problem(doc, needle):
    with pytest.raises(ClusterError) as e:
        parse_cluster(doc)
    assert needle in str(e.value)
    assert e.value.fix  # every error says what to do


NAN, INF = float("nan"), float("inf")
TWO = [{"name": "a"}, {"name": "b"}]


def _link(**fields) -> dict:
    return {"devices": TWO, "links": [{"from": "a", "to": "b", "bandwidth": 1000, "latency": 0.01, **fields}]}


@pytest.mark.parametrize(
    ("doc", "needle", "allowed"),
    [
        ({"devices": [{"name": "a", "slowdown": NAN}]}, "slowdown is nan", "from 1 to 10000"),
        ({"devices": [{"name": "a", "slowdown": INF}]}, "slowdown is inf", "from 1 to 10000"),
        ({"devices": [{"name": "a", "slowdown": 1e9}]}, "slowdown is 1000000000.0", "from 1 to 10000"),
        ({"devices": [{"name": "a", "num_threads": 100_000}]}, "num_threads is 100000", "whole number"),
        ({"devices": [{"name": "a", "threads": 100_000}]}, "num_threads is 100000", "4 x this machine"),
        ({"devices": [{"name": "a", "memory": 0}]}, "memory is 0", "> 0"),
        ({"devices": [{"name": "a", "memory": INF}]}, "size inf", "finite"),
        ({"devices": [{"name": "a", "memory": "1e400"}]}, "size '1e400'", "finite"),
        ({"devices": [{"name": "a", "memory": -5}]}, "size -5", "non-negative"),
        ({"devices": [{"name": "a", "power": {"busy_w": NAN}}]}, "power.busy_w is nan", ">= 0"),
        ({"devices": [{"name": "a", "power": {"idle_w": -1}}]}, "power.idle_w is -1", ">= 0"),
        ({"devices": [{"name": "a", "power": {"radio_j_per_byte": INF}}]}, "radio_j_per_byte is inf", ">= 0"),
        ({"devices": [{"name": "a", "address": "garbage"}]}, "address 'garbage'", "tcp://HOST:PORT"),
        ({"devices": [{"name": "a", "address": "tcp://h:0"}]}, "address 'tcp://h:0'", "1 to 65535"),
        ({"devices": [{"name": "a", "address": "tcp://h:65536"}]}, "'tcp://h:65536'", "1 to 65535"),
        ({"devices": [{"name": "a", "address": "tcp://h"}]}, "'tcp://h'", "tcp://HOST:PORT"),
        ({"backend": "ray", "address": "garbage", "devices": [{"name": "a"}]}, "Ray address", "ray://"),
        (_link(bandwidth=INF), "bandwidth inf", "finite"),
        (_link(bandwidth=NAN), "bandwidth nan", "finite"),
        (_link(bandwidth="1e400 B/s"), "bandwidth '1e400 B/s'", "finite"),
        (_link(bandwidth=0), "zero bandwidth", "positive"),
        (_link(latency=INF), "latency: duration inf", "finite"),
        (_link(latency=-1), "latency: duration -1", "non-negative"),
        (_link(latency=1e6), "latency 1e+06 s", "from 0 to 3600"),
    ],
)
def test_numbers_and_addresses_out_of_range_name_the_field_and_the_range(doc, needle, allowed):
    with pytest.raises(ClusterError) as e:
        parse_cluster(doc)
    assert needle in e.value.problem and allowed in e.value.fix and "\n" not in str(e.value)


def test_addresses_in_range_load():
    c = parse_cluster({"backend": "workers", "devices": [
        {"name": "a", "address": "tcp://10.0.0.7:5555"}, {"name": "b", "address": "tcp://[::1]:1"},
        {"name": "c", "address": "tcp://edge-box.local:65535"}]})
    assert c.device("b").address == "tcp://[::1]:1"
    for address in ("auto", "ray://10.0.0.1:10001", "10.0.0.1:6379"):
        ray = parse_cluster({"backend": "ray", "address": address, "devices": [{"name": "a"}]})
        assert ray.address == address


def test_other_schema_version_is_refused():
    with pytest.raises(SchemaError, match="schema 99"):
        parse_cluster({"schema": 99, "devices": [{"name": "a"}]})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ClusterError, match="cannot read"):
        load_cluster(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("devices: [name: a\n")
    with pytest.raises(ClusterError, match="not valid YAML"):
        load_cluster(bad)
