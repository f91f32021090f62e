"""A device on OpenVINO next to a device on ONNX Runtime's CPU provider: profiled, planned and run for real.

onnxruntime-openvino replaces the ``onnxruntime`` module, so it lives in a virtual environment of its
own; this script makes it (``--venv``, default /tmp/splitinfer-openvino), installs onnxruntime-openvino
and this checkout there, and runs the loop inside it: a zoo model profiled on two local devices, ``cpu``
(CPUExecutionProvider) and ``ov`` (OpenVINOExecutionProvider with ``device_type=CPU``), then the
latency plan and a bench of it, and what a bad option gives.

    python benchmarks/bench_openvino.py [--model mobilenetv2] [--venv DIR]

Prints each device's sum of blocks and whole model, the plan, predicted against measured latency.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPS = ["onnxruntime-openvino", "numpy", "onnx", "pyzmq", "msgspec", "highspy", "pyyaml", "typer", "rich",
        "psutil", "Pillow", "lz4", "zstandard"]

INSIDE = r'''
import json, sys, time
from pathlib import Path
import numpy as np
import onnxruntime as ort
from splitinfer.cluster import parse_cluster
from splitinfer.errors import WorkerError
from splitinfer.graph.inference import create_inference_session
from splitinfer.plan import solve
from splitinfer.profile.problem import build_problem
from splitinfer.profile.profiler import ProfileSettings
from splitinfer.runtime.bench import bench
from splitinfer.runtime.coordinator.deploy import deploy
from splitinfer.runtime.profiling import profile_cluster
from splitinfer.zoo import build

model_name, out = sys.argv[1], Path(sys.argv[2])
model = build(model_name)
path = out / f"{model_name}.onnx"
path.write_bytes(model.SerializeToString())
ov = "OpenVINOExecutionProvider:device_type=CPU"
cluster = parse_cluster({"source": "cpu", "devices": [
    {"name": "cpu", "num_threads": 1},
    {"name": "ov", "num_threads": 1, "providers": [{"name": "OpenVINOExecutionProvider",
                                                     "options": {"device_type": "CPU"}}]}],
    "links": [{"from": "cpu", "to": "ov", "bandwidth": "1GB/s", "latency": "0.2ms"}]})
profile = profile_cluster(path, cluster, settings=ProfileSettings(budget_s=10), progress=False, max_blocks=8)
rows = {}
for name, dev in profile.devices.items():
    blocks = [b.median_s for b in dev.blocks if b is not None]
    rows[name] = {"providers": list(dev.providers), "sum_of_blocks_ms": 1e3 * sum(blocks),
                  "whole_ms": 1e3 * dev.whole_model.median_s if dev.whole_model else None,
                  "blocks_ms": [round(1e3 * b, 3) for b in blocks]}
plan = solve(build_problem(profile, cluster), "latency")[0]
with deploy(plan, cluster, path, profile=profile) as session:
    result = bench(session, plan, num_requests=40, num_warmup=5, resource_interval_s=None)
try:
    create_inference_session(path.read_bytes(), ["OpenVINOExecutionProvider:device_typo=CPU"])
    bad = "accepted"
except WorkerError as e:
    bad = str(e)
stages = [f"{s.device}[{s.first_block}-{s.last_block}]" for s in plan.stages]
print(json.dumps({"onnxruntime": ort.__version__, "available": ort.get_available_providers(),
                  "devices": rows, "plan": stages,
                  "predicted_ms": 1e3 * plan.latency_s, "measured_median_ms": 1e3 * result.latency_median_s,
                  "bad_option": bad}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenetv2")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/splitinfer-openvino"))
    args = parser.parse_args()
    python = args.venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(args.venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *DEPS], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)], check=True)
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([str(python), "-c", INSIDE, args.model, out], check=True, capture_output=True,
                              text=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"onnxruntime {figures['onnxruntime']} with {', '.join(figures['available'])}")
    for name, row in figures["devices"].items():
        print(f"  {name:4s} {row['providers'][0]:55s} sum of blocks {row['sum_of_blocks_ms']:8.2f} ms, "
              f"whole model {row['whole_ms']:8.2f} ms")
    print(f"latency plan: {' -> '.join(figures['plan'])}: predicted {figures['predicted_ms']:.2f} ms, "
          f"measured median {figures['measured_median_ms']:.2f} ms "
          f"({(figures['predicted_ms'] / figures['measured_median_ms'] - 1) * 100:+.1f}%)")
    print(f"a misspelt option: {figures['bad_option']}")


if __name__ == "__main__":
    main()
