"""``--input``, ``--inputs`` and ``--fix-input`` on inspect, split and profile, on a Silero-VAD-like
model (tests/helpers/vad_models.py) whose whole network lives inside ``If(Equal(sr, 16000))``."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers.cli import one_error_line, run_cli
from helpers.vad_models import run_original, vad_model

from splitinfer.cli._inputs import read_dataset
from splitinfer.graph import load_manifest, load_model
from splitinfer.profile.calibration import load_calibration_samples
from splitinfer.profile.files import load_profile
from splitinfer.profile.profiler import prepare_model
from splitinfer.types import TensorSpec

FAST = ["--budget-s", "0.3", "--max-blocks", "3", "--num-threads", "1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vad")
    onnx.save(vad_model(), root / "vad.onnx")
    rng = np.random.default_rng(7)
    np.save(root / "x.npy", rng.standard_normal((1, 512)).astype(np.float32))
    np.save(root / "state.npy", rng.standard_normal((2, 1, 64)).astype(np.float32))
    np.savez(root / "both.npz", x=np.load(root / "x.npy"), state=np.load(root / "state.npy"))
    # Four samples: x's leading dim (batch 1) holds them; state once, for every sample.
    np.savez(root / "four.npz", x=rng.standard_normal((4, 512)).astype(np.float32),
             state=np.load(root / "state.npy"))
    np.savez(root / "four_stacked.npz", x=rng.standard_normal((4, 1, 512)).astype(np.float32),
             state=rng.standard_normal((4, 2, 1, 64)).astype(np.float32))
    return root


def _inspect_json(capsys, *args):
    code, out, err = run_cli(capsys, "inspect", *args, "--json", "--max-blocks", "0")
    assert code == 0, err
    return json.loads(out)


def test_without_fixing_the_network_is_one_if(files, capsys):
    data = _inspect_json(capsys, files / "vad.onnx")  # loads: sr is generated as 16000, its check
    assert [list(b["op_types"]) for b in data["blocks"]] == [["Equal"], ["If"]]
    assert data["total_flops"] < 10


def test_inspect_fix_input_lists_the_networks_blocks(files, capsys):
    data = _inspect_json(capsys, files / "vad.onnx", "--fix-input", "sr=16000")
    ops = [op for b in data["blocks"] for op in b["op_types"]]
    assert len(data["blocks"]) >= 10 and {"Conv", "LSTM", "MatMul"} <= set(ops) and "If" not in ops
    assert data["total_flops"] > 1_000_000
    assert data["model"]["fixed_inputs"] == {"sr": 16000}
    assert [i["name"] for i in data["model"]["inputs"]] == ["x", "state"]
    code, out, _ = run_cli(capsys, "inspect", files / "vad.onnx", "--fix-input", "sr=16000")
    assert code == 0 and "Conv" in out and "LSTM" in out
    assert "sr=16000 (1 If inlined" in " ".join(out.split())


def test_split_fix_input_on_real_inputs_chains_to_the_original(files, capsys, tmp_path):
    out_dir = tmp_path / "parts"
    code, out, err = run_cli(capsys, "split", files / "vad.onnx", "--fix-input", "sr=16000", "--blocks", "3",
                             "--input", f"x={files / 'x.npy'}", "--input", f"state={files / 'state.npy'}",
                             "-o", out_dir)
    assert code == 0, err
    assert "wrote 3 partitions" in out and "verified, max abs diff" in " ".join(out.split())
    manifest = load_manifest(out_dir)
    feeds = {"x": np.load(files / "x.npy"), "state": np.load(files / "state.npy")}
    values = dict(feeds)
    for entry in manifest.partitions:
        session = ort.InferenceSession(str(manifest.path_of(entry.index)), providers=["CPUExecutionProvider"])
        names = [s.name for s in entry.outputs]
        got = session.run(names, {s.name: values[s.name] for s in entry.inputs})
        values.update(zip(names, got, strict=True))
    want = run_original(vad_model(), {**feeds, "sr": np.array(16000, np.int64)})
    diff = max(float(np.abs(values[n] - want[n]).max()) for n in want)
    print(f"\nsplit --fix-input sr=16000 --blocks 3: chain vs original, max abs diff {diff:.3g}")
    assert diff <= 1e-5


def test_the_other_rate_takes_the_other_branch(files, capsys, tmp_path):
    code, _, err = run_cli(capsys, "split", files / "vad.onnx", "--fix-input", "sr=8000", "--blocks", "2",
                           "--inputs", files / "both.npz", "-o", tmp_path / "p8k")
    assert code == 0, err
    ops = {n.op_type for e in load_manifest(tmp_path / "p8k").partitions
           for n in onnx.load(tmp_path / "p8k" / e.file).graph.node}
    assert "ReduceMean" in ops and not {"Conv", "LSTM", "If"} & ops


@pytest.mark.parametrize(("args", "expected"), [
    (["--fix-input", "nosuch=1"],
     "error: --fix-input names 'nosuch', which is not an input of the model. the inputs are: x, sr, state"),
    (["--input", "x=missing.npy"], "error: --input x=missing.npy: file missing.npy does not exist"),
    (["--fix-input", "sr"], "error: --fix-input 'sr' is not NAME=VALUE"),
    (["--fix-input", "sr=fast"], "error: --fix-input 'sr=fast' has a value that is not a number"),
    (["--fix-input", "sr=16000.5"], "error: --fix-input gives input 'sr' 16000.5, which is not int64"),
    (["--input", "y=x.npy"], "error: --input names 'y', which is not an input of the model"),
])
def test_bad_inputs_are_one_line(files, capsys, monkeypatch, args, expected):
    monkeypatch.chdir(files)
    code, _, err = run_cli(capsys, "inspect", "vad.onnx", *args)
    assert code == 2 and one_error_line(err).startswith(expected)


def test_a_model_that_fails_on_generated_inputs_says_which_and_how_to_give_them(files, capsys):
    code, _, err = run_cli(capsys, "split", files / "vad.onnx", "--fix-input", "sr=5", "--blocks", "2",
                           "-o", files / "never")
    line = one_error_line(err)
    assert code == 2 and "generated values of input(s) x, state" in line
    assert "idx=600 must be within the inclusive range [-512,511] (in Gather, in If 'if_8k'" in line
    assert line.endswith("give real values: --input NAME=FILE.npy, or --fix-input NAME=VALUE for an input "
                         "that picks the model's path")
    assert "feeds=" not in line and "fixed_inputs=" not in line


@pytest.mark.parametrize("calibration", ["four.npz", "four_stacked.npz"])
def test_profile_takes_four_calibration_samples(files, capsys, tmp_path, calibration):
    model = load_model(files / "vad.onnx", fixed_inputs={"sr": 16000})
    samples = load_calibration_samples(model, files / calibration)
    assert len(samples) == 4 and all(s["x"].shape == (1, 512) and s["state"].shape == (2, 1, 64)
                                     for s in samples)
    assert not np.array_equal(samples[0]["x"], samples[1]["x"])
    out = tmp_path / "p.json"
    code, _, err = run_cli(capsys, "profile", files / "vad.onnx", "--fix-input", "sr=16000", "--calibration",
                           files / calibration, "-o", out, *FAST)
    assert code == 0, err
    profile = load_profile(out)
    assert len(profile.blocks) == 3 and sum(b.flops for b in profile.blocks) > 1_000_000


def test_a_data_set_of_whole_batch_1_inputs_stacked_is_samples(tmp_path):
    np.save(tmp_path / "stacked.npy", np.arange(4 * 512, dtype=np.float32).reshape(4, 1, 512))
    data = read_dataset(tmp_path / "stacked.npy", TensorSpec("x", "float32", (1, 512)), None, "--calibration")
    assert data.x.shape == (4, 512) and data.x[3, 0] == 3 * 512


def test_prepare_model_passes_real_and_fixed_inputs_on(files):
    x = np.load(files / "x.npy")
    prepared = prepare_model(files / "vad.onnx", feeds={"x": x}, fixed_inputs={"sr": 16000}, max_blocks=3)
    assert prepared.num_blocks == 3 and prepared.model.specialization.values() == "sr=16000"
    assert np.array_equal(prepared.whole_feeds["x"], x)  # blocks are timed on the real input


def test_profile_takes_real_inputs(files, capsys, tmp_path):
    code, _, err = run_cli(capsys, "profile", files / "vad.onnx", "--fix-input", "sr=8000", "--input",
                           f"x={files / 'x.npy'}", "-o", tmp_path / "p.json", *FAST)
    assert code == 0, err
    assert load_profile(tmp_path / "p.json").model.input_shapes == {"x": (1, 512), "state": (2, 1, 64)}


def test_the_whole_loop_with_fix_input_given_once(files, capsys, tmp_path):
    """profile --fix-input records the values; plan, run and bench then specialise the model again
    from the profile, so the network inside the If is cut, placed on two workers and run."""
    cluster = tmp_path / "two.yaml"
    cluster.write_text("devices:\n  - {name: a, num_threads: 1}\n  - {name: b, num_threads: 1}\n"
                       "links:\n  - {from: a, to: b, bandwidth: 1Gbit/s, latency: 1ms}\n")
    code, _, err = run_cli(capsys, "profile", files / "vad.onnx", "--fix-input", "sr=16000",
                           "--cluster", cluster, "-o", tmp_path / "p.json", "--budget-s", "0.3",
                           "--max-blocks", "6")
    assert code == 0, err
    profile = load_profile(tmp_path / "p.json")
    assert profile.model.fixed_inputs == {"sr": 16000} and len(profile.blocks) > 3
    code, _, err = run_cli(capsys, "plan", tmp_path / "p.json", "--cluster", cluster, "--pin", "0=a",
                           "--pin", f"{len(profile.blocks) - 1}=b", "-o", tmp_path / "plan.json")
    assert code == 0, err
    code, _, err = run_cli(capsys, "run", tmp_path / "plan.json", "--input", files / "both.npz",
                           "-o", tmp_path / "out.npz")
    assert code == 0, err
    got = np.load(tmp_path / "out.npz")
    want = run_original(vad_model(), {"x": np.load(files / "x.npy"), "sr": np.array(16000, dtype=np.int64),
                                      "state": np.load(files / "state.npy")})
    assert max(float(np.abs(got[k] - want[k]).max()) for k in want) < 1e-4
    code, _, err = run_cli(capsys, "bench", tmp_path / "plan.json", "--requests", "5")
    assert code == 0, err


def test_a_request_may_still_carry_the_fixed_input_with_its_value(files):
    from splitinfer.cluster import parse_cluster
    from splitinfer.errors import ShapeError
    from splitinfer.graph import analyze
    from splitinfer.graph.analysis import DEFAULT_MAX_CUT_TENSORS
    from splitinfer.plan import Plan, Stage
    from splitinfer.runtime.coordinator.deploy import deploy

    model = load_model(files / "vad.onnx", fixed_inputs={"sr": 16000})
    x, state = np.load(files / "x.npy"), np.load(files / "state.npy")
    want = run_original(vad_model(), {"x": x, "sr": np.array(16000, dtype=np.int64), "state": state})
    cluster = parse_cluster({"devices": [{"name": "a", "num_threads": 1}]})
    last = len(analyze(model, DEFAULT_MAX_CUT_TENSORS, 32).blocks) - 1
    plan = Plan("latency", (Stage("a", 0, last, 0.0),), (), 0.0, 0.0, 0.0, 0, 0)
    with deploy(plan, cluster, model) as session:
        # the original model takes sr: a caller may go on sending it, with the value fixed
        got = session.run(None, {"x": x, "sr": np.array(16000, dtype=np.int64), "state": state})
        assert float(np.abs(got[0] - want[session.outputs[0].name]).max()) < 1e-4
        with pytest.raises(ShapeError, match=r"specialised to \[16000\]"):
            session.run(None, {"x": x, "sr": np.array(8000, dtype=np.int64), "state": state})
