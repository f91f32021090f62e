"""Early exits in the planner: a request may leave at an exit, so later blocks see fewer requests.

An exit is made by one block (``ExitMix.block``); ``probability`` is the fraction of all requests that
leave there (measured on calibration data: the profile's ``exits``). The runtime evaluates the exit's
rule right after that block (a stage that runs on past it is split there, on the same worker:
``runtime/coordinator/deploy.py``), so a request that leaves at exit k has run blocks 0..b_k and then
sends the exit's tensor from b_k's device to the sink.

The expected figures are sums again, each part weighted by the fraction of requests that reach it:
block b by ``reach[b]`` (1 minus the exits made before it), the cut after block b by ``reach[b + 1]``,
the final return by ``reach[L]``, and exit k's own return (its tensor's bytes, from b_k's device to the
sink: a hop in the plan, kind ``exit``) by its probability. The join after an exit's block is 0: the
stage is two runs there. Latency and energy become expected values, the bottleneck the expected busy
time of each device and link. A plan's ``worst_latency_s`` is the path of a request that leaves at no
exit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from splitinfer.errors import PlanError

InstanceT = TypeVar("InstanceT")  # plan.problem.Instance, which imports this module


@dataclass(frozen=True)
class ExitMix:
    """An early exit: made by ``block``, leaving with ``probability`` (of all requests), sending
    ``output_bytes`` (its tensor) to the sink when taken."""

    output: str
    block: int
    probability: float
    output_bytes: int


def check_exits(exits: Sequence[ExitMix], num_blocks: int) -> tuple[ExitMix, ...]:
    """``exits`` in block order; PlanError naming the first bad field."""
    ordered = tuple(sorted(exits, key=lambda e: e.block))
    for e in ordered:
        where = f"exit {e.output!r}"
        if isinstance(e.block, bool) or not isinstance(e.block, int | np.integer) \
                or not 0 <= e.block < num_blocks - 1:
            raise PlanError(f"{where} is made by block {e.block!r}",
                            f"give a block 0 to {num_blocks - 2} (the last block ends every request)")
        p = e.probability
        if not isinstance(p, int | float | np.floating) or isinstance(p, bool) or not 0 <= p <= 1:
            raise PlanError(f"{where} has probability {p!r}",
                            "give the fraction of requests leaving there, 0 to 1")
        if isinstance(e.output_bytes, bool) or not isinstance(e.output_bytes, int | np.integer) \
                or e.output_bytes < 0:
            raise PlanError(f"{where} has output_bytes {e.output_bytes!r}", "give its tensor's bytes (>= 0)")
    blocks = [e.block for e in ordered]
    if len(set(blocks)) != len(blocks):
        raise PlanError("two exits are made by one block", "give each exit its own block")
    if math.fsum(e.probability for e in ordered) > 1 + 1e-9:
        raise PlanError("the exits' probabilities add up to more than 1",
                        "give each exit the fraction of all requests that leave there")
    return ordered


def reach_of(exits: Sequence[ExitMix], num_blocks: int) -> np.ndarray:
    """(L + 1,): the fraction of requests that reach block b (b = L: the end, the final return)."""
    reach = np.ones(num_blocks + 1)
    for e in exits:
        reach[e.block + 1:] -= e.probability
    return np.clip(reach, 0.0, 1.0)


def expected(compute: np.ndarray, cut_s: np.ndarray, join_s: np.ndarray, back: np.ndarray,
             reach: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The instance's seconds weighted by the requests that reach them (see the module)."""
    with np.errstate(invalid="ignore"):
        compute = np.where(np.isinf(compute), compute, compute * reach[:-1, None])
        cut_s = np.where(np.isinf(cut_s), cut_s, cut_s * reach[1:-1, None, None])
        join_s = join_s * reach[1:-1, None] if join_s.size else join_s.copy()
        back = np.where(np.isinf(back), back, back * reach[-1])
    for arr in (compute, cut_s, join_s, back):
        arr.setflags(write=False)
    return compute, cut_s, join_s, back


@dataclass(frozen=True)
class ExitReturn:
    """An exit as the cost model charges it: ``return_s[d]``, seconds to send its tensor from device d
    to the sink (at the sink: its messaging; inf without a link), taken with ``probability``."""

    output: str
    block: int
    probability: float
    num_bytes: int
    return_s: np.ndarray


def exit_node_weights(num_blocks: int, exits: Sequence[ExitReturn], per_device: Sequence[np.ndarray]
                      ) -> np.ndarray:
    """(L, D): what taking each exit adds at its block, on each device (``per_device[k]``: exit k's
    figure when it is taken there; times its probability, an exit never taken adds nothing)."""
    out = np.zeros((num_blocks, len(per_device[0]) if per_device else 0))
    for e, figure in zip(exits, per_device, strict=True):
        if e.probability > 0:
            out[e.block] += e.probability * figure
    return out


def with_exits(inst: InstanceT, exits: tuple[ExitMix, ...], messaging: Sequence[Any]) -> InstanceT:
    """The planner's ``Instance`` with expected seconds under the exit mix and its worst path (``full``);
    ``messaging``: each device's, for an exit taken on the sink."""
    joins = inst.join_s.copy()
    if joins.size:
        joins[[e.block for e in exits]] = 0.0  # the stage is split at an exit: two runs
    joins.setflags(write=False)
    full = replace(inst, join_s=joins)  # type: ignore[type-var]
    reach = reach_of(exits, inst.num_blocks)
    reach.setflags(write=False)
    compute, cut_s, join_s, back = expected(inst.compute_s, inst.cut_s, joins, inst.return_s, reach)
    returns = []
    sink = inst.sink
    for e in exits:  # as the instance's return, with the exit's bytes
        n = e.output_bytes
        seconds = np.zeros(inst.num_devices) if sink is None else np.array(
            [messaging[sink].seconds(n) if d == sink else inst.transfer_s(d, sink, n)
             for d in range(inst.num_devices)])
        seconds.setflags(write=False)
        returns.append(ExitReturn(e.output, e.block, float(e.probability), int(e.output_bytes), seconds))
    return replace(full, compute_s=compute, cut_s=cut_s, join_s=join_s, return_s=back,  # type: ignore[type-var]
                   exits=tuple(returns), reach=reach, full=full)
