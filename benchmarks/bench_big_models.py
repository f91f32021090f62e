"""Peak memory of `split` and `inspect` on a model whose weights are external data (issue 21).

Builds full-size VGG-16 from the zoo and saves it with its weights in an external data file (or, with
``--mlp-gb N``, an MLP of about N GB written layer by layer), then runs, each once in a fresh process,
``splitinfer inspect``, ``split --blocks 4`` (verified) and ``split --blocks 4 --no-verify``, and ONNX
Runtime alone opening the model from its path; the peak RSS of each is the OS's (``os.wait4``'s
``ru_maxrss`` of that child). Printed beside the figures measured before weights stayed on disk
(VGG-16, inline: split 4.0 GB, --no-verify 2.3 GB; ONNX Runtime alone 1.05 GB) and the goals: verified
at most 1.5 x the largest partition + ONNX Runtime's footprint for it, --no-verify at most 1.2 x the
largest partition, inspect at most 0.3 x the model.

Usage: ``python benchmarks/bench_big_models.py [--mlp-gb N] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

BEFORE = {"split": 4.0e9, "split --no-verify": 2.3e9, "ort alone": 1.05e9}
GiB = 1 << 30
ORT_OPEN = ("import sys, onnxruntime as ort; ort.InferenceSession(sys.argv[1], "
            "providers=['CPUExecutionProvider'])")
ORT_ALONE = ("import sys, onnxruntime as ort; s = ort.InferenceSession(sys.argv[1], "
             "providers=['CPUExecutionProvider']); i = s.get_inputs()[0]; import numpy as np; "
             "s.run(None, {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)})")


def _vgg16(directory: Path) -> Path:
    from splitinfer import zoo

    path = directory / "vgg16.onnx"
    onnx.save_model(zoo.build("vgg16"), str(path), save_as_external_data=True, location="vgg16.data")
    return path


def _mlp(directory: Path, gb: float) -> Path:
    """An MLP of square layers (width 8192, 256 MiB each) written one layer at a time to its .data file."""
    width, rng = 8192, np.random.default_rng(0)
    layers = max(2, round(gb * 1e9 / (width * width * 4)))
    path, data = directory / "mlp.onnx", directory / "mlp.data"
    nodes, inits, x = [], [], "x"
    with open(data, "wb") as out:
        for i in range(layers):
            offset = out.tell()
            for _ in range(8):  # in pieces: never one whole layer in memory
                piece = rng.random((width // 8, width), dtype=np.float32)
                piece -= 0.5
                piece *= 2 / np.sqrt(width)
                out.write(piece.tobytes())
            t = onnx.TensorProto(name=f"w{i}", data_type=onnx.TensorProto.FLOAT, dims=[width, width])
            t.data_location = onnx.TensorProto.EXTERNAL
            ref = (("location", data.name), ("offset", str(offset)), ("length", str(width * width * 4)))
            for k, v in ref:
                t.external_data.add(key=k, value=v)
            inits.append(t)
            nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"mm{i}"),
                      helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}")]
            x = f"r{i}"
    io = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, width]) for n in ("x", x)]
    graph = helper.make_graph(nodes, "mlp", io[:1], io[1:], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return path


def _peak(argv: list[str]) -> tuple[int, float]:
    """Peak RSS (bytes, /usr/bin/time's %M: the OS's maxrss of that process) and seconds of one run of
    ``argv`` in a fresh process (not a fork of this one, whose pages would count before the exec)."""
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M", *argv], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")
    line = next(x for x in reversed(done.stderr.splitlines()) if x.startswith("MAXRSS "))
    return int(line.split()[1]) * 1024, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlp-gb", type=float, default=0.0, help="An MLP of N GB, not VGG-16.")
    parser.add_argument("--keep", type=Path, help="Build here and keep it (default: a temp folder).")
    args = parser.parse_args()
    directory = args.keep or Path(tempfile.mkdtemp(prefix="bench-big-"))
    directory.mkdir(parents=True, exist_ok=True)
    cli = [str(Path(sys.executable).with_name("splitinfer"))]
    try:
        start = time.perf_counter()
        # Built in a child process: this one stays small.
        build = f"_mlp(d, {args.mlp_gb!r})" if args.mlp_gb else "_vgg16(d)"
        subprocess.run([sys.executable, "-c", f"import sys; from pathlib import Path; sys.path.insert(0, "
                        f"{str(Path(__file__).parent)!r}); from bench_big_models import _mlp, _vgg16; "
                        f"d = Path({str(directory)!r}); {build}"], check=True)
        path = directory / ("mlp.onnx" if args.mlp_gb else "vgg16.onnx")
        model_bytes = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
        built_s = time.perf_counter() - start
        print(f"{path.name}: {model_bytes / 1e9:.2f} GB with external data (built in {built_s:.1f} s)")
        rows = {"inspect": _peak([*cli, "inspect", str(path)]),
                "ort alone": _peak([sys.executable, "-c", ORT_ALONE, str(path)])}
        rows["split --no-verify"] = _peak([*cli, "split", str(path), "--blocks", "4", "--no-verify",
                                           "-o", str(directory / "parts")])
        rows["split"] = _peak([*cli, "split", str(path), "--blocks", "4", "-o", str(directory / "parts")])
        parts = directory / "parts"
        manifest = json.loads((parts / "manifest.json").read_text())
        sizes = {p["file"]: (parts / (p.get("data_file") or p["file"])).stat().st_size
                 for p in manifest["partitions"]}
        biggest = max(sizes, key=sizes.__getitem__)
        largest = sizes[biggest]
        ort_part = _peak([sys.executable, "-c", ORT_OPEN, str(parts / biggest)])[0]
        goals = {"inspect": 0.3 * model_bytes, "split --no-verify": 1.2 * largest,
                 "split": 1.5 * largest + ort_part}
        print(f"largest partition {largest / 1e9:.2f} GB ({biggest}); ONNX Runtime opening it: "
              f"{ort_part / 1e9:.2f} GB")
        head = f"{'command':<20}{'peak RSS':>10}{'x model':>9}{'seconds':>9}{'goal':>10}"
        print(f"{head}{'before (VGG-16)':>22}")
        for name, (rss, seconds) in rows.items():
            goal = f"{goals[name] / 1e9:.2f} GB" if name in goals else ""
            verdict = "" if name not in goals else (" ok" if rss <= goals[name] else " OVER")
            before = f"{BEFORE[name] / 1e9:.2f} GB" if name in BEFORE else ""
            figures = f"{rss / 1e9:>7.2f} GB{rss / model_bytes:>8.2f}x{seconds:>9.1f}"
            print(f"{name:<20}{figures}{goal:>10}{verdict:<5}{before:>17}")
    finally:
        if args.keep is None:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
