"""A large partition optimized once by ONNX Runtime, in a child process, before the worker caches it
(device/_partitions.py; ``splitinfer worker --optimize-ahead``, off by default): a deploy's session then
holds the stage's weights and no more, from its start.

Creating a session optimizes its graph. On the CPU, ONNX Runtime rewrites convolutions into its blocked
layout (NCHWc), copying their weights while the old ones and the parsed model are still held: a worker
grew for that moment by up to 3 times what the stage keeps (resnet18 whole: a peak of 150-170 MB, 57 MB
held after its requests), its heap kept part of it for later deploys, and by amounts no sum over blocks
predicted (benchmarks/bench_memory.py: up to 43% over or under). ONNX Runtime can save the graph it
optimized (``optimized_model_filepath``); opened again there is nothing left to rewrite, so the session
maps its weights from the cache file and is created in milliseconds (resnet18: 3 ms against 100 ms), runs
as fast, returns the same outputs bit for bit, and the worker's peak is what the stage holds.

The saved graph holds kernels of this machine's instruction set (the NCHWc block size) and of this ONNX
Runtime, so it is made only for the CPU provider, on the worker that runs it, and the cache record says
for what (:func:`identity`): an entry made for another is dropped, and sent again by the next deploy.

The optimizing itself still needs that moment's memory: in a child process, once per partition, when it
arrives; its peak is logged. Where it fails (memory, a graph over protobuf's 2 GiB, a timeout) the partition
is cached as it came and its deploys optimize it as before. Run as a script this module is that child; it
imports ONNX Runtime only (no splitinfer), so it starts in a fraction of a second.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("splitinfer.worker")
BASE_TIMEOUT_S = 120.0  # a child's limit: this, plus a second per 10 MB of partition
_REASON_CHARS = 200


def optimize(source: Path, target: Path) -> str:
    """Write ``source``'s graph as ONNX Runtime optimizes it for this machine's CPU to ``target``
    (one file, the weights inline); '' when done, else why not (``target`` then absent)."""
    size = source.stat().st_size
    timeout_s = BASE_TIMEOUT_S + size / 10e6
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, __file__, str(source), str(target)], capture_output=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        target.unlink(missing_ok=True)
        return f"it took over {timeout_s:.0f} s"
    except OSError as e:
        return f"no child process ({e.strerror or e})"
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not target.is_file():
        target.unlink(missing_ok=True)
        return (lines[-1][-_REASON_CHARS:] if lines else f"the child process exited with {done.returncode}")
    peak = done.stdout.decode(errors="replace").strip()[-20:]
    log.info("partition %s (%.1f MB) optimized for this CPU in %.2f s; the child process peaked at %s MB",
             source.name[:12], size / 1e6, time.perf_counter() - start,
             f"{int(peak) / 1e6:.0f}" if peak.isdigit() else "?")
    return ""


@functools.cache
def identity() -> str:
    """What an optimized graph was made for: ONNX Runtime's version and this CPU (its model and a hash of
    its instruction-set flags, which decide the kernels ONNX Runtime picks)."""
    import onnxruntime

    cpu, flags = platform.processor(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not cpu:
                cpu = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = hashlib.sha256(value.strip().encode()).hexdigest()[:16]
    except OSError:  # not Linux: the processor's name alone
        pass
    return f"onnxruntime {onnxruntime.__version__} on {platform.machine()} {cpu} flags {flags or '?'}"


def _child(source: str, target: str) -> None:
    import contextlib
    import resource

    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")  # Linux: where memory runs out, the kernel ends this process first, not the worker

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only, on stderr: the parent reports the last line
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = target
    ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # Linux: KiB


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
