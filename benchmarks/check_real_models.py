"""Run `splitinfer inspect` and `splitinfer split --all` (with verification) on real .onnx files.

Usage::

    python benchmarks/check_real_models.py DIR [--shape PATTERN:NAME=D1,D2,...] [--keep OUT]

Every ``*.onnx`` under DIR goes through the same commands a user types. Dynamic
input dims get defaults (leading dim 1; a 4-D image input's height and width
640; other dims 128) unless a ``--shape`` whose PATTERN (fnmatch on the file
name) matches gives the input's shape. Prints one line per model: inputs used,
nodes, candidate cuts, blocks, partitions, verification max abs diff, seconds.
Third-party models are not part of the repository: fetch them yourself (e.g.
the .onnx files that rapidocr-onnxruntime, nudenet or ddddocr ship).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

SPLITINFER = Path(sys.executable).with_name("splitinfer")
_IMAGE_SIDE = 640
_OTHER_DIM = 128


def _inputs(path: Path) -> list[onnx.ValueInfoProto]:
    model = onnx.load(path, load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    return [vi for vi in model.graph.input if vi.name not in inits and vi.type.HasField("tensor_type")]


def default_shapes(path: Path) -> list[str]:
    """``NAME=dims`` for every input with a dynamic dim, from the defaults above."""
    shapes = []
    for vi in _inputs(path):
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in vi.type.tensor_type.shape.dim]
        if all(d is not None for d in dims):
            continue
        filled = []
        for i, d in enumerate(dims):
            if d is not None:
                filled.append(d)
            elif i == 0:
                filled.append(1)
            elif len(dims) == 4 and i >= 2:
                filled.append(_IMAGE_SIDE)
            else:
                filled.append(_OTHER_DIM)
        shapes.append(f"{vi.name}={','.join(map(str, filled))}")
    return shapes


def shapes_for(path: Path, overrides: list[str]) -> list[str]:
    """Defaults, replaced by every matching ``PATTERN:NAME=dims`` that names an input of the model."""
    chosen = {s.split("=")[0]: s for s in default_shapes(path)}
    names = {vi.name for vi in _inputs(path)}
    for item in overrides:
        pattern, _, shape = item.partition(":")
        name = shape.rpartition("=")[0]
        if fnmatch.fnmatch(path.name, pattern) and name in names:
            chosen[name] = shape
    return list(chosen.values())


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SPLITINFER), *args], capture_output=True, text=True, timeout=1800)


def check(path: Path, overrides: list[str], out_dir: Path) -> dict[str, object]:
    """Inspect, split --all and verify one model; return what happened."""
    shape_args = [a for s in shapes_for(path, overrides) for a in ("--input-shape", s)]
    row: dict[str, object] = {"model": path.name, "shapes": " ".join(shape_args[1::2]) or "-"}
    start = time.perf_counter()
    inspected = _run(["inspect", str(path), "--json", *shape_args])
    row["inspect_s"] = round(time.perf_counter() - start, 2)
    if inspected.returncode != 0:
        row["error"] = " ".join(inspected.stderr.split())[:300]
        return row
    data = json.loads(inspected.stdout)
    row.update(nodes=data["num_nodes"], candidates=len(data["candidates"]), blocks=data["num_blocks"],
               gflops=round(data["total_flops"] / 1e9, 3), opset=data["model"]["opset"])
    start = time.perf_counter()
    parts_dir = out_dir / path.stem
    result = _run(["split", str(path), "--all", "-o", str(parts_dir), *shape_args])
    row["split_s"] = round(time.perf_counter() - start, 2)
    flat = " ".join(result.stdout.split())
    if result.returncode != 0:
        row["error"] = " ".join(result.stderr.split())[:300]
        return row
    manifest = json.loads((parts_dir / "manifest.json").read_text())
    row["partitions"] = len(manifest["partitions"])
    found = re.search(r"max abs diff ([0-9.e+-]+|nan|inf)", flat)
    row["max_abs"] = float(found.group(1)) if found else None
    return row


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--shape", action="append", default=[], metavar="PATTERN:NAME=D1,D2,...")
    parser.add_argument("--keep", type=Path, help="Keep the partitions in this directory.")
    args = parser.parse_args(argv)
    paths = sorted(args.directory.rglob("*.onnx"))
    if not paths:
        print(f"no .onnx files under {args.directory}")
        return 1
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.keep or Path(tmp)
        for path in paths:
            row = check(path, args.shape, out_dir)
            failed += "error" in row
            print(json.dumps(row), flush=True)
    print(f"{len(paths) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
