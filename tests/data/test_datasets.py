"""load_dataset and Dataset: image folders, arrays and single images in; batches and fit checks out;
one line for every bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from splitinfer.data import Dataset, Preprocess, load_dataset, read_image
from splitinfer.errors import InputError
from splitinfer.types import TensorSpec


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    sklearn = pytest.importorskip("sklearn.datasets")
    digits = sklearn.load_digits()
    path = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(path, x=digits.images, y=digits.target, class_names=np.array([str(i) for i in range(10)]))
    return path, digits


def _one_line(err: pytest.ExceptionInfo) -> str:
    line = str(err.value)
    assert "\n" not in line and line
    return line


# ---- image folders ----------------------------------------------------------------------------------
def test_an_image_folder_gives_labels_from_its_sorted_sub_folders(photo_folder):
    data = load_dataset(photo_folder, "resize=64,crop=56,norm=imagenet")
    assert data.x.shape == (5, 3, 56, 56) and data.x.dtype == np.float32
    assert data.class_names == ["animals", "objects"]
    assert data.y.tolist() == [0, 0, 1, 1, 1]
    # the README, the hidden image and the hidden folders are skipped
    assert data.names == ["animals/chelsea.jpg", "animals/coffee.png", "objects/astronaut.jpg",
                          "objects/camera.png", "objects/rocket.jpeg"]
    assert "2 classes" in data.source and str(photo_folder) in data.source
    assert data.preprocess == Preprocess(resize=64, crop=56, norm="imagenet")
    # each sample is its file through the preprocessing
    steps = data.preprocess
    np.testing.assert_array_equal(data.x[3], steps.apply(read_image(photo_folder / "objects" / "camera.png")))
    # the grayscale camera is read as RGB: three equal channels
    camera = load_dataset(photo_folder / "objects" / "camera.png", "norm=raw").x[0]
    assert camera.shape == (3, 512, 512) and camera.std() > 10
    np.testing.assert_array_equal(camera[0], camera[1])
    np.testing.assert_array_equal(camera[0], camera[2])


def test_a_flat_folder_has_no_labels(tmp_path, save_image, solid_image):
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        save_image(solid_image(colour), tmp_path / f"{i}.png")
    save_image(solid_image((9, 9, 9)), tmp_path / ".hidden.png")
    data = load_dataset(tmp_path, "norm=raw,layout=NHWC")
    assert data.y is None and data.class_names is None
    assert data.x.shape == (3, 4, 6, 3)
    assert data.x[:, 0, 0].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    assert data.names == ["0.png", "1.png", "2.png"]


def test_one_image_file_is_a_batch_of_one(photo_folder):
    data = load_dataset(photo_folder / "animals" / "coffee.png")
    assert data.x.shape == (1, 3, 400, 600) and data.y is None and data.names == ["coffee.png"]
    assert float(data.x.min()) >= 0.0 and float(data.x.max()) <= 1.0  # the default: [0, 1]


@pytest.mark.parametrize(("shape", "dtype"), [((1, 224, 224, 3), "float32"), ((-1, 1, 28, 28), "float32"),
                                              ((1, 3, 96, 96), "uint8")])
def test_an_input_shape_picks_the_preprocessing_and_the_data_fits_it(photo_folder, shape, dtype):
    data = load_dataset(photo_folder, input_shape=shape, input_dtype=dtype)
    assert data.x.shape == (5, *shape[1:]) and data.x.dtype == dtype
    assert data.preprocess == Preprocess.for_input(shape, dtype)
    data.check_fits(TensorSpec("images", dtype, shape))


def test_a_limit_takes_samples_in_turn_from_each_class(tmp_path, save_image, solid_image):
    for folder in ("a", "b", "c"):
        for i in range(3):
            save_image(solid_image((i, 0, 0)), tmp_path / folder / f"{i}.png")
    assert load_dataset(tmp_path, limit=4).y.tolist() == [0, 0, 1, 2]
    assert load_dataset(tmp_path, limit=4).names == ["a/0.png", "a/1.png", "b/0.png", "c/0.png"]
    assert load_dataset(tmp_path, limit=1).y.tolist() == [0]
    assert len(load_dataset(tmp_path, limit=100)) == 9


# ---- arrays -----------------------------------------------------------------------------------------
def test_an_npz_gives_x_y_and_class_names(digits_npz):
    path, digits = digits_npz
    data = load_dataset(path)
    np.testing.assert_array_equal(data.x, digits.images)
    np.testing.assert_array_equal(data.y, digits.target)
    assert data.y.dtype == np.int64
    assert data.class_names == [str(i) for i in range(10)] and "npz" in data.source
    small = load_dataset(path, limit=100)
    assert small.x.shape == (100, 8, 8)
    np.testing.assert_array_equal(small.y, digits.target[:100])


def test_an_npy_gives_x_alone(tmp_path):
    x = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    np.save(tmp_path / "x.npy", x)
    data = load_dataset(tmp_path / "x.npy")
    np.testing.assert_array_equal(data.x, x)
    assert data.y is None and "npy" in data.source
    limited = load_dataset(tmp_path / "x.npy", limit=3).x
    np.testing.assert_array_equal(limited, x[:3])
    assert isinstance(limited, np.ndarray) and not isinstance(limited, np.memmap)


def test_batches_cover_the_samples_in_order(digits_npz):
    data = load_dataset(digits_npz[0])
    sizes = [len(b) for b in data.batches(64)]
    assert sizes == [64] * 28 + [5]
    np.testing.assert_array_equal(np.concatenate(list(data.batches(64))), data.x)
    assert [len(b) for b in data.batches(64, drop_last=True)] == [64] * 28
    pairs = list(data.batches(500, with_labels=True))
    assert [(len(x), len(y)) for x, y in pairs] == [(500, 500)] * 3 + [(297, 297)]
    np.testing.assert_array_equal(np.concatenate([y for _, y in pairs]), data.y)
    with pytest.raises(InputError, match="batch size is 0"):
        data.batches(0)
    with pytest.raises(InputError, match="has no labels"):
        Dataset(data.x).batches(2, with_labels=True)


# ---- fitting a model input --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 8, 8), (-1, 8, 8), ("batch", 8, 8), (-1, -1, 8), (1, "h", "w")])
def test_check_fits_takes_fixed_dynamic_and_symbolic_dimensions(digits_npz, shape):
    load_dataset(digits_npz[0]).check_fits(TensorSpec("x", "float64", shape))


@pytest.mark.parametrize(("spec", "fix"), [
    (TensorSpec("x", "float32", (1, 8, 8)), "x.astype('float32')"),
    (TensorSpec("x", "float64", (1, 64)), "reshape x"),
    (TensorSpec("x", "float64", (1, 8, 9)), "reshape x"),
    (TensorSpec("x", "float64", (1, 1, 8, 8)), "reshape x"),
    (TensorSpec("x", "float64", (1, 8, 8, 1)), "reshape x"),
])
def test_check_fits_names_the_data_and_the_model_input(digits_npz, spec, fix):
    with pytest.raises(InputError) as err:
        load_dataset(digits_npz[0]).check_fits(spec)
    line = _one_line(err)
    assert "samples of shape [8, 8] float64" in line
    assert f"model input 'x' takes {list(spec.shape)} {spec.dtype}" in line
    assert fix in line


def test_check_fits_of_images_says_to_preprocess(photo_folder):
    data = load_dataset(photo_folder / "animals" / "coffee.png", "resize=32x32")
    with pytest.raises(InputError, match=r"\[3, 32, 32\] float32.*takes \[1, 3, 32, 32\] uint8.*dtype=uint8"):
        data.check_fits(TensorSpec("img", "uint8", (1, 3, 32, 32)))
    with pytest.raises(InputError, match=r"Preprocess\.for_input"):
        data.check_fits(TensorSpec("img", "float32", (1, 3, 64, 64)))


# ---- bad input: one line each -----------------------------------------------------------------------
def test_a_missing_path(tmp_path):
    with pytest.raises(InputError) as err:
        load_dataset(tmp_path / "nope")
    assert "data set" in _one_line(err) and "does not exist" in str(err.value) and ".npz" in str(err.value)


def test_an_empty_folder_and_a_folder_without_images(tmp_path):
    with pytest.raises(InputError, match="holds no images"):
        load_dataset(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty-class").mkdir()
    with pytest.raises(InputError, match="holds no images") as err:
        load_dataset(tmp_path)
    assert ".png" in _one_line(err)


def test_images_next_to_class_folders(tmp_path, save_image, solid_image):
    save_image(solid_image((0, 0, 0)), tmp_path / "cats" / "a.png")
    save_image(solid_image((0, 0, 0)), tmp_path / "stray.png")
    with pytest.raises(InputError, match=r"both images \(stray.png, ...\) and class folders \(cats"):
        load_dataset(tmp_path)


def test_a_corrupt_or_truncated_image_gives_pillows_reason(tmp_path, photo_folder):
    garbage = tmp_path / "garbage" / "bad.jpg"
    garbage.parent.mkdir()
    garbage.write_bytes(b"this is not a jpeg" * 10)
    with pytest.raises(InputError) as err:
        load_dataset(garbage.parent)
    assert f"cannot read image {garbage}: cannot identify image file" in _one_line(err)
    whole = (photo_folder / "objects" / "astronaut.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(InputError, match="image file is truncated") as err:
        load_dataset(cut)
    _one_line(err)


def test_a_file_in_a_format_that_runs_a_program_is_never_decoded(tmp_path, monkeypatch):
    # EPS bytes under an image name: Pillow would hand them to Ghostscript.
    from PIL import EpsImagePlugin

    ran = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: ran.append(a))
    fake = tmp_path / "page.png"
    fake.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n")
    with pytest.raises(InputError, match="cannot identify image file"):
        load_dataset(fake)
    assert ran == []


def test_images_of_different_sizes_without_resize(photo_folder):
    with pytest.raises(InputError) as err:
        load_dataset(photo_folder / "animals")
    line = _one_line(err)
    assert "chelsea.jpg gives [3, 300, 451], coffee.png [3, 400, 600]" in line
    assert "resize=256,crop=224" in line


@pytest.mark.parametrize(("arrays", "message"), [
    ({"images": np.zeros((2, 3)), "labels": np.zeros(2)}, "has no array 'x' (it has images, labels)"),
    ({"x": np.zeros((3, 2)), "y": np.zeros(2, np.int64)}, "3 samples in x but 2 labels in y"),
    ({"x": np.zeros((2, 2)), "y": np.array([0, -1])}, "negative label (-1)"),
    ({"x": np.zeros((2, 2)), "y": np.array([0.5, 1.0])}, "labels of dtype float64, not whole numbers"),
    ({"x": np.zeros((0, 2))}, "has no samples"),
    ({"x": np.zeros((2, 2)), "y": np.array([0, 2]), "class_names": np.array(["a", "b"])},
     "label 2 but 2 class names"),
])
def test_bad_npz_contents(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(InputError) as err:
        load_dataset(tmp_path / "d.npz", limit=1)  # the limit must not hide a bad file
    assert message in _one_line(err)


def test_whole_float_labels_are_taken_as_ints(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 2)), y=np.array([1.0, 0.0]))
    assert load_dataset(tmp_path / "d.npz").y.tolist() == [1, 0]


@pytest.mark.parametrize("name", ["objects.npz", "objects.npy"])
def test_pickled_arrays_are_refused(tmp_path, name):
    path = tmp_path / name
    x = np.array([{"a": 1}, None], dtype=object)
    np.savez(path, x=x) if name.endswith("npz") else np.save(path, x)
    with pytest.raises(InputError, match=r"allow_pickle=False|Python objects") as err:
        load_dataset(path)
    assert "no objects" in _one_line(err)


@pytest.mark.parametrize(("content", "name", "message"), [
    (b"PK\x03\x04 not a zip", "broken.npz", "cannot read"),
    (b"\x93NUMPY broken", "broken.npy", "cannot read"),
    (b"a,b\n1,2\n", "table.csv", "cannot tell what data"),
])
def test_unreadable_or_unknown_files(tmp_path, content, name, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        load_dataset(tmp_path / name)
    _one_line(err)


def test_preprocessing_for_arrays_and_a_bad_limit_are_refused(digits_npz):
    with pytest.raises(InputError, match="holds arrays"):
        load_dataset(digits_npz[0], "resize=8")
    with pytest.raises(InputError, match="data limit is 0"):
        load_dataset(digits_npz[0], limit=0)
    with pytest.raises(InputError, match="preprocess layout='CHW'"):
        load_dataset(digits_npz[0], "layout=CHW")


def test_importing_the_package_does_not_load_pillow():
    code = "import sys, splitinfer.data; print('PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_16_bit_images_keep_their_top_8_bits_and_32_bit_ones_are_refused(tmp_path):
    from PIL import Image

    Image.fromarray(np.array([[0, 1000, 30000, 65535]], np.uint16)).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    # Pillow alone would clip: 0, 255, 255, 255
    assert load_dataset(tmp_path / "deep.png", "norm=raw,grayscale").x.ravel().tolist() == [0, 3, 117, 255]
    Image.fromarray(np.array([[0, 1.5]], np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(InputError, match=r"32-bit pixels \(Pillow mode F\)") as err:
        load_dataset(tmp_path / "float.tif")
    _one_line(err)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"x": [1, 2]}, "the data has no samples (x is list)"),
    ({"x": np.zeros(())}, "has no samples (x is shape [])"),
    ({"x": np.zeros((2, 2)), "y": np.zeros((2, 1), np.int64)}, "labels of shape [2, 1] for 2 samples"),
    ({"x": np.zeros((2, 2)), "names": ["a"]}, "1 names for 2 samples"),
])
def test_a_dataset_checks_what_it_is_given(kwargs, message):
    with pytest.raises(InputError) as err:
        Dataset(**kwargs)
    assert message in _one_line(err)


def test_a_hidden_image_named_on_its_own_is_read(tmp_path, save_image, solid_image):
    path = save_image(solid_image((7, 8, 9)), tmp_path / ".hidden.png")
    assert load_dataset(path, "norm=raw").x[0, :, 0, 0].tolist() == [7, 8, 9]
