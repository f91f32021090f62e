"""A model over 2 GB through inspect, a verified split, profile, plan and run on 3 local workers (issue 21).

The zoo's full-size ``mlp`` (2.4 GB of weights in a .data file) goes through the command line as a user
would run it, each step a process of its own; the pipeline's output must equal the whole model's. It needs
about 12 GB of memory at its peak (three workers holding 0.8 GB stages) and 8 GB of disk, and takes about
two minutes: it runs where the machine has them, and says why it does not otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

GiB = 1 << 30
NEEDS_MEMORY = 14 * GiB
NEEDS_DISK = 10 * GiB


def _available_memory() -> int:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024


def _why_not(folder: Path) -> str | None:
    if os.environ.get("SPLITINFER_SKIP_BIG_E2E") == "1":
        return "SPLITINFER_SKIP_BIG_E2E=1"
    try:
        memory = _available_memory()
    except (OSError, KeyError, ValueError):
        return "cannot read /proc/meminfo to tell whether 14 GB of memory are free"
    if memory < NEEDS_MEMORY:
        return f"needs 14 GB of free memory, {memory / GiB:.1f} GB are"
    disk = shutil.disk_usage(folder).free
    if disk < NEEDS_DISK:
        return f"needs 10 GB of free disk in {folder}, {disk / GiB:.1f} GB are"
    return None


def _cli(*args: str, cwd: Path) -> str:
    command = [str(Path(sys.executable).with_name("splitinfer")), *args]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


CLUSTER = {
    "schema": 1, "backend": "local", "source": "a", "sink": "c",
    "devices": [{"name": name, "num_threads": 1} for name in "abc"],
    "links": [{"from": x, "to": y, "bandwidth": "1Gbit/s", "latency": "1ms"}
              for x, y in (("a", "b"), ("b", "c"), ("a", "c"))],
}


def test_a_model_over_2_gb_is_split_verified_profiled_planned_and_run_on_three_workers(tmp_path):
    why = _why_not(tmp_path)
    if why:
        pytest.skip(f"a 2.4 GB model end to end {why}")
    import onnxruntime as ort

    _cli("zoo", "build", "mlp", "-o", "mlp.onnx", cwd=tmp_path)
    data = tmp_path / "mlp.data"
    assert data.stat().st_size > 2 * GiB and (tmp_path / "mlp.onnx").stat().st_size < 1 << 20
    assert "GiB" in _cli("inspect", "mlp.onnx", cwd=tmp_path)  # the params line: 2.3 GiB
    assert "verified" in _cli("split", "mlp.onnx", "--blocks", "3", "-o", "parts", cwd=tmp_path)
    manifest = json.loads((tmp_path / "parts" / "manifest.json").read_text())
    assert len(manifest["partitions"]) == 3
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
    # Profiled through one worker: b and c are this machine as a is, and timing the same 2.4 GB of blocks
    # on each in turn would add a minute to CI; the profile then holds a's costs for all three.
    (tmp_path / "one.yaml").write_text(yaml.safe_dump({**CLUSTER, "source": "a", "sink": "a", "links": [],
                                                       "devices": CLUSTER["devices"][:1]}))
    _cli("profile", "mlp.onnx", "--cluster", "one.yaml", "--max-blocks", "3", "--budget-s", "0.5",
         "-o", "profile.json", cwd=tmp_path)
    profile = json.loads((tmp_path / "profile.json").read_text())
    assert set(profile["devices"]) == {"a"}
    assert all(b is not None for b in profile["devices"]["a"]["blocks"])
    profile["devices"].update(b=profile["devices"]["a"], c=profile["devices"]["a"])
    (tmp_path / "profile.json").write_text(json.dumps(profile))
    # One block per device: no device here is short of memory, so the split this test is about is pinned.
    _cli("plan", "profile.json", "--cluster", "cluster.yaml", "--pin", "0=a", "--pin", "1=b", "--pin", "2=c",
         "-o", "plan.json", cwd=tmp_path)
    plan = json.loads((tmp_path / "plan.json").read_text())
    stages = plan["plans"][0]["stages"] if "plans" in plan else plan["stages"]
    assert [s["device"] for s in stages] == ["a", "b", "c"]
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((1, 8192)).astype(np.float32))
    _cli("run", "plan.json", "--model", "mlp.onnx", "--cluster", "cluster.yaml", "--input", "x.npy",
         "-o", "y.npy", cwd=tmp_path)
    got = np.load(tmp_path / "y.npy")
    session = ort.InferenceSession(str(tmp_path / "mlp.onnx"), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": np.load(tmp_path / "x.npy")})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
