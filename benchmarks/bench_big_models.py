"""Peak memory of every step on a model larger than 2 GB, weights in an external data file (issue 21).

Builds the zoo's ``mlp`` at about ``--gb`` GB (default 3.2: 12 layers of 8192) with ``splitinfer zoo
build`` (its weights written as they are drawn), then runs each step as a user would, each a process of
its own: ``inspect``; ONNX Runtime alone running the whole model (the reference footprint);
``split --blocks 4 --no-verify`` and ``split --blocks 4`` (verified); ONNX Runtime opening the largest
partition; ``profile`` on three local workers; ``plan`` (a stage per worker, pinned); ``run``; and, in a
child process, a plan deployed twice with the bytes each deploy put on the wire. Each process's peak RSS
is the kernel's high-water mark (``VmHWM`` in /proc, read every 0.1 s while it runs: the coordinator and
each worker apart). Printed beside the goals (split verified at most 1.5 x the largest partition + ONNX
Runtime's footprint for it, --no-verify 1.2 x the largest partition, inspect 0.3 x the model, each worker
1.5 x its partition, a second deploy under 1 MB) and the figures before weights stayed on disk (VGG-16,
528 MB inline: split 4.0 GB, --no-verify 2.3 GB; ONNX Runtime alone 1.05 GB).

Usage: ``python benchmarks/bench_big_models.py [--gb 3.2] [--keep DIR]``; exit 1 when a goal is missed.
Needs about 4 x the model in free disk and 2 x in free memory. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

LAYER_BYTES = 8192 * 8192 * 4
BEFORE = {"split": 4.0e9, "split --no-verify": 2.3e9, "ort alone": 1.05e9}
ORT_OPEN = ("import sys, onnxruntime as ort; ort.InferenceSession(sys.argv[1], "
            "providers=['CPUExecutionProvider'])")
ORT_ALONE = ("import sys, numpy as np, onnxruntime as ort; s = ort.InferenceSession(sys.argv[1], "
             "providers=['CPUExecutionProvider']); i = s.get_inputs()[0]; "
             "s.run(None, {i.name: np.zeros(i.shape, np.float32)})")
CLUSTER = {"schema": 1, "backend": "local", "source": "a", "sink": "c",
           "devices": [{"name": n, "num_threads": 1} for n in "abc"],
           "links": [{"from": x, "to": y, "bandwidth": "1Gbit/s", "latency": "1ms"}
                     for x, y in (("a", "b"), ("b", "c"), ("a", "c"))]}
DEPLOY_TWICE = """
import json, sys
from splitinfer.runtime.coordinator.deploy import deploy, plan_stages
plan, cluster, model, profile = sys.argv[1:5]
with deploy(plan, cluster, model, profile=profile, deploy_timeout_s=600) as session:
    clients = session._clients  # the coordinator's clients: what they sent is what crossed the wire
    first = sum(c.sent_bytes for c in clients.values())
    pipeline = session.deploy(plan_stages(plan, cluster, model, profile=profile))
    second = sum(c.sent_bytes for c in clients.values()) - first
print(json.dumps({"first": first, "second": second}))
"""


class Peaks:
    """Each process of a tree's VmHWM, sampled while it runs (kept after it exits)."""

    def __init__(self, root: int) -> None:
        self.root, self.peaks, self.names = root, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                tree = [psutil.Process(self.root), *psutil.Process(self.root).children(recursive=True)]
            except psutil.Error:
                tree = []
            for proc in tree:
                try:
                    with open(f"/proc/{proc.pid}/status") as f:
                        hwm = next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmHWM:"))
                    if proc.pid not in self.names:
                        line = " ".join(proc.cmdline())
                        self.names[proc.pid] = line.split("--name ", 1)[1].split()[0] \
                            if "splitinfer.runtime.device" in line else "coordinator"
                except (OSError, StopIteration, psutil.Error):
                    continue
                self.peaks[proc.pid] = max(hwm, self.peaks.get(proc.pid, 0))
            time.sleep(0.1)

    def stop(self) -> dict[str, int]:
        """The peak per role: 'coordinator' (the command) and each worker by device name."""
        self._stop.set()
        self._thread.join()
        out: dict[str, int] = {}
        for pid, peak in self.peaks.items():
            role = "coordinator" if pid == self.root else self.names.get(pid, "")
            if role and (role != "coordinator" or pid == self.root):  # not helper processes
                out[role] = max(peak, out.get(role, 0))
        return out


def _measure(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[dict[str, int], float, str]:
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = Peaks(proc.pid)
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    found = peaks.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err[-3000:]}")
    return found, seconds, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=3.2, help="About how large the mlp is (GB).")
    parser.add_argument("--keep", type=Path, help="Build here and keep it (default: a temp folder).")
    args = parser.parse_args()
    directory = args.keep or Path(tempfile.mkdtemp(prefix="bench-big-"))
    directory.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SPLITINFER_CACHE_DIR": str(directory / "cache")}
    cli = [str(Path(sys.executable).with_name("splitinfer"))]
    py = [sys.executable, "-c"]
    rows: dict[str, tuple[int, float]] = {}
    workers: dict[str, dict[str, int]] = {}

    def step(name: str, argv: list[str]) -> str:
        peaks, seconds, out = _measure(argv, directory, env)
        rows[name] = (peaks.get("coordinator", 0), seconds)
        others = {k: v for k, v in peaks.items() if k != "coordinator"}
        if others:
            workers[name] = others
        print(f"  {name}: {rows[name][0] / 1e9:.2f} GB, {seconds:.1f} s", flush=True)
        return out

    try:
        depth = args.gb * 1e9 / (9 * LAYER_BYTES)
        step("zoo build", [*cli, "zoo", "build", "mlp", "--depth", f"{depth:.4f}", "-o", "mlp.onnx"])
        model_bytes = sum((directory / f).stat().st_size for f in ("mlp.onnx", "mlp.data"))
        print(f"mlp.onnx + mlp.data: {model_bytes / 1e9:.2f} GB")
        step("inspect", [*cli, "inspect", "mlp.onnx"])
        step("ort alone", [*py, ORT_ALONE, "mlp.onnx"])
        step("split --no-verify", [*cli, "split", "mlp.onnx", "--blocks", "4", "--no-verify", "-o", "parts"])
        shutil.rmtree(directory / "parts")
        step("split", [*cli, "split", "mlp.onnx", "--blocks", "4", "-o", "parts"])
        manifest = json.loads((directory / "parts" / "manifest.json").read_text())
        sizes = {p["file"]: (directory / "parts" / (p.get("data_file") or p["file"])).stat().st_size
                 for p in manifest["partitions"]}
        biggest = max(sizes, key=sizes.__getitem__)
        largest = sizes[biggest]
        ort_part = _measure([*py, ORT_OPEN, f"parts/{biggest}"], directory, env)[0]["coordinator"]
        print(f"largest partition {largest / 1e9:.2f} GB; ONNX Runtime opening it {ort_part / 1e9:.2f} GB")
        (directory / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
        step("profile", [*cli, "profile", "mlp.onnx", "--cluster", "cluster.yaml", "--max-blocks", "4",
                         "--budget-s", "2", "-o", "profile.json"])
        last = len(json.loads((directory / "profile.json").read_text())["blocks"]) - 1
        step("plan", [*cli, "plan", "profile.json", "--cluster", "cluster.yaml", "--pin", "0=a", "--pin",
                      f"1-{last - 1}=b", "--pin", f"{last}=c", "-o", "plan.json"])
        step("run", [*cli, "run", "plan.json", "--model", "mlp.onnx", "--cluster", "cluster.yaml",
                     "-o", "y.npy"])
        twice = json.loads(step("deploy twice", [*py, DEPLOY_TWICE, "plan.json", "cluster.yaml", "mlp.onnx",
                                                  "profile.json"]).strip().splitlines()[-1])
        plan = json.loads((directory / "plan.json").read_text())
        stages = (plan["plans"][0] if "plans" in plan else plan)["stages"]
        stage_bytes = {s["device"]: 0 for s in stages}
        profile = json.loads((directory / "profile.json").read_text())
        block_bytes = [b["param_bytes"] for b in profile["blocks"]]
        for s in stages:
            stage_bytes[s["device"]] += sum(block_bytes[s["first_block"]:s["last_block"] + 1])
        _report(model_bytes, largest, ort_part, rows, workers, stage_bytes, twice)
    finally:
        if args.keep is None:
            shutil.rmtree(directory, ignore_errors=True)


def _report(model_bytes: int, largest: int, ort_part: int, rows: dict[str, tuple[int, float]],
            workers: dict[str, dict[str, int]], stage_bytes: dict[str, int], twice: dict[str, int]) -> None:
    goals = {"inspect": 0.3 * model_bytes, "split --no-verify": 1.2 * largest,
             "split": 1.5 * largest + ort_part}
    missed = []
    print(f"\n{'command':<20}{'peak RSS':>10}{'x model':>9}{'seconds':>9}{'goal':>10}{'before (VGG-16)':>22}")
    for name, (rss, seconds) in rows.items():
        goal = f"{goals[name] / 1e9:.2f} GB" if name in goals else ""
        verdict = "" if name not in goals else (" ok" if rss <= goals[name] else " OVER")
        if verdict == " OVER":
            missed.append(name)
        before = f"{BEFORE[name] / 1e9:.2f} GB" if name in BEFORE else ""
        print(f"{name:<20}{rss / 1e9:>7.2f} GB{rss / model_bytes:>8.2f}x{seconds:>9.1f}{goal:>10}{verdict:<5}"
              f"{before:>17}")
    print("\nworkers (peak RSS; goal for run: 1.5 x the weights of the stage it runs)")
    for name, peaks in workers.items():
        cells = []
        for device, peak in sorted(peaks.items()):
            weights = stage_bytes.get(device, 0)
            ratio = f" = {peak / weights:.2f} x its stage" if name == "run" and weights else ""
            if name == "run" and weights and peak > 1.5 * weights:
                missed.append(f"run worker {device}")
            cells.append(f"{device} {peak / 1e9:.2f} GB{ratio}")
        print(f"  {name:<14}" + "; ".join(cells))
    ok = twice["second"] < 1e6
    print(f"\ndeploy of the plan: first {twice['first'] / 1e6:.1f} MB on the wire, second "
          f"{twice['second']:,} bytes (goal under 1 MB: {'ok' if ok else 'OVER'})")
    if not ok:
        missed.append("second deploy")
    if missed:
        print(f"missed: {', '.join(missed)}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
