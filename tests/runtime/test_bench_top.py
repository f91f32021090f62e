"""bench_ranked(): the k best plans measured interleaved (or one after another), predicted against measured
rank; the round robin on fake sessions, the rank arithmetic, and real deployments on local workers."""

from __future__ import annotations

import itertools
import json
from concurrent.futures import Future

import pytest
from helpers import deploy as helpers
from helpers.runtime_models import local_cluster

from splitinfer.errors import ClusterError, ModelError, PlanError, SchemaError
from splitinfer.plan import Plan, Stage, solve, with_provenance
from splitinfer.profile.problem import build_problem
from splitinfer.records.bench import (
    decode_bench,
    decode_rank,
    discordant_pairs,
    encode_bench,
    encode_rank,
    kendall_tau,
    load_rank,
    measured_ranks,
    rank_figure,
    regret,
    save_rank,
)
from splitinfer.runtime import bench as bench_module
from splitinfer.runtime.bench import bench_ranked, interleave, predicted_throughput, requests_per_turn


class FakeSession:
    """Answers at once; logs which plan got which input, in the order requests were sent."""

    timeout_s = 5.0

    def __init__(self, index: int, sent: list[tuple[int, int]]) -> None:
        self.index = index
        self.sent = sent

    def submit(self, feeds) -> Future:
        self.sent.append((self.index, feeds["i"]))
        future: Future = Future()
        future.set_result(self.index)
        return future


def test_interleave_sends_each_plan_one_request_in_turn_with_the_same_inputs():
    sent: list[tuple[int, int]] = []
    sessions = [FakeSession(k, sent) for k in range(3)]
    runs = interleave(sessions, lambda i: {"i": i}, 4, concurrency=1)
    assert [k for k, _ in sent] == [0, 1, 2] * 4  # round robin, one request at a time
    for k in range(3):
        assert [i for plan, i in sent if plan == k] == [0, 1, 2, 3]  # the same inputs in the same order
    assert [results for results, _ in runs] == [[0] * 4, [1] * 4, [2] * 4]
    assert all(wall_s >= 0 for _, wall_s in runs)

    # At concurrency 2 a turn is several requests (the pipeline runs full); the last turn is what is left.
    sent.clear()
    turn = requests_per_turn(2)
    assert turn > 2
    runs = interleave(sessions[:2], lambda i: {"i": i}, turn + 2, concurrency=2)
    assert [k for k, _ in sent] == [0] * turn + [1] * turn + [0] * 2 + [1] * 2
    assert [i for plan, i in sent if plan == 1] == list(range(turn + 2))
    assert [len(results) for results, _ in runs] == [turn + 2] * 2


def test_measured_ranks_regret_and_rank_correlation():
    assert measured_ranks([3.0, 1.0, 2.0], "latency") == [3, 1, 2]  # lowest latency first
    assert measured_ranks([3.0, 1.0, 2.0], "throughput") == [1, 3, 2]  # highest throughput first
    assert measured_ranks([1.0, 1.0, 0.5], "latency") == [2, 3, 1]  # a tie keeps the predicted order
    assert regret([1.1, 1.0, 2.0], "latency") == pytest.approx(0.1)  # 10% slower than the best
    assert regret([10.0, 12.5], "throughput") == pytest.approx(0.25)  # a request took 25% longer
    assert regret([1.0, 2.0], "latency") == 0.0 and regret([2.0, 1.0], "throughput") == 0.0
    assert discordant_pairs([2, 1, 3]) == 1 and discordant_pairs([3, 2, 1]) == 3
    assert kendall_tau([1]) is None
    assert kendall_tau([1, 2, 3]) == 1.0 and kendall_tau([3, 2, 1]) == -1.0
    stats = pytest.importorskip("scipy.stats")
    for ranks in itertools.permutations(range(1, 6)):
        expected = stats.kendalltau(range(1, 6), ranks).statistic
        assert kendall_tau(ranks) == pytest.approx(expected)


def _plan(objective: str) -> Plan:
    return Plan(objective, (Stage("a", 0, 1, 0.01),), (), 0.01, 0.01, 100.0, 0, 0)


def test_only_plans_of_one_measured_objective_are_ranked():
    assert rank_figure([_plan("latency")] * 2) == "latency"
    assert rank_figure([_plan("throughput")]) == "throughput"
    for plans in ([_plan("energy")], [_plan("pareto-upload")], [_plan("latency"), _plan("throughput")]):
        with pytest.raises(PlanError, match="orders plans by latency or throughput"):
            rank_figure(plans)
    with pytest.raises(PlanError, match="no plans to rank"):
        bench_ranked([], local_cluster(["a"]), helpers.model_bytes("resnet18"))


@pytest.fixture(scope="module")
def setup():
    data = helpers.model_bytes("resnet18")
    cluster = local_cluster(["a", "b"], slowdown={"a": 3.0})
    profile = helpers.fake_profile(data, cluster)
    return data, cluster, profile


def _best(setup, objective: str, k: int) -> list[Plan]:
    _, cluster, profile = setup
    plans = solve(build_problem(profile, cluster), objective, top_k=k)
    assert len(plans) == k
    return [with_provenance(p, model_sha256=profile.model.sha256, model=profile.model.name) for p in plans]


def test_throughput_plans_are_ranked_by_throughput_at_the_concurrency_measured(setup, tmp_path):
    data, cluster, profile = setup
    plans = _best(setup, "throughput", 2)
    seen: list[tuple[int, int]] = []
    result = bench_ranked(plans, cluster, data, profile=profile, num_requests=8, concurrency=2, num_warmup=1,
                          timeout_s=10.0, progress=lambda done, total: seen.append((done, total)))
    assert result.figure == "throughput" and result.interleaved and result.note == ""
    assert seen == [(n, 16) for n in range(1, 17)]
    assert [e.rank for e in result.plans] == [1, 2]
    for entry, plan in zip(result.plans, plans, strict=True):
        b = entry.bench
        assert b.plan == plan and b.num_requests == 8 and len(b.latencies_s) == 8 and b.concurrency == 2
        assert entry.predicted == b.predicted_throughput_rps == predicted_throughput(plan, 2)
        assert entry.measured == b.throughput_rps > 0 and entry.rel_error == b.throughput_rel_error
    measured = [e.measured for e in result.plans]
    best = max(range(2), key=lambda k: measured[k])
    assert result.measured_best == best + 1 and result.plans[best].measured_rank == 1
    assert result.regret == pytest.approx(measured[best] / measured[0] - 1.0)
    assert result.kendall_tau == (1.0 if best == 0 else -1.0)

    path = tmp_path / "rank.json"
    save_rank(result, path)
    assert load_rank(path) == result and json.loads(path.read_text())["kind"] == "rank"
    with pytest.raises(SchemaError, match=r"ranked bench of several plans \(`splitinfer bench --top`\)"):
        decode_bench(encode_rank(result))
    with pytest.raises(SchemaError, match="not a rank file"):
        decode_rank(encode_bench(result.plans[0].bench))
    with pytest.raises(SchemaError, match="schema 7"):
        decode_rank(json.dumps({**json.loads(encode_rank(result)), "schema": 7}))


def test_plans_that_cannot_be_deployed_at_once_are_measured_one_after_another(setup, monkeypatch):
    data, cluster, profile = setup
    plans = _best(setup, "latency", 2)
    real_deploy = bench_module.deploy
    opened = []

    def deploy_one_at_a_time(*args, **kwargs):  # as workers at fixed addresses would
        if any(s.state != "closed" for s in opened):
            raise ClusterError("port 5555 is in use", "free it")
        opened.append(real_deploy(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(bench_module, "deploy", deploy_one_at_a_time)
    result = bench_ranked(plans, cluster, data, profile=profile, num_requests=3, num_warmup=0, timeout_s=10.0)
    assert not result.interleaved
    assert result.note == \
        "deploying the 2 plans at once failed (port 5555 is in use): measured one after another"
    # the first try's session, then one per plan; every one closed
    assert len(opened) == 3 and all(s.state == "closed" for s in opened)
    assert [e.bench.plan for e in result.plans] == plans
    assert all(e.bench.num_requests == 3 and e.measured == e.bench.latency_median_s for e in result.plans)
    assert sorted(e.measured_rank for e in result.plans) == [1, 2]


def test_a_first_plan_that_cannot_be_deployed_at_all_is_not_tried_again(setup, monkeypatch):
    data, cluster, profile = setup
    calls = []

    def refuse(*args, **kwargs):  # the plan's own fault, not a lack of room: no use deploying it again
        calls.append(args[0])
        raise ModelError("the plan was made for another model", "plan for this one")

    monkeypatch.setattr(bench_module, "deploy", refuse)
    with pytest.raises(ModelError, match="another model"):
        bench_ranked(_best(setup, "latency", 2), cluster, data, profile=profile, num_requests=1)
    assert len(calls) == 1
