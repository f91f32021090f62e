"""Models larger than a device: weights left on disk as external data through load, split, verify, write.

The default run uses a model of about 25 MB; the one over protobuf's 2 GB limit runs only with
SPLITINFER_BIG_TESTS=1 (it writes about 2.2 GB and takes a minute or more).
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from splitinfer.errors import ModelError
from splitinfer.graph import analyze, load_model, run_chain, split, verify, write_partitions
from splitinfer.graph.external import is_external

WIDTH = 1024
LAYERS = 6
CPU = ["CPUExecutionProvider"]


def _mlp(path, width=WIDTH, layers=LAYERS, seed=0):
    """An MLP (MatMul, Add, Relu per layer, a Reshape through a shape constant) saved with external data."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        w = ((rng.random((width, width), dtype=np.float32) - 0.5) * (2 / np.sqrt(width))).astype(np.float32)
        bias = np.zeros(width, np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"mm{i}"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"add{i}"),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"], name=f"relu{i}")]
        x = f"r{i}"
    inits.append(numpy_helper.from_array(np.array([1, -1], np.int64), "shape"))
    nodes.append(helper.make_node("Reshape", [x, "shape"], ["y"], name="flat"))
    io = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1, width]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "mlp", io[:1], io[1:], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(path), save_as_external_data=True, location=path.stem + ".data",
                    size_threshold=1024)
    return path


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory):
    return _mlp(tmp_path_factory.mktemp("mlp") / "mlp.onnx")


def _whole(path, feeds):
    return ort.InferenceSession(str(path), providers=CPU).run(None, feeds)[0]


def test_weights_stay_on_disk_when_loaded(mlp_path):
    model = load_model(mlp_path, weights_on_disk=True)
    assert model.external_dir == mlp_path.parent
    inits = {t.name: t for t in model.proto.graph.initializer}
    assert all(is_external(inits[f"w{i}"]) and not inits[f"w{i}"].raw_data for i in range(LAYERS))
    assert not is_external(inits["shape"])  # small ones read in (shape inference reads them)
    assert model.proto.ByteSize() < 100_000
    assert model.outputs[0].shape == (1, WIDTH)


def test_split_verified_written_and_run_from_the_files(mlp_path, tmp_path):
    model = load_model(mlp_path, weights_on_disk=True)
    analysis = analyze(model)
    parts = split(model, [len(analysis.order) // 3, 2 * len(analysis.order) // 3], analysis)
    assert all(p.is_external for p in parts)
    report = verify(model, parts)
    assert report.ok and len(report.partitions) == 3 and all(d.ok for d in report.partitions)
    manifest = write_partitions(parts, tmp_path / "parts", model, analysis)
    entries = json.loads(manifest.read_text())["partitions"]
    assert [e["data_file"] for e in entries] == [f"part_{k}.data" for k in range(3)]
    sizes = [(tmp_path / "parts" / e["data_file"]).stat().st_size for e in entries]
    weights = WIDTH * WIDTH * 4
    assert sum(sizes) >= LAYERS * weights and all(s < 3 * weights + 3 * 4096 for s in sizes)
    feeds = model.make_feeds()
    values = dict(feeds)
    for e in entries:  # each file opened by ONNX Runtime from its path, its .data beside it
        session = ort.InferenceSession(str(tmp_path / "parts" / e["file"]), providers=CPU)
        fed = {i.name: values[i.name] for i in session.get_inputs()}
        values = dict(zip([o.name for o in session.get_outputs()], session.run(None, fed), strict=True))
    np.testing.assert_allclose(values["y"], _whole(mlp_path, feeds), rtol=1e-5, atol=1e-6)
    # Standalone bytes for a worker: the weights read in.
    standalone = onnx.load_from_string(parts[1].to_bytes())
    assert not any(is_external(t) for t in standalone.graph.initializer)
    np.testing.assert_allclose(run_chain(parts, feeds)["y"], values["y"], rtol=1e-5, atol=1e-6)


def test_a_wrong_chain_fails_verification(mlp_path):
    model = load_model(mlp_path, weights_on_disk=True)
    parts = split(model, [len(analyze(model).order) // 2])
    w = next(t for t in parts[1].proto.graph.initializer if is_external(t))
    next(e for e in w.external_data if e.key == "offset").value = "0"  # another layer's weights
    report = verify(model, parts)
    assert not report.ok and not report.partitions[1].ok and report.partitions[0].ok


def _copy_model(src, dst_dir, location):
    proto = onnx.load(str(src), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    dst_dir.mkdir(exist_ok=True)
    path = dst_dir / "m.onnx"
    path.write_bytes(proto.SerializeToString())
    return path


@pytest.mark.parametrize(("location", "says"), [
    ("../mlp.data", "points outside the directory"), ("sub/../../mlp.data", "points outside the directory"),
    ("/etc/passwd", "absolute path"), ("missing.data", "does not exist")])
def test_bad_external_data_is_a_one_line_model_error(mlp_path, tmp_path, location, says):
    path = _copy_model(mlp_path, tmp_path / "copy", location)
    with pytest.raises(ModelError) as caught:
        load_model(path)
    assert says in caught.value.problem and str(path) in caught.value.problem
    assert "\n" not in str(caught.value) and caught.value.fix


def test_a_short_data_file_is_a_model_error(mlp_path, tmp_path):
    path = _copy_model(mlp_path, tmp_path / "copy", "short.data")
    (tmp_path / "copy" / "short.data").write_bytes(b"\0" * 1000)
    with pytest.raises(ModelError, match="too short"):
        load_model(path)


@pytest.mark.skipif(os.environ.get("SPLITINFER_BIG_TESTS") != "1",
                    reason="writes a 2.2 GB model and splits it (a minute or more): SPLITINFER_BIG_TESTS=1")
def test_a_model_over_2_gb_loads_splits_and_verifies(tmp_path):
    path = _mlp(tmp_path / "big.onnx", width=8192, layers=9)  # 9 x 256 MiB = 2.25 GiB
    model = load_model(path)
    analysis = analyze(model)
    parts = split(model, [len(analysis.order) // 3, 2 * len(analysis.order) // 3], analysis)
    report = verify(model, parts)
    assert report.ok, report.to_dict()
    write_partitions(parts, tmp_path / "parts", model, analysis)
    assert sum(f.stat().st_size for f in (tmp_path / "parts").glob("*.data")) >= 9 * 8192 * 8192 * 4


def test_by_default_weights_under_2_gib_are_read_in_so_whole_model_runs_need_no_folder(mlp_path, tmp_path,
                                                                                      monkeypatch):
    from splitinfer.profile.device import profile_model
    from splitinfer.profile.profiler import ProfileSettings

    model = load_model(mlp_path)
    assert model.external_dir is None
    inits = {t.name: t for t in model.proto.graph.initializer}
    assert not any(is_external(t) for t in inits.values())
    monkeypatch.chdir(tmp_path)  # not the model's folder: a whole-model session must not look for files
    profile = profile_model(mlp_path, max_blocks=2, settings=ProfileSettings(budget_s=0.2))
    (device,) = profile.devices.values()
    assert device.whole_model is not None and all(b is not None for b in device.blocks)
