"""`splitinfer plan` with device configurations: the choice under a latency budget, and DIME's comparison."""

from __future__ import annotations

import json

import yaml
from helpers.cli import one_error_line, run_cli
from typer.testing import CliRunner

from splitinfer.cli import app
from splitinfer.cluster import parse_cluster
from splitinfer.profile.files import save_profile
from splitinfer.profile.problem import build_problem
from splitinfer.profile.schema import BlockInfo, DeviceEnergy, DeviceProfile, ModelInfo, Profile, Stats

CLUSTER = {
    "source": "cam",
    "devices": [
        {"name": "cam", "power": {"busy_w": 6.0, "idle_w": 1.0, "radio_w": 3.0, "battery": True},
         "configurations": [{"name": "powersave", "slowdown": 2,
                             "power": {"busy_w": 1.5, "idle_w": 0.5, "radio_w": 3.0, "battery": True}}]},
        {"name": "edge"},
    ],
    "links": [{"from": "cam", "to": "edge", "bandwidth": "2Mbit/s", "latency": "3ms"}],
}


def _stats(median: float) -> Stats:
    return Stats(median_s=median, mean_s=median, p10_s=median, p90_s=median, std_s=0.0, n=5)


def _profile(**energy) -> Profile:
    blocks = (BlockInfo(0, cut_bytes=40_000), BlockInfo(1))
    device = {"cam": DeviceProfile(blocks=(_stats(0.01), _stats(0.02)), **energy),
              "cam@powersave": DeviceProfile(blocks=(_stats(0.02), _stats(0.04))),
              "edge": DeviceProfile(blocks=(_stats(0.002), _stats(0.004)))}
    return Profile(ModelInfo(name="m", sha256="0" * 64), blocks, 600_000, 4_000, devices=device)


def test_plan_chooses_a_configuration_under_a_latency_budget_and_compares(tmp_path):
    save_profile(_profile(), tmp_path / "profile.json")
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
    args = ["plan", str(tmp_path / "profile.json"), "--cluster", str(tmp_path / "cluster.yaml"),
            "--objective", "energy", "-o", str(tmp_path / "plan.json")]
    loose = CliRunner().invoke(app, [*args, "--max-latency", "0.1"])
    assert loose.exit_code == 0, loose.output
    assert "cam@powersave[0-1]" in loose.output and "configurations compared" in loose.output
    chosen = json.loads((tmp_path / "plan.json").read_text())["plans"][0]["configurations"]
    assert chosen == {"cam": "powersave"}
    tight = CliRunner().invoke(app, [*args, "--max-latency", "0.035"])
    assert tight.exit_code == 0, tight.output
    chosen = json.loads((tmp_path / "plan.json").read_text())["plans"][0]["configurations"]
    assert chosen == {"cam": "default"}
    assert "slowest everywhere" in tight.output and "no plan meets the constraints" in tight.output


def test_a_profile_without_the_configurations_entries_is_refused(tmp_path, capsys):
    profile = _profile()
    del profile.devices["cam@powersave"]
    save_profile(profile, tmp_path / "profile.json")
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
    code, _, err = run_cli(capsys, "plan", tmp_path / "profile.json", "--cluster", tmp_path / "cluster.yaml")
    assert code == 2 and "configuration 'powersave' is not in the profile" in one_error_line(err)


def test_a_joined_power_log_prices_each_block_with_its_own_watts():
    energy = DeviceEnergy(windows=((1.0, 2.0), (3.0, 4.0)), busy_w=(4.0, 9.0), block_j=(0.04, 0.18),
                          idle_w=0.7, source="log")
    problem = build_problem(_profile(energy=energy), parse_cluster(CLUSTER))
    default = problem.configurations["cam"][0].power
    assert default.busy_w_blocks == (4.0, 9.0) and default.idle_w == 0.7 and default.battery
    assert default.radio_w == 3.0  # the radio is still cluster.yaml's
    assert problem.configurations["cam"][1].power.busy_w_blocks is None  # not measured: declared
