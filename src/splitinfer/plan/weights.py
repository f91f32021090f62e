"""Additive figures of a plan as weights on blocks, cuts and the two ends.

Latency, energy and the bytes leaving the source are all sums over the parts of a
plan: one weight per (block, device), per (cut, device pair), for the upload to
each device and for the return from each device. Solvers minimise or bound such
sums; :mod:`.cost` evaluates the same figures directly for a given plan.

Energy decomposes because a battery device that is not busy computing or using
its radio is idle: over one request it spends ``idle_w x latency`` plus
``(busy_w - idle_w) x own compute`` plus ``(radio_w - idle_w) x own transfer time``
plus ``radio_j_per_byte x own bytes``, and latency is itself a sum. With measured watts per block
(``Power.busy_w_blocks``) ``busy_w`` is block b's own on its node weight, and the join at cut b is charged
at the mean of blocks b's and b+1's weighted by their seconds (``Instance.join_w``, ``watts.join_watts``),
as :mod:`.cost` charges them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splitinfer.plan.exits import exit_node_weights
from splitinfer.plan.problem import Instance


@dataclass(frozen=True)
class Weights:
    """Additive costs of one figure: per block and device, per cut and device pair, ends."""

    node_w: np.ndarray  # (L, D), inf where the block may not run
    arc_w: np.ndarray  # (L-1, D, D), 0 on the diagonal, inf without a link
    upload_w: np.ndarray  # (D,) input from the source to the first stage's device
    return_w: np.ndarray  # (D,) output from the last stage's device to the sink
    # (L-1, D) what a stage ending after block b on device d adds (the join it does not make,
    # ``plan/joins.py``): already in arc_w, so sums need nothing more; solvers that count a
    # device's stages and the links apart (throughput) move it from the hop to the stage.
    end_w: np.ndarray | None = None

    def links(self) -> np.ndarray:
        """arc_w without end_w: what the hops alone carry."""
        if self.end_w is None:
            return self.arc_w
        num_dev = self.arc_w.shape[1]
        off = ~np.eye(num_dev, dtype=bool)
        with np.errstate(invalid="ignore"):
            return np.where(off[None] & np.isfinite(self.arc_w), self.arc_w - self.end_w[:, :, None],
                            self.arc_w)


def with_joins(w: Weights, joins: np.ndarray, factor: np.ndarray | float = 1.0) -> Weights:
    """``w`` with a stage's inner joins (``plan/joins.py``; (L-1, D) seconds, times ``factor`` per
    device, or per cut and device, for figures other than seconds): block b's weight gains the join after
    it, and a hop leaving a stage after block b gives it back, so a stage sums its blocks and its inner
    joins."""
    if not joins.size or not joins.any():
        return w
    scaled = joins * np.broadcast_to(factor, joins.shape)  # per device (D,) or per cut and device (L-1, D)
    node = w.node_w.copy()
    node[:-1] += scaled  # inf stays inf
    num_dev = w.arc_w.shape[1]
    off = ~np.eye(num_dev, dtype=bool)
    end = -scaled
    arc = np.where(off[None] & np.isfinite(w.arc_w), w.arc_w + end[:, :, None], w.arc_w)
    return Weights(node, arc, w.upload_w, w.return_w, end)


def _with_exit_returns(w: Weights, inst: Instance, per_device: list[np.ndarray]) -> Weights:
    """``w`` with each early exit's return (``per_device[k]``: its figure from each device) at its block,
    times how often it is taken (plan/exits.py)."""
    if not inst.exits:
        return w
    with np.errstate(invalid="ignore"):
        node = w.node_w + exit_node_weights(inst.num_blocks, inst.exits, per_device)
    return Weights(np.where(np.isnan(node), np.inf, node), w.arc_w, w.upload_w, w.return_w, w.end_w)


def _plain_latency(inst: Instance, allowed: np.ndarray) -> Weights:
    plain = Weights(np.where(allowed, inst.compute_s, np.inf), inst.cut_s, inst.upload_s, inst.return_s)
    return with_joins(plain, inst.join_s)


def latency_weights(inst: Instance, allowed: np.ndarray) -> Weights:
    """Seconds (expected ones with early exits)."""
    return _with_exit_returns(_plain_latency(inst, allowed), inst, [e.return_s for e in inst.exits])


def link_weights(inst: Instance, allowed: np.ndarray) -> Weights:
    """Seconds, as the busy time of resources (a pipeline's bottleneck): a hop within a device
    (its messaging) occupies no link, so the upload and return that stay there weigh nothing; nor do
    the returns of early exits (small, and off the chain: ``cost.measure`` leaves them out too)."""
    w = _plain_latency(inst, allowed)
    upload, back = w.upload_w.copy(), w.return_w.copy()
    upload[inst.source] = 0.0
    if inst.sink is not None:
        back[inst.sink] = 0.0
    return Weights(w.node_w, w.arc_w, upload, back, w.end_w)


def _scaled(
    times: np.ndarray, factor: np.ndarray, num_bytes: np.ndarray | float, per_byte: np.ndarray
) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        out = times * factor + num_bytes * per_byte
    return np.where(np.isfinite(times), out, np.inf)


def energy_weights(inst: Instance, allowed: np.ndarray) -> Weights:
    """Joules of the battery-powered devices."""
    num_dev = inst.num_devices
    battery = [p if p is not None and p.battery else None for p in inst.power]
    idle_all = sum(p.idle_w for p in battery if p is not None)
    busy, join_busy = busy_over_idle(inst)
    radio = np.array([p.radio_w - p.idle_w if p else 0.0 for p in battery])
    per_byte = np.array([p.radio_j_per_byte if p else 0.0 for p in battery])
    with np.errstate(invalid="ignore"):
        node = np.where(allowed, inst.compute_s * (idle_all + busy), np.inf)
    pair_factor = idle_all + radio[:, None] + radio[None, :]
    pair_bytes = per_byte[:, None] + per_byte[None, :]
    # With early exits a hop's seconds are already weighted by the requests that take it; its bytes are
    # weighted here (1 without exits).
    reach = np.ones(inst.num_blocks + 1) if inst.reach is None else inst.reach
    cut_bytes = inst.cut_bytes * reach[1:-1]
    arc = _scaled(inst.cut_s, pair_factor[None], cut_bytes[:, None, None], pair_bytes[None])
    idx = np.arange(num_dev)
    arc[:, idx, idx] = 0.0
    src = inst.source
    upload = _scaled(inst.upload_s, pair_factor[src], float(inst.input_bytes), pair_bytes[src])
    upload[src] = idle_all * inst.upload_s[src]  # a hop within a device: its messaging, radios idle
    sink = inst.sink

    def to_sink(seconds: np.ndarray, num_bytes: float) -> np.ndarray:
        """A hop from each device into the sink; on the sink itself its messaging, the radios idle."""
        if sink is None:
            return np.zeros(num_dev)
        joules = _scaled(seconds, pair_factor[:, sink], num_bytes, pair_bytes[:, sink])
        joules[sink] = idle_all * seconds[sink]
        return joules

    back = to_sink(inst.return_s, float(inst.output_bytes) * reach[-1])
    exit_j = [to_sink(e.return_s, float(e.num_bytes)) for e in inst.exits]  # times each one's share below
    return _with_exit_returns(with_joins(Weights(node, arc, upload, back), inst.join_s, idle_all + join_busy),
                              inst, exit_j)


def busy_over_idle(inst: Instance) -> tuple[np.ndarray, np.ndarray]:
    """What computing draws beyond idling on each battery device (0 on the others): (L, D) per block and
    (L-1, D) per join (``Instance.busy_w``, ``Instance.join_w``)."""
    idle = np.array([p.idle_w if p is not None and p.battery else 0.0 for p in inst.power])
    counted = np.array([p is not None and p.battery for p in inst.power])
    return (np.where(counted, inst.busy_w - idle, 0.0),
            np.where(counted, inst.join_w - idle, 0.0))


def upload_weights(inst: Instance, allowed: np.ndarray) -> Weights:
    """Bytes that leave the source device."""
    _num_blocks, _num_dev = allowed.shape
    src = inst.source
    node = np.where(allowed, 0.0, np.inf)
    arc = np.where(np.isfinite(inst.cut_s), 0.0, np.inf)
    arc[:, src, :] = np.where(np.isfinite(inst.cut_s[:, src, :]), inst.cut_bytes[:, None], np.inf)
    arc[:, src, src] = 0.0
    upload = np.where(np.isfinite(inst.upload_s), float(inst.input_bytes), np.inf)
    upload[src] = 0.0
    back = np.where(np.isfinite(inst.return_s), 0.0, np.inf)
    if inst.sink is not None and inst.sink != src:
        back[src] = float(inst.output_bytes) if np.isfinite(inst.return_s[src]) else np.inf
    return Weights(node, arc, upload, back)
