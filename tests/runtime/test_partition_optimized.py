"""Large partitions cached as ONNX Runtime optimized them for this CPU (``--optimize-ahead``,
device/_partition_optimize.py): the same outputs bit for bit, made in a child process, dropped when made
for another machine, cached as they came when the child fails, on the CPU provider alone, and a worker
whose deploy peaks at what the stage holds."""

from __future__ import annotations

import json
import logging
import platform
import time

import numpy as np
import onnx
import psutil
import pytest
from helpers.runtime_models import conv_part, put_in_chunks, stages_on, whole_and_parts

from splitinfer.cluster import Device, parse_cluster
from splitinfer.errors import ErrorCode, WorkerError
from splitinfer.graph.inference import create_inference_session
from splitinfer.host import peak_resident_bytes, reset_peak_resident
from splitinfer.runtime import deploy_stages
from splitinfer.runtime.device import _partitions
from splitinfer.runtime.device._partition_cache import open_store
from splitinfer.runtime.device._partition_layout import Mapped
from splitinfer.runtime.device._partition_optimize import identity, optimize
from splitinfer.runtime.device._partitions import PartitionStore
from splitinfer.runtime.launch.local import launch_local_workers

TOKEN = b"optimized-token-0123456789"


@pytest.fixture(scope="module")
def conv():
    """A 9.4 MB partition of convolutions (its bytes, inputs and outputs), and an input for it."""
    _, (part,) = whole_and_parts([conv_part()])
    x = np.random.default_rng(0).standard_normal(part[1][0].shape).astype(np.float32)
    return part, x


def _run(model, x: np.ndarray) -> np.ndarray:
    return create_inference_session(model, num_threads=1).run(None, {"c0": x})[0]


def test_a_large_partition_is_cached_as_optimized_here_with_the_same_outputs(tmp_path, conv):
    (model, _, _), x = conv
    store = PartitionStore(tmp_path, 1 << 26, optimize=True)
    sha = put_in_chunks(store, model, 1 << 20)
    record = json.loads(Mapped(tmp_path, sha).record.read_text())
    assert record["optimized_for"] == identity()
    loaded = store.load(sha)
    np.testing.assert_array_equal(_run(loaded, x), _run(model, x))
    if platform.machine() in ("x86_64", "AMD64"):  # ONNX Runtime's blocked layout is for x86's vector units
        domains = {n.domain for n in onnx.load(loaded, load_external_data=False).graph.node}
        assert "com.microsoft.nchwc" in domains, domains


def test_a_partition_optimized_for_another_machine_is_dropped_and_asked_for_again(tmp_path, conv):
    (model, _, _), _ = conv
    store = PartitionStore(tmp_path, 1 << 26, optimize=True)
    sha = put_in_chunks(store, model, 1 << 20)
    entry = Mapped(tmp_path, sha)
    record = json.loads(entry.record.read_text())
    entry.record.write_text(json.dumps({**record, "optimized_for": "onnxruntime 0.1 on another CPU"}))
    with pytest.raises(WorkerError, match=r"holds no partition .*optimized for onnxruntime 0\.1") as err:
        store.load(sha)
    assert err.value.code == ErrorCode.MISSING_PARTITION
    assert not entry.exists()


def test_a_partition_the_child_cannot_optimize_is_cached_as_it_came(tmp_path, conv, monkeypatch, caplog):
    (model, _, _), x = conv
    monkeypatch.setattr(_partitions, "optimize", lambda source, target: "out of memory (a test)")
    store = PartitionStore(tmp_path, 1 << 26, optimize=True)
    with caplog.at_level(logging.WARNING, "splitinfer.worker"):
        sha = put_in_chunks(store, model, 1 << 20)
    assert "cached as it came (its deploys optimize it): out of memory (a test)" in caplog.text
    assert "optimized_for" not in json.loads(Mapped(tmp_path, sha).record.read_text())
    np.testing.assert_array_equal(_run(store.load(sha), x), _run(model, x))


def test_the_child_says_why_it_could_not_optimize(tmp_path):
    source, target = tmp_path / "bad.onnx", tmp_path / "out.onnx"
    source.write_bytes(b"not a model")
    why = optimize(source, target)
    assert why and not target.exists()


def test_a_deploy_of_a_cached_partition_peaks_at_what_the_stage_holds(conv):
    # Created from the graph as it came, the session copied the convolutions' weights into ONNX Runtime's
    # blocked layout while the originals were still held: the worker peaked 12 MB (1.3x the weights) over
    # what it held once deployed. From the graph cached as optimized here, under 1 MB over.
    part, x = conv
    model = part[0]
    graph = onnx.load_from_string(model).graph
    weights = sum(onnx.numpy_helper.to_array(t).nbytes for t in graph.initializer)
    with launch_local_workers([Device("a", num_threads=1)], TOKEN, optimize_ahead=True) as launcher:
        process = psutil.Process(launcher.pids["a"])
        cluster = parse_cluster({"devices": [{"name": "a", "num_threads": 1,
                                              "address": launcher.workers["a"].address}]})
        before = _settled_rss(process)
        assert reset_peak_resident(process.pid)
        with deploy_stages(stages_on([part], ["a"]), cluster, token=TOKEN) as session:
            np.testing.assert_array_equal(session.run(None, {"c0": x})[0], _run(model, x))
            held = process.memory_info().rss - before
            grown = peak_resident_bytes(process.pid) - before
    print(f"a stage of {weights / 1e6:.1f} MB of weights: its worker peaked at {grown / 1e6:.1f} MB over "
          f"what it held before, {held / 1e6:.1f} MB once deployed")
    assert held > weights  # the stage's weights are resident
    assert grown - held < 0.3 * weights


def _settled_rss(process: psutil.Process, timeout_s: float = 5.0) -> int:
    """The worker's resident memory once steady (two reads 0.2 s apart within 256 KiB), so that nothing
    else it was still doing counts for or against the deploy (once, in a full test run, the stage held
    12.3 MB and peaked at 16.2, against 15.5 and 16.2 alone: not reproduced)."""
    deadline = time.monotonic() + timeout_s
    last = process.memory_info().rss
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = process.memory_info().rss
        if abs(now - last) <= 256 << 10:
            return now
        last = now
    return last


def test_only_a_cpu_worker_asked_to_optimizes_ahead(tmp_path, caplog):
    def optimizes(name: str, providers: tuple[str, ...], **flags) -> bool:
        store = open_store(name, str(tmp_path / name), 1 << 26, None, 1 << 26, providers, **flags)
        store.close()
        return store.optimize

    cpu, gpu = ("CPUExecutionProvider",), ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert not optimizes("a", cpu)  # the default
    assert optimizes("b", cpu, optimize_ahead=True)
    with caplog.at_level(logging.WARNING, "splitinfer.worker"):
        assert not optimizes("c", gpu, optimize_ahead=True)
    assert "--optimize-ahead is for the CPU provider alone" in caplog.text
