"""What splitting gains, measured: the best plan side by side with the best plans on a single device.

Planning says a split beats every single device; this measures it. Per objective the best plan
and the best plan constrained to one stage (``Constraints(max_stages=1)``), with any other device
predicted within :data:`SINGLE_MARGIN` of it, are deployed together and sent requests in turn
(:func:`~splitinfer.runtime.bench.bench_ranked`), so load that comes and goes on a shared machine
falls on each alike; the gain is the ratio of what the best plan and the single device that
measured best measured (the record and its arithmetic: :mod:`splitinfer.records.gain`)::

    from splitinfer.records.gain import gain_line, save_gain
    from splitinfer.runtime.gain import measure_gains
    result = measure_gains(profile, cluster, "mobilenetv2.onnx")   # latency and throughput
    for g in result.gains:
        print(gain_line(g))       # split: 1.54x faster than the fastest single device (...)
    save_gain(result, "gain.json")

Latency is measured at concurrency 1 (the median, no queueing), throughput pipelined at
:data:`THROUGHPUT_CONCURRENCY` requests in flight (completed requests per second).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from splitinfer.cluster import Cluster
from splitinfer.errors import InfeasibleError, PlanError
from splitinfer.plan import Constraints, Plan, Problem, solve
from splitinfer.profile.problem import build_problem
from splitinfer.profile.schema import Profile
from splitinfer.records.bench import RankFigure, rank_figure
from splitinfer.records.gain import GainResult, SplitGain, split_gain
from splitinfer.runtime.bench import Feeds, bench_ranked, describe_host
from splitinfer.runtime.coordinator.deploy import Calibration, ModelSource
from splitinfer.units import check_number

GAIN_OBJECTIVES: tuple[RankFigure, ...] = ("latency", "throughput")
# Enough requests in flight to keep a two- or three-stage pipeline full (its hops included), so the
# split's throughput is its bottleneck's, not the rate one request at a time allows.
THROUGHPUT_CONCURRENCY = 4
# A single device predicted within this factor of the best one is measured too: profiles are noisy,
# and comparing with a device that only the prediction put first would flatter the split.
SINGLE_MARGIN = 1.25


def single_device_plans(problem: Problem, objective: str, constraints: Constraints | None = None, *,
                        margin: float = SINGLE_MARGIN) -> list[Plan]:
    """The best plans for ``objective`` with one stage (the whole model on one device, under
    ``constraints``), best first: the best, and every other device predicted within ``margin`` of it
    (latency at most ``margin`` times, throughput at least 1/``margin`` times). Empty when no single
    device can run the model (memory, pins, privacy)."""
    check_number(margin, "margin", low=1.0, high=1e6, error=PlanError)
    one_stage = dataclasses.replace(constraints or Constraints(), max_stages=1)
    try:
        # one stage holds every block: the k best one-stage plans are k different devices
        plans = solve(problem, objective, one_stage, top_k=len(problem.devices))
    except InfeasibleError:
        return []
    first, others = plans[0], plans[1:]
    if objective == "throughput":
        close = [p for p in others if p.throughput_rps * margin >= first.throughput_rps]
    else:
        close = [p for p in others if p.latency_s <= first.latency_s * margin]
    return [first, *close]  # the best always, whatever its figure (a ratio of a bad prediction can drop it)


def gain_plans(problem: Problem, objective: str,
               constraints: Constraints | None = None) -> tuple[Plan, list[Plan]]:
    """The best plan for ``objective`` and the single-device plans to measure it against
    (:func:`single_device_plans`; none when the best plan has one stage: it is its own)."""
    best = solve(problem, objective, constraints or Constraints())[0]
    return best, [] if len(best.stages) == 1 else single_device_plans(problem, objective, constraints)


def measure_gain(best: Plan, singles: Sequence[Plan], cluster: Cluster, model: ModelSource, *,
                 profile: Profile | None = None, num_requests: int = 50, concurrency: int | None = None,
                 num_warmup: int = 5, feeds: Feeds | Sequence[Feeds] | None = None,
                 calibration: Calibration | None = None, timeout_s: float = 30.0,
                 progress: Callable[[int, int], None] | None = None) -> SplitGain:
    """Measure ``best`` against the single-device plans ``singles`` side by side; the gain of the split
    over the one of them that measured best.

    All plans must be of one objective, latency or throughput. ``concurrency`` defaults to 1 for
    latency and :data:`THROUGHPUT_CONCURRENCY` for throughput. When ``best`` has one stage it is its
    own single-device plan (``singles`` is then not measured): it is measured alone and the gain is
    1.0; with no ``singles`` there is no gain. The other arguments are
    :func:`~splitinfer.runtime.bench.bench_ranked`'s.
    """
    if any(len(p.stages) != 1 for p in singles):
        raise PlanError("a single-device plan to compare with has several stages",
                        "give plans of one stage (splitinfer.runtime.gain.single_device_plans)")
    alone = len(best.stages) == 1
    plans = [best] if alone else [best, *singles]
    objective = rank_figure(plans)
    if concurrency is None:
        concurrency = 1 if objective == "latency" else THROUGHPUT_CONCURRENCY
    ranked = bench_ranked(plans, cluster, model, profile=profile, num_requests=num_requests,
                          concurrency=concurrency, num_warmup=num_warmup, feeds=feeds,
                          calibration=calibration, timeout_s=timeout_s, progress=progress)
    measured_best = ranked.plans[0]
    measured_singles = (measured_best,) if alone else ranked.plans[1:]
    return split_gain(objective, measured_best, measured_singles, num_requests=num_requests,
                      concurrency=concurrency, interleaved=ranked.interleaved, note=ranked.note)


def measure_gains(profile: Profile, cluster: Cluster, model: ModelSource, *,
                  objectives: Sequence[RankFigure] = GAIN_OBJECTIVES, constraints: Constraints | None = None,
                  plans: Mapping[str, tuple[Plan, Sequence[Plan]]] | None = None, num_requests: int = 50,
                  throughput_concurrency: int = THROUGHPUT_CONCURRENCY, num_warmup: int = 5,
                  feeds: Feeds | Sequence[Feeds] | None = None, calibration: Calibration | None = None,
                  timeout_s: float = 30.0, on_objective: Callable[[str], None] | None = None) -> GainResult:
    """The gain of splitting for each of ``objectives``: planned from ``profile`` on ``cluster`` (under
    ``constraints``) with :func:`gain_plans`, unless ``plans`` gives (best, single-device plans) per
    objective, then measured with :func:`measure_gain`. ``on_objective(objective)`` is called as each
    one starts."""
    if not objectives:
        raise PlanError("no objective to measure the gain of", f"give some of {', '.join(GAIN_OBJECTIVES)}")
    problem: Problem | None = None
    gains = []
    for objective in objectives:
        if on_objective is not None:
            on_objective(objective)
        given = (plans or {}).get(objective)
        if given is None:
            problem = problem or build_problem(profile, cluster)
        best, singles = given if given is not None else gain_plans(problem, objective, constraints)
        concurrency = 1 if objective == "latency" else throughput_concurrency
        gains.append(measure_gain(best, singles, cluster, model, profile=profile, num_requests=num_requests,
                                  concurrency=concurrency, num_warmup=num_warmup, feeds=feeds,
                                  calibration=calibration, timeout_s=timeout_s))
    return GainResult(gains=tuple(gains), date=datetime.now(UTC).isoformat(timespec="seconds"),
                      host=describe_host())
