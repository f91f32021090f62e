"""A device's memory need recomputed by hand from plan/memory.py's definition, independently of the
planner: tests/plan/test_memory.py and test_memory_by_hand.py check every solver against it."""

from __future__ import annotations

from splitinfer.plan import Problem


def stage_by_hand(problem: Problem, first: int, last: int) -> float:
    """A stage's need, written out from the definition (not plan/memory.py)."""
    num = problem.num_blocks
    weights = list(problem.weight_bytes or [0] * num)
    peaks = list(problem.activation_bytes or [0] * num)
    enter = problem.input_bytes if first == 0 else problem.cut_bytes[first - 1]
    leave = problem.output_bytes if last == num - 1 else problem.cut_bytes[last]
    return sum(weights[first : last + 1]) + max(peaks[first : last + 1]) + problem.in_flight * (enter + leave)


def held_by_hand(problem: Problem, stages) -> float:
    """What one device's ``stages`` (first, last) hold of the cuts inside them: their bytes, at most
    the cap once per stage."""
    inner = sum(problem.cut_bytes[b] for first, last in stages for b in range(first, last))
    return min(len(stages) * problem.held_cut_cap_bytes, inner)


def creation_by_hand(problem: Problem, blocks) -> float:
    """Creating the sessions of ``blocks`` in order: at each, what those before it and it created,
    and its moment; or all their weights and shared moments at once, if more."""
    created = problem.created_bytes or [0] * problem.num_blocks
    moment = problem.moment_bytes or [0] * problem.num_blocks
    weights = problem.weight_bytes or [0] * problem.num_blocks
    shared = problem.shared_moment_bytes or [0] * problem.num_blocks
    in_order = max((sum(created[k] for k in blocks[: n + 1]) + moment[b] for n, b in enumerate(blocks)),
                   default=0.0)
    return max(in_order, sum(weights[b] + shared[b] for b in blocks))


def need_by_hand(problem: Problem, assignment) -> dict[str, float]:
    """Each device's need: the sum over the stages (runs of one device) it hosts, or creating their
    sessions if more."""
    need = dict.fromkeys(problem.devices, 0.0)
    stages = {n: [] for n in problem.devices}
    start = 0
    for b in range(1, problem.num_blocks + 1):
        if b == problem.num_blocks or assignment[b] != assignment[start]:
            need[problem.devices[assignment[start]]] += stage_by_hand(problem, start, b - 1)
            stages[problem.devices[assignment[start]]].append((start, b - 1))
            start = b
    for d, n in enumerate(problem.devices):
        blocks = [b for b in range(problem.num_blocks) if assignment[b] == d]
        need[n] = max(need[n] + held_by_hand(problem, stages[n]), creation_by_hand(problem, blocks))
    return need


def fits(problem: Problem, assignment) -> bool:
    hand = need_by_hand(problem, assignment)
    caps = {n: problem.capacity_bytes.get(n) for n in problem.devices}
    return all(c is None or hand[n] <= c for n, c in caps.items())
