"""``splitinfer run`` and ``splitinfer bench``: a planned zoo model on local workers, from a user's files."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec
import numpy as np
import psutil
import pytest
import yaml
from helpers import deploy as helpers
from helpers.cli import TWO_DEVICES as CLUSTER

from splitinfer.cli import main
from splitinfer.cluster import parse_cluster
from splitinfer.plan import plan_to_json, with_provenance
from splitinfer.profile.files import save_profile
from splitinfer.records.bench import load_bench


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """model.onnx, profile.json (naming the model), cluster.yaml, and plan.json from `splitinfer plan`."""
    root = tmp_path_factory.mktemp("runtime_cli")
    data = helpers.model_bytes("resnet18")
    model = root / "model.onnx"
    model.write_bytes(data)
    cluster = root / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(CLUSTER))
    profile = helpers.fake_profile(data, parse_cluster(CLUSTER))
    profile = msgspec.structs.replace(profile, model=msgspec.structs.replace(profile.model, path=str(model)))
    save_profile(profile, root / "profile.json")
    last = len(profile.blocks) - 1
    rc = main(
        [
            "plan",
            str(root / "profile.json"),
            "--cluster",
            str(cluster),
            "--pin",
            "0=a",
            "--pin",
            f"{last}=b",
            "-o",
            str(root / "plan.json"),
        ]
    )
    assert rc == 0
    return root


def test_run_uses_the_files_the_plan_names_and_writes_outputs(files, capsys):
    ref = helpers.reference(helpers.model_bytes("resnet18"))
    x = ref.model.make_feeds(seed=3)["image"]
    np.save(files / "x.npy", x)
    out = files / "y.npy"
    assert main(["run", str(files / "plan.json"), "--input", str(files / "x.npy"), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "logits" in text and "request timing" in text and "stage 1" in text
    np.testing.assert_allclose(np.load(out), ref.run({"image": x})[0], atol=1e-4, rtol=0)


def test_run_refuses_a_wrong_input_in_one_line(files, capsys):
    np.save(files / "bad.npy", np.zeros((1, 3, 8, 8), np.float32))
    rc = main(["run", str(files / "plan.json"), "--input", str(files / "bad.npy")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "has shape [1, 3, 8, 8], expected [1, 3, 32, 32]" in err
    np.save(files / "int.npy", np.zeros((1, 3, 32, 32), np.int64))
    assert main(["run", str(files / "plan.json"), "--input", str(files / "int.npy")]) == 2
    assert "dtype int64, expected float32" in capsys.readouterr().err
    (files / "pickle.npy").write_bytes(b"not numpy at all")
    assert main(["run", str(files / "plan.json"), "--input", str(files / "pickle.npy")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_run_refuses_another_model(files, capsys):
    other = files / "other.onnx"
    other.write_bytes(helpers.model_bytes("mobilenetv2"))
    rc = main(["run", str(files / "plan.json"), "--model", str(other)])
    assert rc == 2 and "was made for model resnet18" in capsys.readouterr().err


def test_bench_prints_predicted_beside_measured_and_saves_json(files, capsys):
    out = files / "bench.json"
    argv = ["bench", str(files / "plan.json"), "--requests", "6", "--num-warmup", "1", "-o", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "latency" in text and "throughput" in text and "stage 0" in text and "cut hop" in text
    result = load_bench(out)
    assert result.num_requests == 6 and len(result.stages) == 2

    # --warmup: the old name of --num-warmup, still taken (hidden from the help)
    assert main([*argv[:2], "--requests", "4", "--concurrency", "2", "--warmup", "0", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == 2 and doc["concurrency"] == 2 and len(doc["latencies_s"]) == 4


def test_bench_counts_its_warmup_in_num_warmup(files, capsys):
    assert main(["bench", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--num-warmup" in text and "--warmup" not in text.replace("--num-warmup", "")
    assert main(["bench", str(files / "plan.json"), "--num-warmup", "-1"]) == 2
    assert "--num-warmup is -1. use a whole number from 0" in capsys.readouterr().err


@pytest.fixture
def no_deploy(monkeypatch):
    """Fails the test if a command gets as far as deploying anything."""
    from splitinfer.cli import runtime_cmds

    monkeypatch.setattr(runtime_cmds, "open_session", lambda *a, **k: pytest.fail("deployed"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--timeout", "nan"], "--timeout is nan. use a finite number > 0"),
        (["run", "--timeout", "inf"], "--timeout is inf"),
        (["run", "--timeout", "0"], "--timeout is 0.0"),
        (["run", "--timeout", "-3"], "--timeout is -3.0"),
        (["run", "--rank", "0"], "--rank is 0. use a whole number >= 1"),
        (["run", "--seed", "-1"], "--seed is -1. use a whole number >= 0"),
        (["run", "-o", "/nonexistent/dir/y.npy"], "-o /nonexistent/dir/y.npy: folder /nonexistent/dir"),
        (["run", "-o", "{tmp}"], "is a folder. give a file path for -o"),
        (["bench", "--requests", "0"], "--requests is 0. use a whole number from 1 to 10000000"),
        (["bench", "--requests", "1000000000"], "--requests is 1000000000"),
        (["bench", "--concurrency", "0"], "--concurrency is 0"),
        (["bench", "--concurrency", "1000000"], "--concurrency is 1000000. use a whole number from 1 to"),
        (["bench", "--num-warmup", "1000000000"], "--num-warmup is 1000000000"),
        (["bench", "--timeout", "nan"], "--timeout is nan"),
        (["bench", "--rank", "-2"], "--rank is -2"),
        (["bench", "-o", "/nonexistent/bench.json"], "-o /nonexistent/bench.json: folder /nonexistent does"),
    ],
)
def test_run_and_bench_refuse_bad_numbers_and_paths_in_one_line_before_deploying(
        files, tmp_path, capsys, no_deploy, args, message):
    command, *options = args
    assert main([command, str(files / "plan.json"), *[o.format(tmp=tmp_path) for o in options]]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: ") and message.format(tmp=tmp_path) in err and "Traceback" not in err
    assert err.count("error:") == 1 and any(fix in err for fix in (". use ", ". give ", ". create "))


def test_run_cannot_write_its_output_after_running_is_still_one_line(files, capsys, monkeypatch):
    from splitinfer.cli import runtime_cmds

    def disk_full(path, outputs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runtime_cmds, "write_outputs", disk_full)
    assert main(["run", str(files / "plan.json"), "-o", str(files / "full.npy")]) == 2
    err = capsys.readouterr().err
    assert "cannot write -o" in err and "No space left on device" in err and "Traceback" not in err


def test_run_with_another_model_and_the_profile_names_the_model_not_a_flag(files, tmp_path, capsys):
    from splitinfer import zoo

    other = tmp_path / "other.onnx"  # another input shape than the profile's model
    other.write_bytes(zoo.build_small("mobilenetv2").SerializeToString())
    profile = json.loads((files / "profile.json").read_text())
    profile["model"]["input_shapes"] = {"image": [1, 3, 32, 32]}  # as `splitinfer profile` records them
    (tmp_path / "profile.json").write_text(json.dumps(profile))
    rc = main(["run", str(files / "plan.json"), "--model", str(other),
               "--profile", str(tmp_path / "profile.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "--input-shape" not in err and "the profile was made for model" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-threads", "100000"], "--num-threads is 100000. use a whole number from 0 to"),
        (["--num-threads", "-1"], "--num-threads is -1"),
        (["--max-frame-bytes", "0"], "--max-frame-bytes is 0. use a whole number from 1048576"),
        (["--max-frame-bytes", "1PiB"], "--max-frame-bytes: unknown unit 'PiB'"),
        (["--max-frame-bytes", "1000TiB"], "--max-frame-bytes is 1099511627776000"),
        (["--max-frame-bytes", "1e400"], "--max-frame-bytes: size '1e400' is negative, infinite or NaN"),
    ],
)
def test_worker_flags_out_of_range_are_one_line_and_exit_2(flags, message):
    result = subprocess.run([str(Path(sys.executable).parent / "splitinfer"), "worker", "--name", "w",
                             "--listen", "tcp://127.0.0.1:*", *flags],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2


def test_missing_cluster_is_one_clear_line(files, tmp_path, capsys):
    doc = json.loads((files / "plan.json").read_text())
    for p in doc["plans"]:
        p["provenance"]["cluster"] = ""
    (tmp_path / "plan.json").write_text(json.dumps(doc))
    assert main(["run", str(tmp_path / "plan.json")]) == 2
    assert "give --cluster cluster.yaml" in capsys.readouterr().err


def _interrupt(proc: subprocess.Popen, workers: list[psutil.Process], expected_code: int) -> None:
    """Ctrl-C the command: it exits with ``expected_code`` and leaves none of its workers behind."""
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == expected_code, proc.stdout.read() if proc.stdout else ""
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "workers left behind"


def _reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_serve_answers_http_and_stops_its_workers_on_ctrl_c(files):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = Path(sys.executable).parent / "splitinfer"
    proc = subprocess.Popen(
        [str(binary), "serve", str(files / "plan.json"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert len(workers) >= 2
        x = np.zeros((1, 3, 32, 32), np.float32)
        doc = {"inputs": {"image": {"dtype": "float32", "shape": [1, 3, 32, 32], "data": x.tolist()}}}
        reply = httpx.post(f"{url}/v1/infer", json=doc, timeout=30)
        assert reply.status_code == 200 and reply.json()["outputs"]["logits"]["shape"] == [1, 10]
        _interrupt(proc, workers, expected_code=0)
    finally:
        _reap(proc)


def _planned(root: Path, name: str) -> Path:
    """model, profile and plan files for zoo model ``name`` on the 2-device cluster; returns plan.json."""
    data = helpers.model_bytes(name)
    (root / f"{name}.onnx").write_bytes(data)
    cluster = parse_cluster(CLUSTER)
    profile = helpers.fake_profile(data, cluster, name=name)
    profile = msgspec.structs.replace(
        profile, model=msgspec.structs.replace(profile.model, path=str(root / f"{name}.onnx"))
    )
    save_profile(profile, root / f"{name}.profile.json")
    plan = helpers.pinned_plan(profile, cluster, [(0, "a"), (len(profile.blocks) - 1, "b")])
    plan = with_provenance(plan, profile=str(root / f"{name}.profile.json"), cluster=str(files_cluster(root)))
    (root / f"{name}.plan.json").write_text(plan_to_json([plan]))
    return root / f"{name}.plan.json"


def files_cluster(root: Path) -> Path:
    """cluster.yaml in ``root`` (written once)."""
    path = root / "cluster.yaml"
    if not path.exists():
        path.write_text(yaml.safe_dump(CLUSTER))
    return path


def test_run_takes_npz_inputs_and_writes_npz_outputs(tmp_path, capsys):
    bert = _planned(tmp_path, "bert")
    ref = helpers.reference(helpers.model_bytes("bert"))
    feeds = ref.model.make_feeds(seed=2)
    np.savez(tmp_path / "feeds.npz", **feeds)
    assert (
        main(["run", str(bert), "--input", str(tmp_path / "feeds.npz"), "-o", str(tmp_path / "y.npy")]) == 0
    )
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref.run(feeds)[0], atol=1e-4, rtol=0)
    np.save(tmp_path / "one.npy", feeds["input_ids"])
    assert main(["run", str(bert), "--input", str(tmp_path / "one.npy")]) == 2
    assert "holds one array, the model has inputs ['input_ids', 'attention_mask']" in capsys.readouterr().err

    detector = _planned(tmp_path, "detector")
    ref = helpers.reference(helpers.model_bytes("detector"))
    assert main(["run", str(detector), "-o", str(tmp_path / "out.npy")]) == 2
    assert "write them to out.npz" in capsys.readouterr().err
    assert main(["run", str(detector), "--seed", "4", "-o", str(tmp_path / "out.npz")]) == 0
    with np.load(tmp_path / "out.npz") as out:
        expected = ref.run(ref.model.make_feeds(seed=4))
        assert sorted(out.files) == ["p4", "p5"]
        np.testing.assert_allclose(out["p4"], expected[0], atol=1e-4, rtol=0)
        np.testing.assert_allclose(out["p5"], expected[1], atol=1e-4, rtol=0)


def test_ctrl_c_during_bench_stops_the_workers(files):
    binary = Path(sys.executable).parent / "splitinfer"
    cmd = [str(binary), "bench", str(files / "plan.json"), "--requests", "1000000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 60
        workers: list[psutil.Process] = []
        while len(workers) < 2 and time.monotonic() < end:
            time.sleep(0.1)
            workers = psutil.Process(proc.pid).children(recursive=True)
        time.sleep(1.0)  # into the measured requests
        assert proc.poll() is None
        _interrupt(proc, workers, expected_code=130)
    finally:
        _reap(proc)


def test_run_takes_an_image_and_prints_the_top_labels(files, capsys):
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the photographs")
    from PIL import Image

    from splitinfer.data import Preprocess, load_dataset

    photo = files / "astronaut.jpg"
    Image.fromarray(skimage_data.astronaut()).save(photo, quality=90)
    labels = files / "labels.txt"
    labels.write_text("".join(f"class-{k}\n" for k in range(10)))
    out = files / "photo.npy"
    rc = main(["run", str(files / "plan.json"), "--input", str(photo), "--labels", str(labels),
               "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "top 5 of logits" in text
    # The same preprocessing as the API's, from the input's shape: 32 x 32, ImageNet mean and std.
    steps = Preprocess.for_input((1, 3, 32, 32))
    assert steps.norm == "imagenet" and steps.resize == (32, 32)
    x = load_dataset(photo, steps).x
    logits = helpers.reference(helpers.model_bytes("resnet18")).run({"image": x})[0]
    np.testing.assert_allclose(np.load(out), logits, atol=1e-4, rtol=0)
    best = int(np.argmax(logits[0]))
    after = text[text.index("top 5 of logits"):]
    assert after[after.index("class-"):].startswith(f"class-{best} ")  # the best class first


def test_run_refuses_bad_image_options_in_one_line_before_deploying(files, capsys):
    np.save(files / "x2.npy", np.zeros((1, 3, 32, 32), np.float32))
    rc = main(["run", str(files / "plan.json"), "--input", str(files / "x2.npy"), "--preprocess", "crop=8"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--preprocess applies to images" in err
    (files / "empty_labels.txt").write_text("")
    rc = main(["run", str(files / "plan.json"), "--labels", str(files / "empty_labels.txt")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "label" in err
