"""`splitinfer inspect` and `splitinfer split` through the CLI, bad input included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from helpers import graph_models as tm

from splitinfer.cli import main
from splitinfer.graph import load_manifest


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    paths = {}
    for name, build in [("conv", tm.conv_chain), ("residual", tm.residual), ("dynamic", tm.dynamic),
                        ("early", tm.early_output)]:
        paths[name] = root / f"{name}.onnx"
        onnx.save(build(), paths[name])
    return paths


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines; compare on one line


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, _flat(err)


def test_inspect_json(files, capsys):
    code, out, _ = _run(capsys, "inspect", files["conv"], "--json", "--max-blocks", "0")
    assert code == 0
    data = json.loads(out)
    assert data["model"]["inputs"][0]["shape"] == [1, 3, 16, 16]
    assert sum(b["flops"] for b in data["blocks"]) == data["total_flops"]
    assert data["num_blocks"] == len(data["blocks"]) == len(data["cuts"]) + 1
    # One node per block here: textbook numbers for a 3x3 conv 3->8 on 16x16 and a 16->10 Gemm.
    flops = {b["nodes"][0]: b["flops"] for b in data["blocks"] if len(b["nodes"]) == 1}
    assert flops["conv_c1"] == 2 * 8 * 3 * 3 * 3 * 16 * 16
    assert flops["fc"] == 2 * 16 * 10
    code, out, _ = _run(capsys, "inspect", files["conv"], "--json", "--max-blocks", "2")
    data = json.loads(out)
    assert len(data["blocks"]) == 2 and sum(b["flops"] for b in data["blocks"]) == data["total_flops"]


def test_inspect_table(files, capsys):
    code, out, _ = _run(capsys, "inspect", files["residual"], "--max-blocks", "3")
    assert code == 0
    assert "blocks" in out and "candidate cuts" in out and "GFLOPs" in out
    assert "14" in out  # candidate cuts of the residual model


def test_split_blocks_all_and_at(files, capsys, tmp_path):
    code, out, _ = _run(capsys, "split", files["residual"], "--blocks", "3", "-o", tmp_path / "b3")
    assert code == 0 and "verification" in out and "wrote 3 partitions" in _flat(out)
    assert len(load_manifest(tmp_path / "b3").partitions) == 3
    code, out, _ = _run(capsys, "split", files["early"], "--all", "-o", tmp_path / "all")
    manifest = load_manifest(tmp_path / "all")
    assert code == 0 and len(manifest.partitions) == 6
    assert [s.name for s in manifest.partitions[-1].outputs] == ["early", "final"]
    code, out, _ = _run(capsys, "split", files["residual"], "--at", "h0,b0_r1", "--at", "h2",
                        "-o", tmp_path / "at", "--no-verify")
    assert code == 0 and "(not verified)" in _flat(out)
    entries = load_manifest(tmp_path / "at").partitions
    assert [s.name for s in entries[1].inputs] == ["h0", "b0_r1"]
    assert [s.name for s in entries[2].inputs] == ["h2"]


def test_dynamic_model_with_shapes(files, capsys, tmp_path):
    code, out, _ = _run(capsys, "split", files["dynamic"], "--input-shape", "x=2,3,12,12", "--blocks", "2",
                        "-o", tmp_path / "dyn")
    assert code == 0, out
    assert load_manifest(tmp_path / "dyn").partitions[0].inputs[0].shape == (2, 3, 12, 12)


def _bad_files(tmp_path: Path, files) -> dict[str, Path]:
    text = tmp_path / "text.onnx"
    text.write_text("hello, I am not a model\n")
    data = files["conv"].read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    paths = {"text": text, "truncated": truncated, "missing": tmp_path / "missing.onnx"}
    for name, location in (("outside", "../../etc/passwd"), ("absolute", "/etc/passwd"),
                           ("nodata", "missing.bin")):  # external data a model may not name
        model = onnx.load(files["conv"])
        weight = max(model.graph.initializer, key=lambda t: len(t.raw_data))
        weight.ClearField("raw_data")
        weight.data_location = onnx.TensorProto.EXTERNAL
        weight.external_data.add(key="location", value=location)
        paths[name] = tmp_path / f"{name}.onnx"
        paths[name].write_bytes(model.SerializeToString())
    paths["file"] = tmp_path / "a-file"
    paths["file"].write_text("not a folder")
    return paths


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inspect", "{text}"], "is not an ONNX model"),
        (["inspect", "{truncated}"], "is not an ONNX model (truncated or another format)"),
        (["inspect", "{missing}"], "does not exist"),
        (["split", "{residual}", "--at", "nope", "-o", "{out}"], "tensor 'nope' is not in the model"),
        (["split", "{residual}", "--at", "b0_r1", "-o", "{out}"], "do not separate the graph"),
        (["inspect", "{dynamic}"], "has dynamic dims [<batch>,3,<height>,<width>]. add --input-shape x="),
        (["inspect", "{conv}", "--input-shape", "x=1,3,32,32"], "contradicts the model"),
        (["inspect", "{conv}", "--batch", "2"], "--batch 2 contradicts the model"),
        (["inspect", "{conv}", "--input-shape", "x:1,3"], "is not NAME=D1,D2,"),
        (["inspect", "{conv}", "--input-shape", "x=1,3,a,b"], "not a whole number"),
        (["inspect", "{conv}", "--input-shape", "images=1,3,16,16"], "'images', which is not an input"),
        (["split", "{conv}", "-o", "{out}"], "exactly one of --at, --blocks or --all"),
        (["split", "{conv}", "--all", "--blocks", "2", "-o", "{out}"], "exactly one of --at, --blocks"),
        (["inspect", "{outside}"], "cannot read the external data of"),
        (["inspect", "{outside}"], "points outside the directory"),
        (["inspect", "{absolute}"], "an absolute path"),
        (["inspect", "{nodata}"], "missing.bin"),
        (["split", "{conv}", "--blocks", "2", "-o", "{file}"], "-o {file} is a file, not a folder"),
        (["split", "{conv}", "--blocks", "2", "-o", "{file}/sub"], "is a file, not a folder"),
        (["inspect", "{conv}", "--max-blocks", "-5"], "--max-blocks is -5. use a whole number >= 0"),
        (["inspect", "{conv}", "--max-cut-tensors", "0"], "--max-cut-tensors is 0. use a whole number >= 1"),
        (["split", "{conv}", "--blocks", "2", "--max-cut-tensors", "-1", "-o", "{out}"],
         "--max-cut-tensors is"),
    ],
)
def test_bad_input(files, capsys, tmp_path, args, message):
    paths = {k: str(v) for k, v in {**files, **_bad_files(tmp_path, files)}.items()}
    paths["out"] = str(tmp_path / "out")
    code, _out, err = _run(capsys, *[a.format(**paths) for a in args])
    assert code == 2
    assert err.startswith("error: ") and message.format(**paths) in err, err
    assert "Traceback" not in err and err.count("error:") == 1
    assert not (tmp_path / "out").exists()


def test_binary_exit_code_and_debug(files, tmp_path):
    binary = Path(sys.executable).with_name("splitinfer")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01garbage")
    result = subprocess.run([binary, "inspect", bad], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "error:" in result.stderr
    result = subprocess.run([binary, "--debug", "inspect", bad], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" in result.stderr
