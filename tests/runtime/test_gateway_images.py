"""Image bodies on the gateway: JPEG and PNG photographs (scikit-image's, encoded by Pillow) through a real
split model on local workers equal the whole model on the same preprocessing, with the top-5 labels;
bad images are 400 with one line, never 500, and a decompression bomb is refused before decoding."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("skimage.data", reason="scikit-image ships the photographs")

import skimage.data as skimage_data
from helpers import deploy as helpers
from helpers.gateway import FakeSession
from helpers.runtime_models import local_cluster
from PIL import Image
from starlette.testclient import TestClient

from splitinfer.data import Preprocess, load_dataset, read_image
from splitinfer.errors import InputError
from splitinfer.runtime.coordinator.deploy import deploy
from splitinfer.runtime.gateway import MAX_IMAGE_PIXELS, make_app
from splitinfer.types import TensorSpec

LABELS = [f"class-{k}" for k in range(10)]


def _encoded(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


PHOTOS = {"astronaut.png": _encoded(skimage_data.astronaut(), "PNG"),
          "coffee.jpg": _encoded(skimage_data.coffee(), "JPEG", quality=90),
          "camera.png": _encoded(skimage_data.camera(), "PNG")}  # grayscale: made RGB for the model
TYPE = {"png": "image/png", "jpg": "image/jpeg"}


@pytest.fixture(scope="module")
def served():
    """resnet18 (small: input 1 x 3 x 32 x 32, 10 logits) split over workers a and b, served with labels."""
    data = helpers.model_bytes("resnet18")
    cluster = local_cluster(["a", "b"])
    profile = helpers.fake_profile(data, cluster)
    plan = helpers.pinned_plan(profile, cluster, [(0, "a"), (len(profile.blocks) - 1, "b")])
    with (
        deploy(plan, cluster, data, profile=profile, timeout_s=10.0) as session,
        TestClient(make_app(session, labels=LABELS)) as client,
    ):
        yield client, helpers.reference(data)


class ImageSession(FakeSession):
    """The gateway's session stand-in with an image input; its output y is twice the input it got."""

    inputs = (TensorSpec("x", "float32", (2, 3, 16, 16)),)


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_a_photo_gives_the_whole_models_logits_and_its_top_5_labels(served, tmp_path, name):
    client, ref = served
    body = PHOTOS[name]
    (tmp_path / name).write_bytes(body)
    reply = client.post("/v1/infer", content=body, headers={"content-type": TYPE[name.rsplit(".")[1]]})
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    # The same steps as `splitinfer run --input`: Preprocess.for_input of the model's input, on the file.
    x = load_dataset(tmp_path / name, Preprocess.for_input((1, 3, 32, 32))).x
    expected = ref.run({"image": x})[0]
    out = np.array(doc["outputs"]["logits"]["data"], dtype=np.float32)
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)
    labels = doc["labels"]
    assert labels["output"] == "logits" and len(labels["top5"]) == 1  # one image: one sample
    top = labels["top5"][0]
    assert [t["label"] for t in top] == [LABELS[i] for i in np.argsort(-expected[0], kind="stable")[:5]]
    assert [t["score"] for t in top] == pytest.approx(np.sort(expected[0])[::-1][:5], abs=1e-4)


def test_json_answers_carry_the_labels_too(served):
    client, ref = served
    x = ref.model.make_feeds(seed=2)["image"]
    doc = client.post("/v1/infer", json={"inputs": {"image": {"dtype": "float32", "shape": list(x.shape),
                                                               "data": x.tolist()}}}).json()
    assert doc["labels"]["top5"][0][0]["label"] == LABELS[int(np.argmax(ref.run({"image": x})[0]))]


def test_the_apps_preprocessing_makes_the_input_and_fills_a_fixed_batch(tmp_path):
    spec = "resize=16x16,norm=signed"
    with TestClient(make_app(ImageSession(), preprocess=spec)) as client:
        reply = client.post("/v1/infer", content=PHOTOS["coffee.jpg"], headers={"content-type": "image/jpeg"})
    assert reply.status_code == 200, reply.text
    got = np.array(reply.json()["outputs"]["y"]["data"], dtype=np.float32) / 2
    (tmp_path / "coffee.jpg").write_bytes(PHOTOS["coffee.jpg"])
    sample = Preprocess.parse(spec).apply(read_image(tmp_path / "coffee.jpg"))
    assert got.shape == (2, 3, 16, 16)
    np.testing.assert_array_equal(got, np.stack([sample, sample]))
    assert "labels" not in reply.json()


def _bomb() -> bytes:
    """A PNG of a few kilobytes that decodes to more pixels than the gateway takes."""
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    return _encoded(np.zeros((side, side), np.bool_), "PNG")


def _bad_bodies() -> list[tuple[str, bytes, str]]:
    png = PHOTOS["astronaut.png"]
    return [
        ("image/jpeg", b'{"inputs": {}}', "not a readable JPEG or PNG image (Pillow cannot identify it)"),
        ("image/png", b"", "the body is not a readable JPEG or PNG image"),
        ("image/png", png[: len(png) // 2], "the body is not a readable JPEG or PNG image"),
        ("image/png", _encoded(skimage_data.astronaut(), "BMP"), "Pillow cannot identify it"),
        ("image/png", _bomb(), f"pixels, the limit is {MAX_IMAGE_PIXELS} pixels"),
    ]


@pytest.mark.parametrize(("content_type", "body", "message"), _bad_bodies(),
                         ids=["json-as-jpeg", "empty", "truncated", "bmp", "bomb"])
def test_a_bad_image_is_400_with_one_line(content_type, body, message):
    with TestClient(make_app(ImageSession()), raise_server_exceptions=False) as client:
        reply = client.post("/v1/infer", content=body, headers={"content-type": content_type})
        metrics = client.get("/metrics").text
    assert reply.status_code == 400
    line = reply.json()["error"]
    assert message in line and "\n" not in line and "send a" in line
    assert 'splitinfer_request_errors_total{kind="bad_input"} 1.0' in metrics


def test_an_image_the_model_cannot_take_is_400_and_an_oversized_one_413():
    with TestClient(make_app(FakeSession())) as client:  # input x: 1 x 4, no image shape
        reply = client.post("/v1/infer", content=PHOTOS["coffee.jpg"], headers={"content-type": "image/jpeg"})
    assert reply.status_code == 400
    assert "cannot make an image into input 'x'" in reply.json()["error"]
    assert "splitinfer serve --preprocess" in reply.json()["error"]
    with TestClient(make_app(ImageSession(), max_body_bytes=1000)) as client:
        reply = client.post("/v1/infer", content=PHOTOS["coffee.jpg"], headers={"content-type": "image/jpeg"})
    assert reply.status_code == 413


def test_labels_that_do_not_fit_the_classifier_and_a_bad_preprocessing_are_refused():
    with pytest.raises(InputError, match="unknown preprocess key 'zoom'"):
        make_app(ImageSession(), preprocess="zoom=2")
    with pytest.raises(InputError, match="labels is not a list of class names"):
        make_app(ImageSession(), labels="cat")
    fake = FakeSession()  # its outputs, as a Session says them
    fake.outputs = (TensorSpec("logits", "float32", (1, 10)),)
    with pytest.raises(InputError, match="labels has 3 names, output 'logits' has 10 classes"):
        make_app(fake, labels=["a", "b", "c"])
