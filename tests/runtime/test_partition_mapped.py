"""Large cached partitions kept as ONNX external data (device/_partition_layout.py, issue 21): rewritten once
installed, deployed by hash from the graph file's path with the same outputs as inline, counted as one
entry by the cache's bound and its eviction, refused and removed when damaged, found again after a
restart. The threshold is lowered here (``mapped_min_bytes``); a real worker at the real one:
test_partition_deploy.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.runtime_models import mlp_parts, put_in_chunks, whole_and_parts

from splitinfer.errors import ErrorCode, WorkerError
from splitinfer.graph.inference import create_inference_session
from splitinfer.runtime.device._control import DeviceContext, deploy_stage
from splitinfer.runtime.device._partition_layout import ALIGN_BYTES, INLINE_MAX_BYTES, Mapped
from splitinfer.runtime.device._partitions import PartitionStore
from splitinfer.runtime.wire import messages
from splitinfer.runtime.wire.messages import Message

SMALL = 1000  # the rewrite threshold in these tests: every partition here is larger


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _partition(seed: int = 0, width: int = 150) -> tuple[bytes, tuple, tuple]:
    """A partition of two 150 x 150 layers: weights of 90000 bytes each (over the 64 KiB kept inline, and
    not a whole number of pages: the second one's offset is aligned by padding)."""
    _, ((model, ins, outs),) = whole_and_parts(mlp_parts(1, width=width, batch=2, seed=seed))
    return model, ins, outs


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _run(model: bytes | Path, x: np.ndarray) -> np.ndarray:
    return create_inference_session(model, num_threads=1).run(None, {"t0": x})[0]


class _Stages:
    """The stage table, as far as a deploy uses it: the runner it installs."""

    def install(self, header: messages.Deploy, runner) -> None:
        self.runner = runner


def _deploy_by_hash(store: PartitionStore, model: bytes, ins, outs) -> _Stages:
    """The worker's deploy handler, in process, on a deploy that names the partition by hash."""
    stages = _Stages()
    device = DeviceContext("w", "tcp://127.0.0.1:1", ("CPUExecutionProvider",), 1, stages, None, None,
                           partitions=store)  # type: ignore[arg-type]
    header = messages.Deploy(deployment_id="d", stage=0, device="w", parts_sha256=[_sha(model)],
                             inputs=[messages.TensorMeta(s.name, s.dtype, s.shape) for s in ins],
                             outputs=[messages.TensorMeta(s.name, s.dtype, s.shape) for s in outs],
                             route=messages.Route("tcp://127.0.0.1:9", True), reply_to="tcp://127.0.0.1:9")
    deploy_stage(device, header, Message(header))
    return stages


def test_a_large_partition_is_rewritten_once_installed_and_deploys_by_hash_as_inline(tmp_path):
    model, ins, outs = _partition()
    sha = _sha(model)
    store = PartitionStore(tmp_path, 1 << 20, mapped_min_bytes=SMALL)
    put_in_chunks(store, model)
    assert _files(tmp_path) == [f"{sha}.data", f"{sha}.json", f"{sha}.onnx"]  # the blob itself is gone
    graph = onnx.load(str(tmp_path / f"{sha}.onnx"), load_external_data=False)
    external = [t for t in graph.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert len(external) == 2 and all(t.name.endswith("_w") for t in external)  # the biases stay inline
    for t in external:
        ref = {e.key: e.value for e in t.external_data}
        assert ref["location"] == f"{sha}.data" and int(ref["offset"]) % ALIGN_BYTES == 0
        assert int(ref["length"]) == 150 * 150 * 4 > INLINE_MAX_BYTES
    assert store.load(sha) == tmp_path / f"{sha}.onnx"
    x = np.random.default_rng(0).standard_normal((2, 150)).astype(np.float32)
    stages = _deploy_by_hash(store, model, ins, outs)
    (got,), _, _ = stages.runner.run({"t0": x})
    np.testing.assert_array_equal(got, _run(model, x))  # the same weights, the same arithmetic


def test_a_blob_whose_graph_protobuf_merges_from_pieces_is_rewritten_whole(tmp_path):
    """A blob may give ``graph`` more than once (one per initializer, graph/external.serialize): protobuf
    merges them, and so must the rewrite (each piece's initializers moved, none lost)."""
    model, _, _ = _partition(1)
    proto = onnx.load_from_string(model)
    pieces = [onnx.ModelProto(graph=onnx.GraphProto(initializer=[t])) for t in proto.graph.initializer]
    del proto.graph.initializer[:]
    blob = proto.SerializeToString() + b"".join(p.SerializeToString() for p in pieces)
    assert onnx.load_from_string(blob) == onnx.load_from_string(model)
    store = PartitionStore(tmp_path, 1 << 20, mapped_min_bytes=SMALL)
    put_in_chunks(store, blob)
    path = store.load(_sha(blob))
    assert isinstance(path, Path)
    graph = onnx.load(str(path), load_external_data=False).graph
    assert sorted(t.name for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL) == \
        ["p0l0_w", "p0l1_w"]  # from the pieces after the first too
    x = np.random.default_rng(1).standard_normal((2, 150)).astype(np.float32)
    np.testing.assert_array_equal(_run(path, x), _run(model, x))


def test_the_bound_and_eviction_count_a_rewritten_entry_as_its_files(tmp_path):
    a, b = _partition(2)[0], _partition(3)[0]
    store = PartitionStore(tmp_path, 3 * len(a), mapped_min_bytes=SMALL)
    put_in_chunks(store, a)
    size = sum(p.stat().st_size for p in tmp_path.iterdir() if p.is_file() and p.name.startswith(_sha(a)))
    assert store.cached() == [_sha(a)] and store.cached_bytes == size > len(a)  # + alignment and a record
    # b's rewrite needs room for a second copy while written: with a (a little over its blob's size)
    # that is over the bound, so a goes
    put_in_chunks(store, b)
    assert store.cached() == [_sha(b)] and not [n for n in _files(tmp_path) if n.startswith(_sha(a))]
    assert store.cached_bytes == sum(p.stat().st_size for p in tmp_path.iterdir() if p.is_file()) \
        <= store.max_bytes
    # A cache without room for that second copy keeps a partition as the one file it came as.
    (tmp_path / "small").mkdir()
    small = PartitionStore(tmp_path / "small", 2 * len(a) - 1, mapped_min_bytes=SMALL)
    put_in_chunks(small, a)
    assert _files(tmp_path / "small") == [_sha(a)] and small.load(_sha(a)) == a


@pytest.mark.parametrize(("damage", "named"), [
    ("data truncated", "its data file has"), ("data changed", "its data file is not the one written"),
    ("graph changed", "its graph file is not the one written"), ("record lost", ""),
    ("record garbled", "its record cannot be read"),
    ("record of another", "its record is another partition's")])
def test_a_damaged_rewritten_entry_is_refused_and_removed(tmp_path, damage, named, caplog):
    model, _, _ = _partition(4)
    sha = _sha(model)
    store = PartitionStore(tmp_path, 1 << 20, mapped_min_bytes=SMALL)
    put_in_chunks(store, model)
    mapped = Mapped(tmp_path, sha)
    if damage == "data truncated":
        with open(mapped.data, "r+b") as f:
            f.truncate(mapped.data.stat().st_size - 4096)
    elif damage == "data changed":  # the same size, one weight different
        data = bytearray(mapped.data.read_bytes())
        data[-1] ^= 0x40
        mapped.data.write_bytes(data)
    elif damage == "graph changed":
        mapped.graph.write_bytes(mapped.graph.read_bytes().replace(b"Relu", b"Tanh"))
    elif damage == "record lost":
        mapped.record.unlink()
    elif damage == "record of another":  # copied over from another entry
        mapped.record.write_text(mapped.record.read_text().replace(sha, "f" * 64))
    else:
        mapped.record.write_text("{not json")
    with pytest.raises(WorkerError) as e:
        store.load(sha)
    assert e.value.code == ErrorCode.MISSING_PARTITION and "\n" not in e.value.problem
    if named:  # without its record the files are no entry: simply not held
        assert f"damaged: {named}" in e.value.problem and named in caplog.text
    assert store.cached() == [] and _files(tmp_path) == []
    put_in_chunks(store, model)  # sent again, it is whole again
    assert isinstance(store.load(sha), Path)


def test_a_restart_finds_rewritten_entries_and_removes_what_a_broken_rewrite_left(tmp_path):
    model, other = _partition(5)[0], _partition(6)[0]
    store = PartitionStore(tmp_path, 1 << 20, mapped_min_bytes=SMALL)
    put_in_chunks(store, other)
    put_in_chunks(store, model)
    cached, size = store.cached(), store.cached_bytes
    store.close()
    orphan = "e" * 64  # a rewrite that broke off before its record: files, no entry
    (tmp_path / f"{orphan}.data").write_bytes(b"x" * 100)
    (tmp_path / f"{orphan}.onnx").write_bytes(b"x")
    (tmp_path / _sha(model)).write_bytes(model)  # a restart between the record and the blob's removal
    (tmp_path / "pending" / f"{_sha(model)}.data.tmp").write_bytes(b"x")
    again = PartitionStore(tmp_path, 1 << 20, mapped_min_bytes=SMALL)
    assert again.cached() == cached and again.cached_bytes == size  # in the same order
    assert _files(tmp_path) == sorted(f"{s}.{e}" for s in cached for e in ("data", "json", "onnx"))
    assert not list((tmp_path / "pending").iterdir())
    assert isinstance(again.load(_sha(model)), Path)


def test_a_large_blob_cached_before_rewrites_is_rewritten_when_first_loaded(tmp_path):
    model, _, _ = _partition(7)
    PartitionStore(tmp_path, 1 << 20).close()  # the default threshold: kept as one file
    store = PartitionStore(tmp_path, 1 << 20)
    put_in_chunks(store, model)
    assert _files(tmp_path) == [_sha(model)]
    store.close()
    store = PartitionStore(tmp_path, 1 << 20, mapped_min_bytes=SMALL)
    assert store.load(_sha(model)) == tmp_path / f"{_sha(model)}.onnx"
    assert _files(tmp_path) == [f"{_sha(model)}.{e}" for e in ("data", "json", "onnx")]


def test_what_cannot_be_rewritten_stays_one_file_loaded_as_bytes(tmp_path):
    store = PartitionStore(tmp_path, 1 << 20, mapped_min_bytes=SMALL)
    noise = np.random.default_rng(8).bytes(200_000)  # not a model at all
    put_in_chunks(store, noise)
    assert store.load(_sha(noise)) == noise and _files(tmp_path) == [_sha(noise)]
    # A model that refers to external data already: its files would be looked for next to the cache's.
    proto = onnx.load_from_string(_partition(9)[0])
    weight = proto.graph.initializer[0]
    weight.data_location = onnx.TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../weights.bin")
    weight.ClearField("raw_data")
    external = proto.SerializeToString()  # its other weight would be rewritten
    put_in_chunks(store, external)
    assert store.load(_sha(external)) == external
    assert _files(tmp_path) == sorted([_sha(noise), _sha(external)])  # no entry half made
    assert not list((tmp_path / "pending").iterdir())  # nothing of the attempts left behind


def test_a_graph_file_an_older_onnx_runtime_refuses_is_retried_with_its_weights_beside_it(tmp_path,
                                                                                       monkeypatch):
    """An older ONNX Runtime build refusing the IR version gets the model again as bytes at the IR it reads
    (graph/inference.py); a graph file's external data is then still looked for in the file's folder."""
    from splitinfer.graph import inference

    model, _, _ = _partition(10)
    store = PartitionStore(tmp_path, 1 << 20, mapped_min_bytes=SMALL)
    put_in_chunks(store, model)
    path = store.load(_sha(model))
    opened, real = [], inference._open

    def older_build(runtime, data, options, parsed):
        opened.append(type(data).__name__)
        if len(opened) == 1:
            raise RuntimeError("Unsupported model IR version: 9, max supported IR version: 8")
        return real(runtime, data, options, parsed)

    monkeypatch.setattr(inference, "_open", older_build)
    x = np.random.default_rng(2).standard_normal((2, 150)).astype(np.float32)
    got = _run(path, x)
    monkeypatch.undo()
    assert opened == ["str", "bytes"]  # the file by its name, then its bytes at IR 8
    np.testing.assert_array_equal(got, _run(model, x))


def test_a_partition_timed_from_its_mapped_file_counts_the_pages_it_keeps_with_its_weights(tmp_path):
    """Profiling times a stage-sized block from the worker's cache as a deploy loads it: its weights are
    the file's pages, resident but never allocated, and they count with the session's weights (not as the
    moment of copies, and not missed): 8 MB of an Add's constant, used where it lies."""
    from onnx import TensorProto, helper, numpy_helper

    from splitinfer.profile.timing import time_partitions

    table = np.random.default_rng(0).standard_normal((2048, 1024)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "add",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2048, 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2048, 1024])],
                              [numpy_helper.from_array(table, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    store = PartitionStore(tmp_path, 64 << 20, mapped_min_bytes=SMALL)
    put_in_chunks(store, model, chunk_bytes=4 << 20)
    path = store.load(_sha(model))
    assert isinstance(path, Path)  # the graph file, its weights mapped
    (timing,) = time_partitions([path], {"x": np.zeros((2048, 1024), np.float32)}, num_threads=1,
                                budget_s=0.05, min_runs=1, max_runs=2)
    assert timing.weight_bytes >= 0.9 * table.nbytes
    assert timing.transient_bytes is None or timing.transient_bytes < 0.5 * table.nbytes


def test_profiling_times_from_the_cache_exactly_the_partitions_a_deploy_maps():
    """A block is timed as a stage of its size is deployed: by hash, from the worker's cache, mapped from
    the same size on (so the memory measured is the memory a deploy takes)."""
    from splitinfer.runtime.device._partition_layout import MAPPED_MIN_BYTES
    from splitinfer.runtime.wire.partitions import BY_HASH_MIN_BYTES

    assert BY_HASH_MIN_BYTES == MAPPED_MIN_BYTES
