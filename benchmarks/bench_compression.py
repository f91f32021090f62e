"""Compressed cut tensors (splitinfer.compression): bytes saved against time spent.

For a few real-ish cut tensors, drawn from seeded distributions:

- ``relu 1x64x56x56``: a ResNet stage-1 activation, ReLU of a normal (about 50% zeros), 784 KiB;
- ``relu 1x512x7x7``: a ResNet stage-4 activation, ReLU of normals whose scale differs per channel
  (log-normal), 98 KiB;
- ``hidden 1x197x768``: a ViT-B hidden state, dense (no zeros), a few outlier features, 591 KiB;

prints, per compression: the ratio (float32 bytes / wire bytes, params header included), the median
compress and decompress throughput (MB/s of float32 tensor), the maximum absolute error and the
signal-to-noise ratio, and a hop's total (compress + transfer + decompress) on 100 Mbit/s and 1 Gbit/s.
Goals: int8 >= 3.5x fewer bytes than float32, fp16 2x.

``python benchmarks/bench_compression.py [--quick]``
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np

from splitinfer.compression import decompress, parse_compression, wire_bytes

LINKS_BPS = {"100 Mbit/s": 100e6 / 8, "1 Gbit/s": 1e9 / 8}
GOALS = {"int8": 3.5, "fp16": 2.0}


def tensors() -> dict[str, tuple[np.ndarray, int]]:
    """name -> (tensor, its channel axis)."""
    rng = np.random.default_rng(14)
    stage1 = np.maximum(rng.standard_normal((1, 64, 56, 56), dtype=np.float32), 0)
    scales = rng.lognormal(0.0, 1.0, size=(1, 512, 1, 1)).astype(np.float32)
    stage4 = np.maximum(rng.standard_normal((1, 512, 7, 7), dtype=np.float32) * scales, 0)
    hidden = rng.standard_normal((1, 197, 768), dtype=np.float32)
    hidden[..., rng.choice(768, size=6, replace=False)] *= 20  # ViT's few large-magnitude features
    return {"relu 1x64x56x56": (stage1, 1), "relu 1x512x7x7": (stage4, 1), "hidden 1x197x768": (hidden, -1)}


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _snr_db(x: np.ndarray, y: np.ndarray) -> float:
    noise = float(np.sum((y.astype(np.float64) - x) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(x.astype(np.float64) ** 2)) / noise)


def bench(arr: np.ndarray, axis: int, repeats: int) -> list[dict]:
    rows = []
    specs = ["none", "fp16", "int8", f"int8:per_channel:axis={axis}", "lz4", "zstd", "zstd:level=3"]
    for spec in specs:
        compression = parse_compression(spec)
        c = compression.compress(arr)
        restored = decompress(c)
        compress_s = _median_s(lambda compression=compression: compression.compress(arr), repeats)
        decompress_s = _median_s(lambda c=c: decompress(c), repeats)
        total_ms = {link: 1e3 * (compress_s + wire_bytes(c) / bps + decompress_s)
                    for link, bps in LINKS_BPS.items()}
        rows.append({"spec": spec, "ratio": arr.nbytes / wire_bytes(c),
                     "compress_mbps": arr.nbytes / compress_s / 1e6,
                     "decompress_mbps": arr.nbytes / decompress_s / 1e6,
                     "max_error": float(np.abs(restored.astype(np.float64) - arr).max()),
                     "snr_db": _snr_db(arr, restored), "total_ms": total_ms})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repeats instead of 41")
    args = parser.parse_args()
    repeats = 5 if args.quick else 41
    missed = []
    for name, (arr, axis) in tensors().items():
        zeros = float(np.mean(arr == 0))
        print(f"\n{name}: {arr.nbytes / 1024:.0f} KiB float32, {zeros:.0%} zeros")
        links = "  ".join(f"{link:>10}" for link in LINKS_BPS)
        print(f"  {'compression':<26}{'ratio':>7}{'compress':>11}{'decompress':>12}{'max |err|':>11}"
              f"{'SNR dB':>8}   hop ms at {links}")
        for row in bench(arr, axis, repeats):
            snr = "exact" if math.isinf(row["snr_db"]) else f"{row['snr_db']:.1f}"
            totals = "  ".join(f"{row['total_ms'][link]:>10.2f}" for link in LINKS_BPS)
            print(f"  {row['spec']:<26}{row['ratio']:>6.2f}x{row['compress_mbps']:>7.0f} MB/s"
                  f"{row['decompress_mbps']:>7.0f} MB/s{row['max_error']:>11.2e}{snr:>8}"
                  f"             {totals}")
            goal = GOALS.get(row["spec"])
            if goal and row["ratio"] < goal * 0.999:
                missed.append(f"{name} {row['spec']}: {row['ratio']:.2f}x < {goal}x")
    print("\ngoals: int8 (per tensor) >= 3.5x fewer bytes than float32, fp16 2x (params header counted)")
    print("goals missed: " + ("; ".join(missed) if missed else "none"))
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
