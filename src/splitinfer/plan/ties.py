"""Throughput ties go to the faster plan: a throughput solve's answers in (bottleneck, latency) order.

The plans with a bottleneck below the k-th best are all among the answers; those that tie with
the k-th are replaced by the fastest plans whose bottleneck is at most that value (a latency solve
under a throughput bound, which :func:`.solve.solve` passes in). Proofs stay the throughput solve's,
by rank (:func:`.proof.by_rank`): re-ranking equal bottlenecks by latency changes which plan holds
a rank, not what is proven about the rank's bottleneck.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from splitinfer.errors import PlanError
from splitinfer.plan.cost import measure, throughput_cap_s
from splitinfer.plan.problem import Constraints, Instance
from splitinfer.plan.proof import Candidate, by_rank

# (min_throughput_rps, how many): the fastest plans under that throughput bound, fastest first.
FastestUnder = Callable[[float, int], list[Candidate]]


def fastest_among_ties(
    inst: Instance, cons: Constraints, found: list[Candidate], top_k: int, fastest_under: FastestUnder
) -> list[Candidate]:
    """The throughput solve's answers ``found`` (in its order) ranked by (bottleneck, latency), exactly."""
    scored = [(measure(inst, a), a, proof, name) for a, proof, name in found]
    worst = max(m.bottleneck_s for m, *_ in scored)  # type: ignore[union-attr]
    tol = worst * 1e-12
    below = [s for s in scored if s[0].bottleneck_s < worst - tol]  # type: ignore[union-attr]
    cap = worst + tol
    user_cap = throughput_cap_s(cons.min_throughput_rps)
    min_rps = math.inf if min(cap, user_cap) == 0 else 1.0 / min(cap, user_cap)
    taken = {tuple(s[1]) for s in below}
    ties = []
    try:
        faster = fastest_under(min_rps, top_k + len(below))
    except PlanError:  # the MILP ran out of time: keep the solver's own order
        faster = []
    for a, proof, name in faster:
        m = measure(inst, a)
        if m is not None and tuple(a) not in taken and abs(m.bottleneck_s - worst) <= tol:
            ties.append((m, a, proof, name))
    below = by_bottleneck_then_latency(below)
    chosen = taken | {tuple(t[1]) for t in ties}
    ties += [s for s in scored if tuple(s[1]) not in chosen]  # in case the sub-solve fell short
    ordered = below + ties[: top_k - len(below)]
    solver = found[0][2]  # the ties come from a latency solve, but the ranking is the throughput solver's
    proofs = by_rank([proof for _, proof, _ in found], len(ordered))
    return [(a, proof, solver) for (_, a, _, _), proof in zip(ordered, proofs, strict=True)]


def by_bottleneck_then_latency(scored: list) -> list:
    """Sort by bottleneck (equal up to rounding, 1e-9 relative, counts as one level), then latency.

    Float sums in a different order differ in the last bits; a plain sort would
    then rank a slower plan first for a bottleneck that is the same in truth.
    """
    scored = sorted(scored, key=lambda s: s[0].bottleneck_s)
    levelled, level = [], None
    for s in scored:
        b = s[0].bottleneck_s
        if level is None or not math.isclose(b, level, rel_tol=1e-9, abs_tol=1e-12):
            level = b
        levelled.append((level, s[0].latency_s, s))
    levelled.sort(key=lambda t: (t[0], t[1]))
    return [s for *_, s in levelled]
