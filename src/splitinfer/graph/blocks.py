"""Choosing which candidate cuts become block boundaries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from splitinfer.errors import CutError
from splitinfer.units import check_number

# Weight of the cut-bytes term against the imbalance term (see choose_cuts).
BYTES_PENALTY = 0.25
# With more candidates than this many per block, thin them first (keeps the DP small).
_CANDIDATES_PER_BLOCK = 8


def choose_cuts(
    positions: Sequence[int],
    cut_bytes: Sequence[int],
    weights: np.ndarray,
    max_blocks: int,
) -> list[int]:
    """Pick the cuts (a subset of ``positions``) that split the order into blocks.

    ``weights[i]`` is the cost proxy of node i (analyze uses FLOPs + 4 x output
    bytes, so data-movement ops are not free). With ``max_blocks == 0`` or few
    enough candidates, every candidate is kept. Otherwise exactly
    ``B = max_blocks`` blocks are made, choosing the ``B - 1`` cuts that minimise

        sum over blocks of (W_b / W_mean - 1)^2  +  0.25 * sum over cuts of bytes_c / median_bytes

    where ``W_b`` is a block's weight, ``W_mean`` the total over B, and
    ``median_bytes`` the median cut bytes of the candidates: blocks of even
    cost, preferring small cuts when that costs little balance. Solved exactly
    by dynamic programming over the candidates (after thinning them to the
    fewest-bytes one in each of ``8 B`` equal-weight bins plus ``8 B`` evenly
    spaced ones).
    """
    positions = list(positions)
    check_number(max_blocks, "max_blocks", low=0, whole=True, error=CutError,
                 fix="0 = one block per candidate cut")
    if max_blocks == 0 or len(positions) + 1 <= max_blocks:
        return positions
    if max_blocks == 1 or not positions:
        return []
    prefix = np.concatenate([[0.0], np.cumsum(np.asarray(weights, dtype=np.float64))])
    nbytes = np.asarray(cut_bytes, dtype=np.float64)
    keep = _thin(positions, nbytes, prefix, _CANDIDATES_PER_BLOCK * max_blocks)
    pos = [positions[i] for i in keep]
    pen = BYTES_PENALTY * nbytes[keep] / max(1.0, float(np.median(nbytes)))
    return _solve(pos, pen, prefix, max_blocks)


def _thin(positions: list[int], nbytes: np.ndarray, prefix: np.ndarray, limit: int) -> list[int]:
    if len(positions) <= limit:
        return list(range(len(positions)))
    total = max(prefix[-1], 1e-12)
    bins = np.minimum((prefix[positions] / total * limit).astype(int), limit - 1)
    best: dict[int, int] = {}
    for i, b in enumerate(bins):
        if b not in best or nbytes[i] < nbytes[best[b]]:
            best[int(b)] = i
    # Evenly spaced candidates too, so that enough remain when weight is lumpy.
    spread = np.linspace(0, len(positions) - 1, limit).round().astype(int)
    return sorted(set(best.values()) | {int(i) for i in spread})


def _solve(pos: list[int], pen: np.ndarray, prefix: np.ndarray, num_blocks: int) -> list[int]:
    """Exact DP: dp[k][j] = best cost of k blocks ending at point j (points: 0, cuts, end)."""
    m = len(prefix) - 1
    points = np.array([0, *pos, m])
    mass = prefix[points]
    target = max(mass[-1] / num_blocks, 1e-12)
    n = len(points)
    diff = (mass[None, :] - mass[:, None]) / target - 1.0
    cost = np.where(np.triu(np.ones((n, n), dtype=bool), k=1), diff * diff, np.inf)
    point_pen = np.concatenate([[0.0], pen, [0.0]])
    dp = np.full(n, np.inf)
    dp[0] = 0.0
    back = np.zeros((num_blocks + 1, n), dtype=np.int64)
    for k in range(1, num_blocks + 1):
        total = dp[:, None] + cost
        back[k] = np.argmin(total, axis=0)
        dp = total[back[k], np.arange(n)] + point_pen
    # Walk back from the end through exactly num_blocks blocks.
    chosen, j = [], n - 1
    for k in range(num_blocks, 0, -1):
        j = int(back[k][j])
        if k > 1:
            chosen.append(int(points[j]))
    return sorted(chosen)
