"""What a solve proved about its answers, and a plan's ``bound`` and ``gap`` from it.

A plan's ``bound`` is the best proven lower bound on the figure its objective minimises
(:func:`.cost.objective_value`: latency, the bottleneck for throughput, joules for energy, latency
along a Pareto front under the point's budget on the other figure). Exact methods (dynamic
programming, brute force) prove their answers outright: the bound is the value. A MILP answer
carries a :class:`Proof`: HiGHS ended optimal (bound = value, gap 0), or the time limit stopped it
with its incumbent and its dual bound (gap = (value - bound) / |value|, HiGHS's definition of the
relative gap, taken against the plan's value re-evaluated exactly), or with no bound at all.

Top-k: the MILP finds the k-th plan with the k - 1 before it cut off, so its bound holds for the
best plan outside those, hence for the k-th best value; the k-th solve proven optimal means the
k-th plan is a k-th best one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Proof:
    """What one MILP solve proved about the answer it gave."""

    proven: bool  # HiGHS ended optimal: no plan the solve could still pick is better
    bound: float | None  # HiGHS's dual bound on the model's objective (None: it had none)


# An assignment (the device of every block), what proves it (None: an exact method), the solver's name.
Candidate = tuple[list[int], Proof | None, str]


def certify(value: float, proof: Proof | None) -> tuple[float | None, float | None]:
    """(bound, gap) of a plan whose objective value, re-evaluated exactly, is ``value``.

    An exact method's answer (``proof`` None): the value, and no gap (None: the method has none).
    A MILP answer proven optimal: the value and gap 0. One the time limit stopped: HiGHS's dual
    bound, at most the value (the model's objective and the exact figure differ in the last bits),
    and the relative gap; (None, None) without a bound; no gap when the value is 0 and the bound is not.
    """
    if proof is None:
        return value, None
    if proof.proven:
        return value, 0.0
    if proof.bound is None or not math.isfinite(proof.bound):
        return None, None
    bound = min(proof.bound, value)
    if value == 0:
        return bound, 0.0 if bound == 0 else None
    return bound, (value - bound) / abs(value)


def by_rank(proofs: Sequence[Proof | None], count: int) -> list[Proof | None]:
    """The proofs of a k-best solve's answers (in its order, at least one) for ``count`` plans ranked anew.

    The i-th solve bounds the i-th best value whichever plan ends up at rank i (throughput ties
    re-ranked by latency, say), so proofs follow ranks, not plans. A rank beyond the solve's answers
    keeps the last one's bound (the (i+1)-th best value is at least the i-th), not its optimality.
    """
    last = proofs[-1]
    beyond = Proof(False, last.bound) if last is not None else None
    return [proofs[i] if i < len(proofs) else beyond for i in range(count)]
