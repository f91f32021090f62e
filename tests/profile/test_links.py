"""Link fits, declared links and Scission's network_stats.csv."""

from __future__ import annotations

import math

import numpy as np
import pytest

from splitinfer.cluster import parse_cluster
from splitinfer.errors import ProfileError
from splitinfer.profile.links import (
    declared_links,
    fit_link,
    fit_round_trips,
    links_to_measure,
    measured_link,
    scission_links,
)


def test_a_fit_on_exact_samples_recovers_latency_and_bandwidth():
    latency, bandwidth = 0.004, 2.5e6
    sizes = [100, 10_000, 100_000, 1_000_000]
    fit = fit_link((s, latency + s / bandwidth) for s in sizes for _ in range(3))
    assert fit.latency_s == pytest.approx(latency, rel=1e-6)
    assert fit.bandwidth_bps == pytest.approx(bandwidth, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0) and fit.num_samples == 12


def test_a_fit_on_noisy_samples_with_outliers_stays_close():
    rng = np.random.default_rng(1)
    latency, bandwidth = 0.02, 6.25e6
    sizes = [64, 16_384, 262_144, 1_048_576, 4_194_304]
    samples = []
    for s in sizes:
        t = latency + s / bandwidth
        samples += [(s, t * (1 + 0.02 * rng.standard_normal())) for _ in range(9)]
        samples.append((s, t * 5))  # one straggler per size: the median ignores it
    fit = fit_link(samples)
    assert fit.latency_s == pytest.approx(latency, rel=0.1)
    assert fit.bandwidth_bps == pytest.approx(bandwidth, rel=0.05)
    assert 0.99 < fit.r2 <= 1.0


def test_round_trips_are_halved():
    sizes = [0, 1_000_000]
    rtts = [[0.002, 0.002], [0.002 + 2 * 1_000_000 / 1e8] * 2]
    fit = fit_round_trips(sizes, rtts)
    assert fit.latency_s == pytest.approx(0.001) and fit.bandwidth_bps == pytest.approx(1e8)
    link = measured_link("a", "b", fit)
    assert (link.src, link.dst, link.source, link.r2) == ("a", "b", "measured", fit.r2)


def test_flat_times_mean_infinite_bandwidth_and_bad_samples_are_refused():
    fit = fit_link([(10, 0.001), (1000, 0.001), (100_000, 0.0009)])
    assert math.isinf(fit.bandwidth_bps) and fit.latency_s == pytest.approx(0.000966, rel=0.01)
    with pytest.raises(ProfileError, match="at least 2 message sizes"):
        fit_link([(100, 0.1), (100, 0.2)])
    with pytest.raises(ProfileError, match="not a size and a duration"):
        fit_link([(100, -1.0), (200, 0.1)])
    with pytest.raises(ProfileError, match="2 probe sizes but 1"):
        fit_round_trips([1, 2], [[0.1]])


def test_declared_links_are_taken_verbatim_and_others_are_to_be_measured():
    cluster = parse_cluster({
        "devices": [{"name": "camera"}, {"name": "edge"}, {"name": "cloud"}],
        "links": [{"from": "camera", "to": "edge", "bandwidth": "20Mbit/s", "latency": "5ms"},
                  {"from": "edge", "to": "cloud", "measure": True}],
    })
    declared = {(x.src, x.dst): x for x in declared_links(cluster)}
    assert set(declared) == {("camera", "edge"), ("edge", "camera")}
    link = declared[("camera", "edge")]
    assert (link.bandwidth_bps, link.latency_s, link.source, link.r2) == (2.5e6, 0.005, "declared", None)
    to_measure = links_to_measure(cluster)
    assert to_measure == [("edge", "cloud"), ("cloud", "edge")]  # camera-cloud: not connected
    open_cluster = parse_cluster({"devices": [{"name": "a"}, {"name": "b"}]})
    assert links_to_measure(open_cluster) == [("a", "b"), ("b", "a")]


def test_scission_network_stats(tmp_path):
    path = tmp_path / "network_stats.csv"
    path.write_text("source,destination,ping(ms),bandwidth(mbps)\nraspi, edge1, 20, 8\nedge1,cloud,50,16\n"
                    "cloud,edge1,40,10\n")
    links = {(x.src, x.dst): x for x in scission_links(path)}
    assert links[("raspi", "edge1")].latency_s == pytest.approx(0.02)
    assert links[("raspi", "edge1")].bandwidth_bps == 1_000_000
    assert links[("edge1", "raspi")].bandwidth_bps == 1_000_000  # one row: the same both ways
    assert links[("cloud", "edge1")].latency_s == pytest.approx(0.04)  # its own row wins
    assert all(x.source == "scission" for x in links.values())
    only = scission_links(path, names=["edge1", "cloud"])
    assert {(x.src, x.dst) for x in only} == {("edge1", "cloud"), ("cloud", "edge1")}
