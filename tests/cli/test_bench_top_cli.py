"""``splitinfer bench PLAN --top K``: the K best plans of a file deployed on local workers, predicted
against measured rank in a table and in JSON; bad input is one line and exit 2 before deploying."""

from __future__ import annotations

import json

import msgspec
import pytest
import yaml
from helpers import deploy as helpers
from helpers.cli import TWO_DEVICES as CLUSTER

from splitinfer.cli import main
from splitinfer.cluster import parse_cluster
from splitinfer.plan import describe_stages, plan_to_json
from splitinfer.profile.files import save_profile
from splitinfer.records.bench import load_rank
from splitinfer.records.plans import read_plans


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """model.onnx, profile.json (naming the model), cluster.yaml, and plans.json of the 3 best latency
    plans and throughput.json of the 2 best throughput plans, from `splitinfer plan --top`."""
    root = tmp_path_factory.mktemp("bench_top_cli")
    data = helpers.model_bytes("resnet18")
    (root / "model.onnx").write_bytes(data)
    (root / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
    profile = helpers.fake_profile(data, parse_cluster(CLUSTER))
    profile = msgspec.structs.replace(profile, model=msgspec.structs.replace(profile.model,
                                                                             path=str(root / "model.onnx")))
    save_profile(profile, root / "profile.json")
    for objective, name, k in (("latency", "plans.json", "3"), ("throughput", "throughput.json", "2")):
        argv = ["plan", str(root / "profile.json"), "--cluster", str(root / "cluster.yaml"),
                "--objective", objective, "--top", k, "-o", str(root / name)]
        assert main(argv) == 0
    assert len(read_plans(root / "plans.json")) == 3
    return root


def test_top_benches_every_plan_and_puts_measured_rank_beside_predicted(files, capsys):
    out = files / "rank.json"
    argv = ["bench", str(files / "plans.json"), "--top", "3", "--requests", "6", "--num-warmup", "1",
            "-o", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    result = load_rank(out)
    plans = read_plans(files / "plans.json")
    assert result.figure == "latency" and result.interleaved and result.note == ""
    assert [e.bench.plan for e in result.plans] == plans  # the file's plans, in its order
    for entry, plan in zip(result.plans, plans, strict=True):
        assert entry.bench.num_requests == 6 and len(entry.bench.latencies_s) == 6  # every plan ran them
        assert entry.predicted == plan.latency_s and entry.measured == entry.bench.latency_median_s > 0
        row = next(line for line in text.splitlines() if line.startswith(f"│ #{entry.rank} "))
        assert describe_stages(plan) in row and f"{entry.predicted * 1e3:.3f}" in row
        assert f"{entry.measured * 1e3:.3f}" in row and row.rstrip(" │").endswith(f"#{entry.measured_rank}")

    # from the JSON alone: the measured ranks order the medians, and the regret is the predicted
    # best's median against the lowest one
    doc = json.loads(out.read_text())
    medians = [p["bench"]["latency_median_s"] for p in doc["plans"]]
    ranks = [p["measured_rank"] for p in doc["plans"]]
    assert sorted(ranks) == [1, 2, 3]
    assert [medians[ranks.index(r)] for r in (1, 2, 3)] == sorted(medians)
    best = medians.index(min(medians))
    assert doc["measured_best"] == best + 1
    assert doc["regret"] == pytest.approx(medians[0] / min(medians) - 1.0)
    discordant = sum(ranks[i] > ranks[j] for i in range(3) for j in range(i + 1, 3))
    assert doc["num_discordant_pairs"] == discordant
    assert doc["kendall_tau"] == pytest.approx(1 - discordant / 1.5)  # (concordant - discordant) / 3 pairs
    if best == 0:
        assert "the predicted best is the measured best" in text
    else:
        assert (f"the predicted best measured {doc['regret']:.1%} slower than plan #{best + 1}, the measured "
                "best") in " ".join(text.split())
    assert f"Kendall's tau {doc['kendall_tau']:+.2f} ({discordant} of 3 pairs in the other order)" in text


def test_top_of_throughput_plans_prints_the_rank_json(files, capsys):
    argv = ["bench", str(files / "throughput.json"), "--top", "2", "--requests", "4", "--concurrency", "2",
            "--num-warmup", "0", "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)  # stdout is the JSON alone
    assert doc["kind"] == "rank" and doc["figure"] == "throughput" and doc["concurrency"] == 2
    assert [p["rank"] for p in doc["plans"]] == [1, 2]
    for p in doc["plans"]:
        assert p["predicted"] == p["bench"]["predicted_throughput_rps"]
        assert p["measured"] == p["bench"]["throughput_rps"] and p["bench"]["num_requests"] == 4


@pytest.fixture
def no_deploy(monkeypatch):
    """Fails the test if a command gets as far as deploying anything."""
    from splitinfer.cli import runtime_cmds
    from splitinfer.runtime import bench

    monkeypatch.setattr(runtime_cmds, "open_session", lambda *a, **k: pytest.fail("deployed"))
    monkeypatch.setattr(bench, "deploy", lambda *a, **k: pytest.fail("deployed"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--top", "4"], "--top 4: plan file {plans} has 3 plan(s). give --top 3 or less"),
        (["--top", "0"], "--top is 0. use a whole number >= 1"),
        (["--top", "-2"], "--top is -2"),
        (["--top", "2", "--rank", "1"], "--top and --rank both given"),
        (["--rank", "2", "--top", "2"], "--top and --rank both given"),
    ],
)
def test_bad_top_is_one_line_and_exit_2_before_deploying(files, capsys, no_deploy, options, message):
    plans = files / "plans.json"
    assert main(["bench", str(plans), *options]) == 2
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert captured.err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert message.format(plans=plans) in err and captured.out == ""


def test_top_refuses_plans_of_mixed_objectives(files, capsys, no_deploy, tmp_path):
    mixed = [*read_plans(files / "plans.json")[:1], *read_plans(files / "throughput.json")[:1]]
    (tmp_path / "mixed.json").write_text(plan_to_json(mixed))
    argv = ["bench", str(tmp_path / "mixed.json"), "--top", "2", "--cluster", str(files / "cluster.yaml")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "these plans are ranked by latency and throughput" in err
