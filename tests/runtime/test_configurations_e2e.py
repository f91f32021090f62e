"""Device configurations end to end: each profiled as its own entry on real workers, one chosen per device
by the planner under a latency budget, deployed in it, and measured as predicted (issue 18, item 2)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers.sized_models import dynamic_batch

from splitinfer.cluster import parse_cluster
from splitinfer.errors import ClusterError, ProfileError
from splitinfer.graph import load_model
from splitinfer.plan import solve
from splitinfer.profile.files import decode_profile, encode_profile
from splitinfer.profile.problem import build_problem
from splitinfer.profile.profiler import ProfileSettings
from splitinfer.runtime.coordinator.deploy import deploy
from splitinfer.runtime.profiling import profile_cluster
from splitinfer.runtime.refine import refine

CLUSTER = {
    "source": "cam",
    "devices": [
        {"name": "cam", "num_threads": 1, "slowdown": 3,
         "power": {"busy_w": 6.0, "idle_w": 1.0, "radio_w": 3.0, "battery": True},
         # a lower clock, emulated: the same work takes twice as long at a quarter of the watts
         "configurations": [{"name": "powersave", "slowdown": 6,
                             "power": {"busy_w": 1.5, "idle_w": 0.5, "radio_w": 3.0, "battery": True}}]},
        {"name": "edge", "num_threads": 1},
    ],
    "links": [{"from": "cam", "to": "edge", "bandwidth": "2Mbit/s", "latency": "3ms"}],
}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("conf") / "dyn.onnx"
    onnx.save(dynamic_batch(), path)
    return path


def test_the_planner_chooses_a_configuration_that_runs_as_predicted(model_file):
    cluster = parse_cluster(CLUSTER)
    model = load_model(model_file, input_shapes={"image": (16, 3, 32, 32)})
    profile = profile_cluster(model, cluster, settings=ProfileSettings(budget_s=0.5), progress=False,
                              max_blocks=4)
    profile = decode_profile(encode_profile(profile))
    assert set(profile.devices) == {"cam", "cam@powersave", "edge"}
    cam, slow = profile.devices["cam"], profile.devices["cam@powersave"]
    assert slow.host["slowdown"] == 6 and cam.host["slowdown"] == 3
    problem = build_problem(profile, cluster)
    assert [c.name for c in problem.configurations["cam"]] == ["default", "powersave"]
    fast = solve(problem, "latency")[0]
    frugal = solve(problem, "energy")[0]
    assert frugal.configurations["cam"] == "powersave"  # the radio costs more than the slower clock
    assert frugal.energy_j < fast.energy_j or fast.configurations["cam"] == "powersave"
    assert [s.device for s in frugal.stages] == ["cam"]
    # Deployed, the camera runs in powersave: its worker holds each run 6 times its compute (3 by
    # default), which each request's timing shows as the emulated wait against the compute.
    with deploy(frugal, cluster, model, profile=profile) as session:
        assert session.cluster.device("cam").slowdown == 6
        feeds = {"image": np.ones((16, 3, 32, 32), np.float32)}
        ratios = [(t.wait_s / t.compute_s) for t in
                  (session.submit(feeds).result(30).timing.stages[0] for _ in range(5))]
    assert float(np.median(ratios)) == pytest.approx(5.0, rel=0.1)


def test_configurations_are_checked_and_refinement_refuses_them(model_file):
    remote = {**CLUSTER, "backend": "workers", "devices": [
        {"name": "cam", "address": "tcp://127.0.0.1:5999",
         "configurations": [{"name": "two", "num_threads": 2}]}, {"name": "edge"}]}
    with pytest.raises(ClusterError, match="changes num_threads or providers"):
        profile_cluster(model_file, parse_cluster(remote), progress=False)
    with pytest.raises(ProfileError, match="does not choose device configurations"):
        refine(object(), parse_cluster(CLUSTER), model_file, "latency")  # type: ignore[arg-type]
