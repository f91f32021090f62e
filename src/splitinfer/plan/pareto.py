"""Pareto fronts: latency against energy, and latency against bytes leaving the source.

Exact epsilon-constraint method on the MILP: find the fastest plan, then among
the plans as fast as it the one with the least of the second figure; then ask for
a plan whose second figure is strictly below that, and repeat. Every point is
evaluated exactly by :mod:`.cost` and dominated points are dropped at the end.
"Strictly below" is a step of half a byte for bytes, and 1e-6 (relative, at least
1e-6 J) for joules: points closer than that in energy count as one. (Smaller steps
put the bound within HiGHS's tolerances of the previous point, where its cuts have
been seen to cut off feasible plans.)
A point's :class:`.proof.Proof` is its latency solve's: the fastest plan under its budget on the
second figure is certified; the least second figure among equally fast plans is a tie-break.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from splitinfer.plan.cost import Metrics, measure, violations
from splitinfer.plan.milp import solve_milp, spec_for
from splitinfer.plan.problem import Constraints, Instance
from splitinfer.plan.proof import Proof

MAX_FRONT = 100
ENERGY_STEP = 1e-6


def _figure(m: Metrics, second: str) -> float:
    if second == "energy":
        return math.inf if m.energy_j is None else m.energy_j
    return float(m.upload_bytes)


def _step(value: float, second: str) -> float:
    return 0.5 if second == "upload" else ENERGY_STEP * max(abs(value), 1.0)


def pareto_front(
    inst: Instance,
    cons: Constraints,
    allowed: np.ndarray,
    revisits: bool,
    second: str,
    *,
    time_limit_s: float = 60.0,
) -> list[tuple[list[int], Proof]]:
    """Assignments on the (latency, ``second``) front by increasing latency, with their latency proofs."""
    own = cons.max_energy_j if second == "energy" else cons.max_upload_bytes
    bound = math.inf if own is None else float(own)
    front: list[tuple[list[int], Proof]] = []

    def acceptor(limit: float, max_latency: float = math.inf) -> Callable[[list[int]], bool]:
        def accept(a: list[int]) -> bool:
            m = measure(inst, a)
            return (
                m is not None
                and not violations(inst, cons, a, m, revisits=revisits)
                and _figure(m, second) <= limit
                and m.latency_s <= max_latency
            )

        return accept

    while len(front) < MAX_FRONT:
        extra = [(second, bound)] if math.isfinite(bound) else []
        fastest = solve_milp(
            spec_for(inst, cons, allowed, revisits, "latency", extra),
            1,
            acceptor(bound),
            time_limit_s=time_limit_s,
        )
        if not fastest.found:
            break
        first, proof = fastest.found[0]
        m = measure(inst, first)
        assert m is not None
        # Ties in latency: of the fastest plans, the one with the least second figure.
        slack = m.latency_s * (1 + 1e-12)
        spec = spec_for(
            inst,
            cons,
            allowed,
            revisits,
            second,
            [*extra, ("latency", m.latency_s + 1e-6 * max(1.0, m.latency_s))],
        )
        leanest = solve_milp(spec, 1, acceptor(bound, slack), time_limit_s=time_limit_s)
        best = leanest.found[0][0] if leanest.found else first
        front.append((best, proof))  # as fast as the first (within 1e-12), so its proof holds
        value = _figure(measure(inst, best), second)  # type: ignore[arg-type]
        bound = value - _step(value, second)
    return _nondominated(inst, front, second)


def _nondominated(
    inst: Instance, front: list[tuple[list[int], Proof]], second: str
) -> list[tuple[list[int], Proof]]:
    scored = []
    for a, proof in front:
        m = measure(inst, a)
        assert m is not None
        scored.append((m.latency_s, _figure(m, second), a, proof))
    scored.sort(key=lambda p: (p[0], p[1]))
    out: list[tuple[list[int], Proof]] = []
    last = math.inf
    for _, other, a, proof in scored:
        if other < last:
            out.append((a, proof))
            last = other
    return out
