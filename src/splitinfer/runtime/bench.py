"""Measure a deployed plan and compare it with its prediction (the record: :mod:`splitinfer.records.bench`).

::

    with deploy(plan, cluster, model, profile=profile) as session:
        result = bench(session, num_requests=100, concurrency=1)
    print(result.latency_median_s, result.predicted_latency_s, result.latency_rel_error)
    save_bench(result, "bench.json")  # splitinfer.records.save_bench

What is compared: per stage, the plan's ``compute_s`` with the measured busy time
(ONNX Runtime compute plus the emulated slowdown wait, :attr:`StageTiming.busy_s`);
per hop, the plan's ``transfer_s`` with the time the receiver observed (hand-off to
arrival), and the plan's ``num_bytes`` with the bytes really sent (compressed where the
hop compresses: :attr:`HopTiming.num_bytes`); end to end, the plan's latency with the
measured request latency (valid at concurrency 1: with more requests in flight they
queue) and the plan's throughput with completed requests per second of wall time (the
figure to compare at concurrency > 1).
Relative errors are ``(predicted - measured) / measured`` of the medians: negative
means the plan is optimistic.

Hops are paired by position: the runtime records one hop into every stage and one
out of the last (source -> stage 0, stage k -> k+1, last -> sink); the plan lists only
hops between different devices (upload, cuts, return). A hop the plan does not list
(both ends on the same device) is predicted free, so its measured time shows the
runtime's own overhead (and its bytes, the tensors handed on in memory).

:func:`bench_ranked` measures the k best plans of a plan file under the same conditions and
puts their measured order beside the predicted one (the record: ``RankResult``)::

    result = bench_ranked(read_plans("plan.json")[:3], cluster, model, profile=profile)
    print(result.measured_best, result.regret, result.kendall_tau)
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import ExitStack
from datetime import UTC, datetime

import msgspec
import numpy as np
import yaml

from splitinfer.cluster import Cluster, dump_cluster
from splitinfer.errors import DeadlineError, PlanError, SplitinferError
from splitinfer.graph.feeds import generate_feeds
from splitinfer.host import MACHINE_KEYS, host_info
from splitinfer.plan import Hop, Plan
from splitinfer.records.bench import (
    BenchResult,
    HopBench,
    RankedBench,
    RankFigure,
    RankResult,
    StageBench,
    discordant_pairs,
    kendall_tau,
    measured_ranks,
    rank_figure,
    regret,
    rel_error,
)
from splitinfer.runtime.bench_exits import compare_exits
from splitinfer.runtime.bench_exits import compare_hops as exit_hops
from splitinfer.runtime.bench_exits import compare_stages as exit_stages
from splitinfer.runtime.bench_resources import ResourceWatch, check_interval
from splitinfer.runtime.coordinator.deploy import Calibration, ModelSource, ProfileSource, deploy
from splitinfer.runtime.coordinator.session import Session
from splitinfer.runtime.coordinator.timing import RequestTiming, Result
from splitinfer.units import check_number

MAX_REQUESTS = 10_000_000  # requests (measured or warm-up) of one bench
MAX_CONCURRENCY = 10_000  # requests in flight at once

log = logging.getLogger("splitinfer.bench")

NUM_DISTINCT_FEEDS = 8  # requests cycle through this many generated inputs (generation is not timed)
Feeds = Mapping[str, np.ndarray]


def _feed_maker(session: Session, feeds: Feeds | Sequence[Feeds] | None,
                plan: Plan | None = None) -> Callable[[int], Feeds]:
    """Inputs by request number: ``feeds`` as given, else generated at the size ``plan`` was made for
    (its provenance's ``input_shapes``; the model's own size when it names none)."""
    if isinstance(feeds, Mapping):
        return lambda i: feeds
    if feeds is not None:
        pool = list(feeds)
        if not pool:
            raise SplitinferError("feeds is an empty sequence", "give at least one input mapping, or None")
    elif session.model is not None:
        shapes = plan.provenance.input_shapes if plan is not None and plan.provenance.input_shapes else None
        pool = [session.model.make_feeds(seed=i, shapes=shapes) for i in range(NUM_DISTINCT_FEEDS)]
    else:
        pool = [generate_feeds(session.inputs, {}, seed=i) for i in range(NUM_DISTINCT_FEEDS)]
    return lambda i: pool[i % len(pool)]


def run_requests(session: Session, make_feeds: Callable[[int], Feeds], num_requests: int, concurrency: int,
                 on_done: Callable[[], None] | None = None) -> tuple[list[Result], float]:
    """Run ``num_requests`` keeping ``concurrency`` in flight; results in completion order, wall seconds.

    The first failed request's error is raised (after the others in flight settle).
    """
    check_number(concurrency, "concurrency", low=1, high=MAX_CONCURRENCY, whole=True)
    order: list[Future] = []
    lock = threading.Lock()

    def record(future: Future) -> None:
        with lock:
            order.append(future)

    in_flight: set[Future] = set()
    submitted = 0
    start = time.perf_counter()
    while submitted < num_requests or in_flight:
        while submitted < num_requests and len(in_flight) < concurrency:
            future = session.submit(make_feeds(submitted))
            future.add_done_callback(record)
            in_flight.add(future)
            submitted += 1
        done, in_flight = wait(in_flight, timeout=session.timeout_s + 5.0, return_when=FIRST_COMPLETED)
        if not done:
            raise DeadlineError(f"no request completed within {session.timeout_s + 5.0:g} s",
                                "check the workers (splitinfer worker logs) or give a longer timeout")
        for future in done:
            if on_done is not None:
                on_done()
            if future.exception() is not None:
                wait(in_flight)
                raise future.exception()  # type: ignore[misc]
    wall_s = time.perf_counter() - start
    with lock:
        return [f.result() for f in order], wall_s


def _quantiles(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.median(arr)), float(np.percentile(arr, 95))


def compare_stages(plan: Plan, timings: Sequence[RequestTiming]) -> tuple[StageBench, ...]:
    """Per plan stage: predicted compute vs measured busy time."""
    out = []
    for k, stage in enumerate(plan.stages):
        median, p95 = _quantiles([t.stages[k].busy_s for t in timings])
        predicted = stage.compute_s
        out.append(StageBench(k, stage.device, predicted, median, p95, rel_error(predicted, median),
                              stage.precision))
    return tuple(out)


def compare_hops(plan: Plan, timings: Sequence[RequestTiming]) -> tuple[HopBench, ...]:
    """Per measured hop (source -> stage 0, ..., last stage -> sink): paired with the plan's hop, its
    time and its bytes (the median sent: a lossless compression's size depends on the tensors)."""
    planned = list(plan.hops)
    num_hops = len(timings[0].hops)
    out = []
    for position in range(num_hops):
        first = timings[0].hops[position]
        kind = "upload" if position == 0 else "return" if position == num_hops - 1 else "cut"
        hop = Hop(first.src, first.dst, 0, 0.0, kind)  # not in the plan: one device, predicted free
        if planned and (planned[0].src, planned[0].dst, planned[0].kind) == (first.src, first.dst, kind):
            hop = planned.pop(0)
        median, p95 = _quantiles([t.hops[position].transfer_s for t in timings])
        sent = int(np.median([t.hops[position].num_bytes for t in timings]))
        out.append(HopBench(first.src, first.dst, kind, sent, hop.transfer_s, median, p95,
                            rel_error(hop.transfer_s, median), predicted_bytes=hop.num_bytes,
                            compression=hop.compression))
    if planned:
        raise PlanError(f"the plan's hops {[(h.src, h.dst, h.kind) for h in planned]} were not measured",
                        "bench the plan the session was deployed from")
    return tuple(out)


def describe_host() -> dict[str, str]:
    """Where the bench ran, as bench.json keeps it (text values): the machine's
    :data:`~splitinfer.host.MACHINE_KEYS` and the library versions beside them."""
    info = host_info()
    return {**{k: str(info[k]) for k in MACHINE_KEYS if info.get(k) is not None}, **info["versions"]}


def bench(session: Session, plan: Plan | None = None, *, num_requests: int = 50, concurrency: int = 1,
          num_warmup: int = 5, feeds: Feeds | Sequence[Feeds] | None = None,
          progress: Callable[[int, int], None] | None = None,
          resource_interval_s: float | None = 0.1) -> BenchResult:
    """Run ``num_warmup`` then ``num_requests`` requests (``concurrency`` in flight); compare with ``plan``.

    ``plan`` defaults to ``session.plan``. ``feeds``: one input mapping for every request, a
    sequence to cycle through, or None for seeded generated inputs. ``progress(done, total)``
    is called after every measured request. Raises the first failed request's error.
    ``resource_interval_s``: each worker of the plan samples its CPU, memory and GPU use this often
    from the warm-up on; the samples of the measured requests are the result's ``resources``
    (None or 0: none).
    """
    plan = plan if plan is not None else session.plan
    if plan is None:
        raise PlanError("no plan to compare with", "deploy with splitinfer.deploy(plan, ...) or pass plan=")
    check_number(num_requests, "num_requests", low=1, high=MAX_REQUESTS, whole=True)
    check_number(num_warmup, "num_warmup", low=0, high=MAX_REQUESTS, whole=True)
    check_number(concurrency, "concurrency", low=1, high=MAX_CONCURRENCY, whole=True)
    if session.options.full_depth and plan.full_depth is not None:  # no exit answers: the plan without them
        plan = msgspec.structs.replace(plan.full_depth, provenance=plan.provenance)
    interval_s = check_interval(resource_interval_s)
    make_feeds = _feed_maker(session, feeds, plan)
    devices = [s.device for s in plan.stages]
    watch = ResourceWatch(session, devices, interval_s).start() if interval_s else None
    try:
        if num_warmup:
            run_requests(session, make_feeds, num_warmup, concurrency)
        counter = iter(range(1, num_requests + 1))
        on_done = (lambda: progress(next(counter), num_requests)) if progress is not None else None
        start_unix_s = time.time()
        results, wall_s = run_requests(session, make_feeds, num_requests, concurrency, on_done)
        resources = watch.collect(start_unix_s, time.time()) if watch is not None else {}
    finally:
        if watch is not None:
            watch.close()
    result = _summarize(session, plan, results, wall_s, concurrency)
    return msgspec.structs.replace(result, resources=resources)


def predicted_throughput(plan: Plan, concurrency: int) -> float:
    """Requests/s the plan predicts with ``concurrency`` requests in flight (a closed loop).

    One request in flight completes every latency; more fill the pipeline until its
    bottleneck stage or hop limits the rate: min(C / latency, 1 / bottleneck).
    """
    if plan.latency_s <= 0:
        return plan.throughput_rps
    return min(concurrency / plan.latency_s, plan.throughput_rps)


def _summarize(session: Session, plan: Plan, results: Sequence[Result], wall_s: float,
               concurrency: int) -> BenchResult:
    devices = [s.device for s in plan.stages]
    exits = bool(plan.exit_mix)
    timings = [r.timing for r in results if [s.device for s in r.timing.stages] == devices or
               (exits and [s.device for s in r.timing.stages] == devices[:len(r.timing.stages)])]
    if not timings:
        raise PlanError("no request ran on the plan's stages (the session re-planned)",
                        "bench again: session.plan is the plan now deployed")
    latencies = [r.timing.latency_s for r in results]
    arr = np.asarray(latencies, dtype=np.float64)
    median, p95 = _quantiles(latencies)
    throughput = len(latencies) / wall_s if wall_s > 0 else math.inf
    expected_rps = predicted_throughput(plan, concurrency)
    model = session.model
    return BenchResult(
        plan=plan,
        model_name=model.name if model is not None else plan.provenance.model,
        model_sha256=model.sha256 if model is not None else plan.provenance.model_sha256,
        cluster=yaml.safe_load(dump_cluster(session.cluster)),
        num_requests=len(latencies), concurrency=concurrency,
        latency_median_s=median, latency_p95_s=p95, latency_mean_s=float(arr.mean()),
        latency_min_s=float(arr.min()), latency_max_s=float(arr.max()),
        throughput_rps=throughput,
        predicted_latency_s=plan.latency_s, predicted_throughput_rps=expected_rps,
        # with exits the plan predicts an expected latency: the mean is what it predicts
        latency_rel_error=rel_error(plan.latency_s, float(arr.mean()) if exits else median),
        throughput_rel_error=rel_error(expected_rps, throughput),
        stages=exit_stages(plan, results) if exits else compare_stages(plan, timings),
        hops=exit_hops(plan, results) if exits else compare_hops(plan, timings),
        latencies_s=tuple(latencies),
        date=datetime.now(UTC).isoformat(timespec="seconds"), host=describe_host(),
        exits=compare_exits(plan, results) if exits else (),
    )


# ---- the k best plans, ranked by measurement ---------------------------------------------------------
ROUNDS_PER_TURN = 4  # at concurrency C > 1, a plan's turn is this many times C requests


def requests_per_turn(concurrency: int) -> int:
    """Requests one plan runs before the next plan's turn: one at concurrency 1 (requests one at a
    time, round robin); at C > 1, ROUNDS_PER_TURN x C, so filling and draining the pipeline (about
    one latency a turn) weighs little against the throughput measured while it runs full."""
    return 1 if concurrency == 1 else ROUNDS_PER_TURN * concurrency


Run = tuple[list[Result], float]  # one plan's results and the wall seconds of its turns


def interleave(sessions: Sequence[Session], make_feeds: Callable[[int], Feeds], num_requests: int,
               concurrency: int, on_done: Callable[[], None] | None = None) -> list[Run]:
    """Round robin over ``sessions``: a turn of :func:`requests_per_turn` requests on each in order
    until each has run ``num_requests``. Per session: its results and the wall seconds of its turns.

    Load that comes and goes on a shared machine then falls on every plan alike; every plan gets
    the same inputs in the same order.
    """
    turn = requests_per_turn(concurrency)
    runs: list[Run] = [([], 0.0) for _ in sessions]
    done = 0
    while done < num_requests:
        size = min(turn, num_requests - done)
        for k, session in enumerate(sessions):
            results, wall_s = run_requests(session, lambda i, first=done: make_feeds(first + i), size,
                                           concurrency, on_done)
            runs[k] = (runs[k][0] + results, runs[k][1] + wall_s)
        done += size
    return runs


def bench_ranked(plans: Sequence[Plan], cluster: Cluster, model: ModelSource, *,
                 profile: ProfileSource | None = None, num_requests: int = 50, concurrency: int = 1,
                 num_warmup: int = 5, feeds: Feeds | Sequence[Feeds] | None = None,
                 calibration: Calibration | None = None, timeout_s: float = 30.0,
                 progress: Callable[[int, int], None] | None = None) -> RankResult:
    """Bench ``plans`` (a plan file's best first: their predicted order) and rank them by measurement.

    All plans are deployed at once and measured interleaved (:func:`interleave`), each after
    ``num_warmup`` requests of its own; when deploying them all at once fails (fixed worker
    addresses, memory), they are deployed and measured one after another, and the result's
    ``note`` says why. Each plan is compared as :func:`bench` does, at ``concurrency``; the
    plans are ranked by median latency, or for throughput plans by throughput. ``progress(done,
    total)`` counts measured requests over all plans; the other arguments are :func:`bench`'s and
    :func:`~splitinfer.runtime.coordinator.deploy.deploy`'s.
    """
    if not plans:
        raise PlanError("no plans to rank", "give the plans of a plan file, best first")
    figure = rank_figure(plans)
    check_number(num_requests, "num_requests", low=1, high=MAX_REQUESTS, whole=True)
    check_number(num_warmup, "num_warmup", low=0, high=MAX_REQUESTS, whole=True)
    check_number(concurrency, "concurrency", low=1, high=MAX_CONCURRENCY, whole=True)
    total = len(plans) * num_requests
    counter = iter(range(1, total + 1))
    on_done = (lambda: progress(next(counter), total)) if progress is not None else None

    def start(plan: Plan) -> Session:
        return deploy(plan, cluster, model, profile=profile, timeout_s=timeout_s, calibration=calibration)

    with ExitStack() as stack:
        sessions, note = _deploy_all(stack, plans, start)
        if sessions:
            make_feeds = _feed_maker(sessions[0], feeds, plans[0])  # every plan gets the same inputs
            for session in sessions:
                if num_warmup:
                    run_requests(session, make_feeds, num_warmup, concurrency)
            runs = interleave(sessions, make_feeds, num_requests, concurrency, on_done)
            benches = [_summarize(session, plan, results, wall_s, concurrency)
                       for session, plan, (results, wall_s) in zip(sessions, plans, runs, strict=True)]
    if not sessions:
        benches = []
        for plan in plans:
            with start(plan) as session:
                benches.append(bench(session, plan, num_requests=num_requests, concurrency=concurrency,
                                     num_warmup=num_warmup, feeds=feeds, resource_interval_s=None,
                                     progress=None if on_done is None else lambda *_: on_done()))
    return _rank(benches, figure, num_requests, concurrency, note)


def _deploy_all(stack: ExitStack, plans: Sequence[Plan],
                start: Callable[[Plan], Session]) -> tuple[list[Session], str]:
    """Every plan deployed (closed with ``stack``), or none and why not."""
    sessions: list[Session] = []
    try:
        with ExitStack() as opened:  # on a failure, closes the sessions already deployed
            for plan in plans:
                sessions.append(opened.enter_context(start(plan)))
            stack.enter_context(opened.pop_all())
    except (SplitinferError, OSError) as e:
        if not sessions:  # the first plan failed alone, not for want of room: deploying it again would too
            raise
        reason = e.problem if isinstance(e, SplitinferError) else str(e)
        log.warning("deploying %d plans at once failed (%s): measuring one after another", len(plans), reason)
        return [], f"deploying the {len(plans)} plans at once failed ({reason}): measured one after another"
    return sessions, ""


def _rank(benches: Sequence[BenchResult], figure: RankFigure, num_requests: int, concurrency: int,
          note: str) -> RankResult:
    if figure == "latency":
        figures = [(b.predicted_latency_s, b.latency_median_s, b.latency_rel_error) for b in benches]
    else:
        figures = [(b.predicted_throughput_rps, b.throughput_rps, b.throughput_rel_error) for b in benches]
    measured = [m for _, m, _ in figures]
    ranks = measured_ranks(measured, figure)
    entries = tuple(RankedBench(rank=k + 1, measured_rank=ranks[k], predicted=p, measured=m, rel_error=e,
                                bench=b)
                    for k, ((p, m, e), b) in enumerate(zip(figures, benches, strict=True)))
    return RankResult(figure=figure, num_requests=num_requests, concurrency=concurrency, interleaved=not note,
                      note=note, plans=entries, measured_best=ranks.index(1) + 1,
                      regret=regret(measured, figure), kendall_tau=kendall_tau(ranks),
                      num_discordant_pairs=discordant_pairs(ranks),
                      date=datetime.now(UTC).isoformat(timespec="seconds"), host=describe_host())
