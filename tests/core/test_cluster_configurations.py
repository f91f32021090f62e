"""cluster.yaml device configurations: read, checked, expanded for profiling, applied for a plan."""

from __future__ import annotations

import pytest

from splitinfer.cluster import dump_cluster, load_cluster, parse_cluster
from splitinfer.errors import ClusterError

DOC = {
    "source": "cam",
    "devices": [
        {"name": "cam", "num_threads": 2, "slowdown": 4, "power": {"busy_w": 5.0, "battery": True},
         "configurations": [{"name": "powersave", "slowdown": 9, "power": {"busy_w": 1.0, "battery": True}},
                            {"name": "one-core", "num_threads": 1}]},
        {"name": "edge"},
    ],
    "links": [{"from": "cam", "to": "edge", "bandwidth": "10Mbit/s", "latency": "2ms"}],
}


def test_a_configuration_changes_only_what_it_names():
    cam = parse_cluster(DOC).device("cam")
    assert cam.configuration_names == ("default", "powersave", "one-core")
    slow = cam.configured("powersave")
    assert (slow.slowdown, slow.num_threads, slow.power.busy_w) == (9, 2, 1.0)
    assert slow.profile_name == "cam@powersave" and not slow.configurations
    one = cam.configured("one-core")
    assert (one.slowdown, one.num_threads, one.power.busy_w) == (4, 1, 5.0)
    assert cam.configured("default").profile_name == "cam"
    with pytest.raises(ClusterError, match=r"no configuration 'turbo'.*default, powersave, one-core"):
        cam.configured("turbo")


def test_variants_are_devices_with_the_devices_links_and_configured_applies_a_choice():
    cluster = parse_cluster(DOC)
    variants = cluster.variants()
    assert variants.device_names == ("cam", "edge", "cam@powersave", "cam@one-core")
    assert variants.link("cam@powersave", "edge").bandwidth_bps == cluster.link("cam", "edge").bandwidth_bps
    assert variants.link("edge", "cam@one-core") is not None and variants.link("cam", "cam@powersave") is None
    chosen = cluster.configured({"cam": "powersave"})
    assert chosen.device("cam").slowdown == 9 and chosen.device("cam").profile_name == "cam@powersave"
    assert not chosen.has_configurations and cluster.has_configurations
    with pytest.raises(ClusterError, match="unknown device 'phone'"):
        cluster.configured({"phone": "x"})


def test_the_file_round_trips(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text(dump_cluster(parse_cluster(DOC)))
    assert load_cluster(path) == parse_cluster(DOC)


@pytest.mark.parametrize(("entry", "match"), [
    ({"name": "default"}, "the name is not allowed"),
    ({"name": "a b"}, "the name is not allowed"),
    ({"name": "x", "slowdown": 0.5}, "configuration 'x' slowdown"),
    ({"name": "x", "slowdown": float("nan")}, "configuration 'x' slowdown"),
    ({"name": "x", "num_threads": -1}, "configuration 'x' num_threads"),
    ({"name": "x", "providers": []}, "lists no providers"),
    ({"name": "x", "power": {"busy_w": -1}}, r"power.busy_w"),
])
def test_bad_configurations_are_named(entry, match):
    doc = {**DOC, "devices": [{"name": "cam", "configurations": [entry]}, {"name": "edge"}]}
    with pytest.raises(ClusterError, match=match):
        parse_cluster(doc)
    twice = {**DOC, "devices": [{"name": "cam", "configurations": [{"name": "x"}, {"name": "x"}]}]}
    with pytest.raises(ClusterError, match="declared twice"):
        parse_cluster(twice)
