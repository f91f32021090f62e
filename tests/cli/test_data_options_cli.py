"""Data sets on the command line beyond ``eval`` and ``run``: ``bench --data`` cycles a data set's samples
through the deployed plan, ``profile --calibration`` takes every data-set form (image folder, one image,
.npz with x, .npy) as well as its own .npz by input name, and ``serve`` checks --preprocess and --labels;
real data (the digits and their scikit-learn MLP, scikit-image photographs), bad input one line, exit 2."""

from __future__ import annotations

import hashlib
import json
import socket

import msgspec
import numpy as np
import pytest
import yaml

pytest.importorskip("skl2onnx")
pytest.importorskip("skimage.data", reason="scikit-image ships the photographs")

import skimage.data as skimage_data
from helpers import deploy as helpers
from helpers.cli import one_error_line, run_cli
from helpers.digits import digits
from PIL import Image

from splitinfer import zoo
from splitinfer.cli import main
from splitinfer.cli._calibration import calibration_input
from splitinfer.cluster import parse_cluster
from splitinfer.data import Preprocess, load_dataset
from splitinfer.graph import load_model
from splitinfer.profile.files import load_profile, save_profile
from splitinfer.runtime import bench as bench_module

CLUSTER = {
    "schema": 1,
    "source": "a",
    "devices": [{"name": "a", "num_threads": 1}, {"name": "b", "num_threads": 1}],
    "links": [{"from": "a", "to": "b", "bandwidth": "1GB/s", "latency": "0.2ms"}],
}
FAST = ["--budget-s", "0.3", "--max-blocks", "3"]


def _plan(root, model_bytes: bytes, input_shapes: dict, name: str) -> None:
    """model.onnx, cluster.yaml, profile.json (recording ``input_shapes``) and plan.json in ``root``."""
    (root / "model.onnx").write_bytes(model_bytes)
    (root / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
    fixed = load_model(model_bytes, input_shapes=input_shapes).proto.SerializeToString()
    profile = helpers.fake_profile(fixed, parse_cluster(CLUSTER), name=name)
    info = msgspec.structs.replace(profile.model, sha256=hashlib.sha256(model_bytes).hexdigest(),
                                   path=str(root / "model.onnx"), input_shapes=input_shapes)
    save_profile(msgspec.structs.replace(profile, model=info), root / "profile.json")
    last = len(profile.blocks) - 1
    assert main(["plan", str(root / "profile.json"), "--cluster", str(root / "cluster.yaml"), "--pin", "0=a",
                 "--pin", f"{last}=b", "-o", str(root / "plan.json")]) == 0


def _photos(folder) -> None:
    """Two classes of scikit-image photographs, as JPEG and PNG files."""
    for cls, photos in {"animal": ["chelsea", "coffee"], "person": ["astronaut"]}.items():
        (folder / cls).mkdir(parents=True)
        for photo in photos:
            Image.fromarray(getattr(skimage_data, photo)()).save(folder / cls / f"{photo}.png")
    Image.fromarray(skimage_data.astronaut()).save(folder.parent / "astronaut.jpg", quality=90)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """The digits MLP planned over a and b at batch 1, and the held-out digits as .npz and .npy."""
    root = tmp_path_factory.mktemp("mlp")
    d = digits()
    _plan(root, d.model_bytes, {"x": (1, 64)}, "model")
    np.savez(root / "digits.npz", x=d.x, y=d.y)
    np.save(root / "digits.npy", d.x)
    np.savez(root / "wide.npz", x=np.zeros((4, 65), np.float32))
    return root


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """resnet18 (small: 1 x 3 x 32 x 32) planned over a and b, and a folder of photographs."""
    root = tmp_path_factory.mktemp("cnn")
    _plan(root, helpers.model_bytes("resnet18"), {"image": (1, 3, 32, 32)}, "resnet18")
    _photos(root / "photos")
    return root


@pytest.fixture
def sent(monkeypatch):
    """The feeds ``splitinfer bench`` hands the library (the real bench still runs)."""
    seen = []
    real = bench_module.bench

    def spy(*args, **kwargs):
        seen.append(kwargs.get("feeds"))
        return real(*args, **kwargs)

    monkeypatch.setattr(bench_module, "bench", spy)
    return seen


# ---- bench --data ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("data", "as_json"), [("digits.npz", False), ("digits.npy", True)])
def test_bench_runs_its_requests_on_the_data_sets_samples_in_order(mlp, capsys, sent, data, as_json):
    code, out, _ = run_cli(capsys, "bench", mlp / "plan.json", "--data", mlp / data, "--requests", 6,
                           "--num-warmup", 2, *(["--json"] if as_json else []))
    assert code == 0
    if as_json:
        assert json.loads(out)["num_requests"] == 6  # nothing but the JSON on stdout
    else:
        assert "inputs: 397 samples of" in out and "latency" in out
    (feeds,) = sent
    assert len(feeds) == 8  # requests + warm-up: no more samples are batched than are sent
    np.testing.assert_array_equal(np.concatenate([f["x"] for f in feeds]), digits().x[:8])


def test_bench_preprocesses_an_image_folder_to_the_deployed_input(cnn, capsys, sent):
    code, out, _ = run_cli(capsys, "bench", cnn / "plan.json", "--data", cnn / "photos", "--requests", 4,
                           "--num-warmup", 0, "--preprocess", "resize=32x32,norm=imagenet")
    assert code == 0 and "inputs: 3 samples of" in out
    (feeds,) = sent
    x = load_dataset(cnn / "photos", "resize=32x32,norm=imagenet").x
    assert len(feeds) == 3  # three samples: cycled by the bench over 4 requests
    np.testing.assert_array_equal(np.concatenate([f["image"] for f in feeds]), x)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "wide.npz"],
         "--data: data {root}/wide.npz (npz) has samples of shape [65] float32, but model input 'x' takes "
         "[1, 64] float32. reshape x"),
        (["--data", "digits.npz", "--preprocess", "crop=8"],
         "--preprocess applies to images, --data digits.npz holds arrays"),
        (["--preprocess", "crop=8"], "--preprocess needs --data"),
        (["--data", "missing"], "--data: data set {root}/missing does not exist"),
    ],
)
def test_bench_refuses_data_that_does_not_fit_in_one_line_before_deploying(mlp, capsys, sent, args, message):
    args = [str(mlp / a) if a.endswith((".npz", "missing")) else a for a in args]
    code, _, err = run_cli(capsys, "bench", mlp / "plan.json", *args)
    assert code == 2 and message.format(root=mlp) in one_error_line(err)
    assert sent == []  # nothing deployed


# ---- profile --calibration -------------------------------------------------------------------------
def _options(calibration, preprocess=None, **more) -> dict:
    return {"calibration": calibration, "preprocess": preprocess, "input_shape": None, "batch": None,
            "tradeoffs": None, "limit": 256, **more}


def test_profile_calibrates_on_an_image_folder_and_writes_the_profile(cnn, tmp_path, capsys):
    model = cnn / "model.onnx"
    _, feeds, _ = calibration_input(model, _options(cnn / "photos"))
    first = load_dataset(cnn / "photos", Preprocess.for_input((1, 3, 32, 32))).x[:1]
    np.testing.assert_array_equal(feeds["image"], first)  # its first sample: chelsea, of class animal
    code, _, _ = run_cli(capsys, "profile", model, "--calibration", cnn / "photos", "-o", tmp_path / "p.json",
                         *FAST)
    assert code == 0 and len(load_profile(tmp_path / "p.json").blocks) == 3


def test_profile_calibrates_on_one_image_with_its_preprocessing(cnn, capsys, tmp_path):
    photo = cnn / "astronaut.jpg"
    _, feeds, _ = calibration_input(cnn / "model.onnx", _options(photo, "resize=40,crop=32,norm=unit"))
    np.testing.assert_array_equal(feeds["image"], load_dataset(photo, "resize=40,crop=32,norm=unit").x)
    assert main(["profile", str(cnn / "model.onnx"), "--calibration", str(photo), "--preprocess",
                 "resize=40,crop=32", "-o", str(tmp_path / "p.json"), *FAST]) == 0


@pytest.mark.parametrize("data", ["digits.npz", "digits.npy"])
def test_profile_calibrates_on_array_data_sets_first_samples(mlp, data):
    _, feeds, _ = calibration_input(mlp / "model.onnx", _options(mlp / data, batch=1))
    np.testing.assert_array_equal(feeds["x"], digits().x[:1])
    _, feeds, _ = calibration_input(mlp / "model.onnx", _options(mlp / data, input_shape=["x=3,64"]))
    np.testing.assert_array_equal(feeds["x"], digits().x[:3])


def test_profile_still_takes_arrays_by_input_name(tmp_path, capsys):
    model = tmp_path / "r18.onnx"
    model.write_bytes(zoo.build_small("resnet18").SerializeToString())
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "named.npz", image=x)
    _, calibration, _ = calibration_input(model, _options(tmp_path / "named.npz"))
    assert calibration == tmp_path / "named.npz"  # the profiler reads it as before
    assert main(["profile", str(model), "--calibration", str(tmp_path / "named.npz"), *FAST]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--calibration", "wide.npz", "--batch", "1"],
         "--calibration: data {root}/wide.npz (npz) has samples of shape [65] float32, but model input 'x' "
         "takes [1, 64]"),
        (["--calibration", "digits.npz", "--batch", "1", "--preprocess", "resize=8"],
         "--preprocess applies to images, --calibration digits.npz holds arrays"),
        (["--preprocess", "resize=8", "--batch", "1"], "--preprocess needs --calibration"),
        (["--calibration", "missing", "--batch", "1"],
         "--calibration {root}/missing does not exist. give an .npz"),
    ],
)
def test_profile_refuses_calibration_that_does_not_fit_in_one_line(mlp, capsys, args, message):
    args = [str(mlp / a) if a.endswith((".npz", "missing")) else a for a in args]
    code, _, err = run_cli(capsys, "profile", mlp / "model.onnx", *args, *FAST)
    assert code == 2 and message.format(root=mlp) in one_error_line(err)


def test_profile_refuses_photos_for_a_model_that_takes_vectors(mlp, cnn, capsys):
    code, _, err = run_cli(capsys, "profile", mlp / "model.onnx", "--calibration", cnn / "photos",
                           "--batch", 1, *FAST)
    line = one_error_line(err)
    assert code == 2 and "cannot derive image preprocessing for input shape [1, 64]" in line


# ---- serve --preprocess --labels -------------------------------------------------------------------
def test_serve_refuses_bad_image_options_in_one_line_before_deploying(mlp, tmp_path, capsys):
    code, _, err = run_cli(capsys, "serve", mlp / "plan.json", "--preprocess", "zoom=2", "--port", 1)
    assert code == 2 and "--preprocess: unknown preprocess key 'zoom'" in one_error_line(err)
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    with socket.socket() as probe:  # a free port: the gateway binds before it deploys
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = run_cli(capsys, "serve", mlp / "plan.json", "--labels", tmp_path / "three.txt",
                           "--port", port)
    assert code == 2
    assert "--labels has 3 names, output 'probabilities' has 10 classes" in one_error_line(err)
