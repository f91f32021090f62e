"""``splitinfer eval``: a real classifier (scikit-learn's MLP on the digits, exported with skl2onnx),
alone and as a plan made by ``splitinfer plan``, in process and on local workers; every bad input is
one line, exit 2."""

from __future__ import annotations

import hashlib
import json

import msgspec
import numpy as np
import pytest
import yaml

pytest.importorskip("skl2onnx")

from helpers import deploy as helpers
from helpers.cli import one_error_line, run_cli
from helpers.digits import digits
from sklearn.metrics import accuracy_score

from splitinfer.cli import eval_cmds, main
from splitinfer.cluster import parse_cluster
from splitinfer.graph import load_model
from splitinfer.graph.inference import create_inference_session
from splitinfer.profile.files import save_profile

CLUSTER = {
    "schema": 1,
    "source": "a",
    "devices": [{"name": "a", "num_threads": 1}, {"name": "b", "num_threads": 1}],
    "links": [{"from": "a", "to": "b", "bandwidth": "1GB/s", "latency": "0.2ms"}],
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """model.onnx (its batch symbolic, as skl2onnx writes it), digits.npz (the held-out digits),
    cluster.yaml, profile.json (recording batch 1, as `splitinfer profile --input-shape x=1,64` would)
    and plan.json from `splitinfer plan`, the first block on a and the last on b."""
    root = tmp_path_factory.mktemp("eval_cli")
    d = digits()
    (root / "model.onnx").write_bytes(d.model_bytes)
    np.savez(root / "digits.npz", x=d.x, y=d.y)
    (root / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
    fixed = load_model(d.model_bytes, batch=1).proto.SerializeToString()
    profile = helpers.fake_profile(fixed, parse_cluster(CLUSTER), name="model")
    info = msgspec.structs.replace(profile.model, sha256=hashlib.sha256(d.model_bytes).hexdigest(),
                                   path=str(root / "model.onnx"), input_shapes={"x": (1, 64)})
    save_profile(msgspec.structs.replace(profile, model=info), root / "profile.json")
    last = len(profile.blocks) - 1
    assert main(["plan", str(root / "profile.json"), "--cluster", str(root / "cluster.yaml"), "--pin", "0=a",
                 "--pin", f"{last}=b", "-o", str(root / "plan.json")]) == 0
    return root


def _onnx_accuracy(limit: int | None = None) -> float:
    d = digits()
    x, y = d.x[:limit], d.y[:limit]
    (probabilities,) = create_inference_session(d.model_bytes, num_threads=1).run(["probabilities"], {"x": x})
    return accuracy_score(y, probabilities.argmax(axis=1))


def test_without_a_plan_eval_prints_the_models_own_accuracy_as_json(files, capsys):
    code, out, _ = run_cli(capsys, "eval", files / "model.onnx", "--data", files / "digits.npz", "--json")
    assert code == 0
    doc = json.loads(out)  # nothing but the JSON on stdout
    assert doc["agreement"] is None and doc["plan"] is None and doc["num_samples"] == 397
    assert doc["classification"]["accuracy"] == pytest.approx(_onnx_accuracy(), abs=1e-12)
    assert sum(map(sum, doc["classification"]["confusion"])) == 397


def test_the_table_shows_accuracy_and_the_confusion_matrix(files, capsys):
    code, out, _ = run_cli(capsys, "eval", files / "model.onnx", "--data", files / "digits.npz",
                           "--limit", 120)
    assert code == 0
    said = " ".join(out.split())  # rich wraps long cells anywhere
    assert "samples │ 120 (batch 32, 8 padding dropped)" not in said  # a dynamic batch: nothing padded
    assert "samples │ 120 (batch 32)" in said
    assert f"accuracy │ {_onnx_accuracy(120):.4f}" in said
    assert "true \\ predicted" in out and "balanced accuracy" in out


def test_a_plan_in_process_with_int8_hops_costs_at_most_half_a_point(files, capsys):
    out_file = files / "eval.json"
    code, out, _ = run_cli(capsys, "eval", files / "model.onnx", "--data", files / "digits.npz",
                        "--plan", files / "plan.json", "--in-process", "--compress", "int8", "-o", out_file)
    assert code == 0 and f"wrote {out_file}" in "".join(out.split()).replace("wrote", "wrote ")
    doc = json.loads(out_file.read_text())
    assert doc["compress"] == "int8" and doc["in_process"] is True
    assert doc["reference_classification"]["accuracy"] == pytest.approx(_onnx_accuracy(), abs=1e-12)
    assert doc["accuracy_drop"] <= 0.005
    assert doc["accuracy_drop"] == pytest.approx(doc["reference_classification"]["accuracy"]
                                                 - doc["classification"]["accuracy"], abs=1e-12)
    (probabilities,) = [o for o in doc["agreement"]["outputs"] if o["name"] == "probabilities"]
    assert probabilities["snr_db"] != "inf" and probabilities["max_abs_diff"] > 0  # the hop was compressed
    assert "accuracy drop" in out and "agreement with the reference" in out


def test_a_plan_on_workers_gives_the_in_process_numbers(files, capsys):
    common = ["eval", files / "model.onnx", "--data", files / "digits.npz", "--plan", files / "plan.json",
              "--limit", 60, "--compress", "zstd", "--json"]
    code, out, _ = run_cli(capsys, *common, "--in-process")
    assert code == 0
    in_process = json.loads(out)
    code, out, _ = run_cli(capsys, *common)
    assert code == 0
    on_workers = json.loads(out)
    assert on_workers["candidate"] == "workers a -> b" and on_workers["num_samples"] == 60
    for key in ("agreement", "classification", "reference_classification"):
        assert on_workers[key] == in_process[key]
    assert on_workers["agreement"]["outputs"][1]["top1_agreement"] == 1.0


@pytest.fixture(scope="module")
def bad_files(files):
    d = digits()
    np.savez(files / "square.npz", x=d.x.reshape(-1, 8, 8), y=d.y)
    np.savez(files / "shifted.npz", x=d.x, y=d.y + 10)
    (files / "three.txt").write_text("zero\none\ntwo\n")
    return files


@pytest.mark.parametrize(("args", "said"), [
    (["--compress", "int8"], "--compress needs --plan"),
    (["--in-process"], "--in-process needs --plan"),
    (["--plan", "{f}/plan.json", "--compress", "gzip"], "--compress: unknown compression 'gzip'"),
    (["--plan", "{f}/plan.json", "--data", "{f}/square.npz"], "samples of shape [8, 8] float32, but model"),
    (["--data", "{f}/shifted.npz"], "has label 19, but the model's output 'probabilities' has 10 classes"),
    (["--labels", "{f}/three.txt"], "has label 9 but 3 class names"),
    (["--data", "{f}/nowhere.npz"], "nowhere.npz does not exist"),
    (["--top-k", "1,0"], "--top-k"),
    (["--limit", "0"], "--limit"),
    (["-o", "{f}/no/such/folder/eval.json"], "does not exist"),
], ids=["compress without plan", "in-process without plan", "unknown compression", "data does not fit",
        "labels out of range", "too few label names", "missing data", "top-k 0", "limit 0", "unwritable -o"])
def test_bad_input_is_one_line_and_exit_2_before_any_worker_starts(bad_files, capsys, monkeypatch, args,
                                                                    said):
    def no_deploy(*_, **__):
        raise AssertionError("a worker was started for a command that cannot run")

    monkeypatch.setattr(eval_cmds, "open_session", no_deploy)
    args = [a.format(f=bad_files) for a in args]
    data = [] if "--data" in args else ["--data", bad_files / "digits.npz"]
    code, _, err = run_cli(capsys, "eval", bad_files / "model.onnx", *data, *args)
    assert code == 2 and said in one_error_line(err)


def test_a_missing_model_is_one_line(files, capsys):
    code, _, err = run_cli(capsys, "eval", files / "none.onnx", "--data", files / "digits.npz")
    assert code == 2 and "cannot read model" in one_error_line(err)


def test_help_has_examples(capsys):
    code, out, _ = run_cli(capsys, "eval", "--help")
    assert code == 0 and "Examples" in out and "splitinfer eval digits.onnx --data digits.npz" in out
    said = " ".join(out.split())
    assert "--plan plan.json --in-process --compress int8 --json" in said
