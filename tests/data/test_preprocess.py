"""Preprocess: the text form, the defaults for a model input, and the numbers it makes of pixels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from splitinfer.data import Preprocess, read_image
from splitinfer.errors import InputError

# (255, 0, 128) by hand: (p / 255 - mean) / std with ImageNet's mean and std.
IMAGENET_OF_255_0_128 = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]


@pytest.fixture
def colour_file(tmp_path, save_image, solid_image):
    return save_image(solid_image((255, 0, 128), height=4, width=6), tmp_path / "colour.png")


def _apply(text: str, path) -> np.ndarray:
    steps = Preprocess.parse(text)
    return steps.apply(read_image(path, grayscale=steps.grayscale))


# ---- numbers ----------------------------------------------------------------------------------------
def test_imagenet_normalisation_matches_a_hand_computation(colour_file):
    x = _apply("norm=imagenet", colour_file)
    assert x.shape == (3, 4, 6) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 2, 3], IMAGENET_OF_255_0_128, rtol=1e-6)
    np.testing.assert_allclose(x[:, 2, 3], [2.2489083, -2.0357143, 0.4264924], rtol=1e-6)
    assert np.all(x == x[:, :1, :1])  # one colour in, one value per channel out


@pytest.mark.parametrize(("text", "expected"), [
    ("norm=unit", [1.0, 0.0, 128 / 255]),
    ("", [1.0, 0.0, 128 / 255]),  # unit is the default for float
    ("norm=signed", [1.0, -1.0, 128 / 127.5 - 1]),
    ("norm=raw", [255.0, 0.0, 128.0]),
    # explicit mean and std on raw's 0..255 scale (Caffe's convention)
    ("norm=raw,mean=100,std=50", [3.1, -2.0, 0.56]),
    # ... and per channel on unit's [0, 1] scale
    ("mean=0.5/0/1,std=0.5/1/2", [1.0, 0.0, (128 / 255 - 1) / 2]),
])
def test_each_normalisation_gives_its_values(colour_file, text, expected):
    np.testing.assert_allclose(_apply(text, colour_file)[:, 0, 0], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("text", "dtype", "expected"), [
    ("dtype=uint8", np.uint8, [255, 0, 128]),
    ("dtype=int8", np.int8, [127, -128, 0]),  # the pixels minus 128
    ("dtype=float16,norm=imagenet", np.float16, IMAGENET_OF_255_0_128),
    ("dtype=float64,norm=imagenet", np.float64, IMAGENET_OF_255_0_128),
])
def test_each_dtype_holds_its_values(colour_file, text, dtype, expected):
    x = _apply(text, colour_file)
    assert x.dtype == dtype
    np.testing.assert_allclose(x[:, 0, 0].astype(np.float64), expected,
                               rtol=1e-3 if dtype == np.float16 else 1e-12)


def test_layouts_put_the_channels_first_or_last(tmp_path, save_image):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = save_image(pixels, tmp_path / "noise.png")
    nchw, nhwc = _apply("layout=NCHW,norm=raw", path), _apply("layout=nhwc,norm=raw", path)
    assert nchw.shape == (3, 5, 7) and nhwc.shape == (5, 7, 3)
    np.testing.assert_array_equal(nhwc, pixels.astype(np.float32))  # PNG is lossless
    np.testing.assert_array_equal(nchw, nhwc.transpose(2, 0, 1))
    assert nchw.flags.c_contiguous


def test_grayscale_is_pillow_luma_in_one_channel(tmp_path, save_image, solid_image):
    path = save_image(solid_image((255, 0, 0)), tmp_path / "red.png")
    x = _apply("grayscale,norm=raw", path)
    # ITU-R 601-2 luma, L = R * 299/1000 + G * 587/1000 + B * 114/1000: 76.245 for pure red
    assert x.shape == (1, 4, 6) and np.all(x == 76.0)
    assert _apply("grayscale,layout=NHWC", path).shape == (4, 6, 1)


# ---- geometry ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "crop", "top", "left"), [
    ((10, 13), (4, 6), 3, 4),  # offsets (6/2, 7/2): 3.5 rounds to 4
    ((9, 9), (4, 4), 2, 2),  # 5/2 = 2.5 rounds to 2 (Python's and torchvision's round)
    ((8, 8), (8, 8), 0, 0),
])
def test_centre_crop_takes_the_middle(tmp_path, save_image, size, crop, top, left):
    rows, cols = np.indices(size)
    # Each pixel says where it is: red = row * 20, green = column * 15.
    pixels = np.stack([rows * 20, cols * 15, np.zeros(size)], axis=-1).astype(np.uint8)
    x = _apply(f"crop={crop[0]}x{crop[1]},norm=raw,layout=NHWC", save_image(pixels, tmp_path / "grid.png"))
    assert x.shape == (*crop, 3)
    assert (x[0, 0, 0], x[0, 0, 1]) == (top * 20, left * 15)
    assert (x[-1, -1, 0], x[-1, -1, 1]) == ((top + crop[0] - 1) * 20, (left + crop[1] - 1) * 15)


def test_resize_sets_the_shorter_side_or_the_exact_size(photo_folder):
    chelsea = read_image(photo_folder / "animals" / "chelsea.jpg")  # 451 wide, 300 high
    assert chelsea.size == (451, 300)
    # torchvision's Resize(256): the shorter side 256, the longer int(256 * 451 / 300) = 384
    assert Preprocess(resize=256).apply(chelsea).shape == (3, 256, 384)
    tall = chelsea.transpose(2)  # Image.Transpose.ROTATE_90: 300 wide, 451 high
    assert Preprocess(resize=256, layout="NHWC").apply(tall).shape == (384, 256, 3)
    assert Preprocess(resize=(100, 50)).apply(chelsea).shape == (3, 100, 50)
    assert Preprocess(resize=256, crop=224).apply(chelsea).shape == (3, 224, 224)
    # the shorter side already at the size: the pixels as they were
    np.testing.assert_array_equal(Preprocess(resize=300, norm="raw").apply(chelsea),
                                  np.asarray(chelsea).transpose(2, 0, 1))


def test_a_crop_larger_than_the_image_says_to_resize(colour_file):
    with pytest.raises(InputError, match=r"cannot crop 5x5 from an image of 4x6.*resize to at least"):
        _apply("crop=5", colour_file)


def test_exif_orientation_is_applied(tmp_path, save_image):
    # Stored 40 wide, 20 high, left half red, right half blue; orientation 6 says: turn it 90 degrees
    # clockwise to show it, so it shows 20 wide, 40 high, red on top.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20, 0] = 255
    pixels[:, 20:, 2] = 255
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    path = save_image(pixels, tmp_path / "turned.jpg", exif=exif)
    assert Image.open(path).getexif()[0x0112] == 6
    x = _apply("norm=raw,layout=NHWC", path)
    assert x.shape == (40, 20, 3)
    assert x[5, 10, 0] > 200 and x[5, 10, 2] < 50  # top: red
    assert x[35, 10, 2] > 200 and x[35, 10, 0] < 50  # bottom: blue


# ---- the text form ----------------------------------------------------------------------------------
def test_parse_reads_every_key():
    steps = Preprocess.parse(" resize=256x320 , crop=224, norm=imagenet,layout=nhwc,dtype=float16,")
    assert steps == Preprocess(resize=(256, 320), crop=(224, 224), norm="imagenet", layout="NHWC",
                               dtype="float16")
    gray = Preprocess.parse("gray,mean=0.1,std=0.3,resize=none")
    assert (gray.grayscale, gray.mean, gray.std, gray.resize) == (True, (0.1,), (0.3,), None)
    assert Preprocess.parse("grayscale=no") == Preprocess.parse("") == Preprocess()


@pytest.mark.parametrize("steps", [
    Preprocess(),
    Preprocess(resize=256, crop=224, norm="imagenet"),
    Preprocess(resize=(28, 30), grayscale=True, layout="NHWC", dtype="uint8"),
    Preprocess(norm="raw", mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), dtype="float64"),
])
def test_to_text_reads_back_as_the_same_steps(steps):
    assert Preprocess.parse(steps.to_text()) == steps


@pytest.mark.parametrize(("text", "names"), [
    ("layout=NCWH", ["layout", "NCHW or NHWC"]),
    ("norm=imagenett", ["norm", "imagenet or unit or signed or raw"]),
    ("dtype=int32", ["dtype", "float32, float16, float64, uint8, int8"]),
    ("colour=rgb", ["'colour'", "resize, crop, norm, mean, std, layout, grayscale, dtype"]),
    ("resize=0", ["resize", "whole number >= 1"]),
    ("resize=big", ["resize", "N or HxW"]),
    ("crop=1x2x3", ["crop", "N (a square NxN) or HxW"]),
    ("crop", ["crop", "crop=VALUE"]),
    ("grayscale=maybe", ["grayscale", "true or false"]),
    ("mean=a/b", ["mean", "one number or one per channel"]),
    ("mean=0.1/0.2", ["mean has 2 values for 3 channel", "one value or 3"]),
    ("std=0", ["std", "positive numbers"]),
    ("std=nan", ["std", "finite numbers"]),
    ("norm=imagenet,grayscale", ["mean has 3 values for 1 channel", "norm=imagenet"]),
    ("dtype=uint8,norm=imagenet", ["dtype=uint8 holds raw pixels", "drop norm"]),
    ("crop=2,crop=3", ["'crop' given twice"]),
])
def test_a_bad_spec_is_one_line_naming_the_key_and_the_choices(text, names):
    with pytest.raises(InputError) as caught:
        Preprocess.parse(text)
    line = str(caught.value)
    assert "\n" not in line
    for name in names:
        assert name in line


def test_the_constructor_checks_and_normalises_too():
    assert Preprocess(crop=224, layout="nhwc", mean=0.5).crop == (224, 224)
    assert Preprocess(layout="nhwc").layout == "NHWC"
    assert Preprocess(mean=0.5).mean == (0.5,)
    with pytest.raises(InputError, match="norm='bogus'"):
        Preprocess(norm="bogus")
    with pytest.raises(InputError, match="grayscale"):
        Preprocess(grayscale="yes")  # type: ignore[arg-type]


# ---- defaults for a model input ---------------------------------------------------------------------
@pytest.mark.parametrize(("shape", "dtype", "expected"), [
    ((1, 3, 224, 224), "float32", Preprocess(resize=256, crop=224, norm="imagenet")),
    ((1, 224, 224, 3), "float32", Preprocess(resize=256, crop=224, norm="imagenet", layout="NHWC")),
    ((1, 1, 28, 28), "float32", Preprocess(resize=(28, 28), norm="unit", grayscale=True)),
    ((-1, 3, 32, 48), "float16", Preprocess(resize=(32, 48), norm="imagenet", dtype="float16")),
    (("N", 3, "H", "W"), "float32", Preprocess(norm="imagenet")),
    ((1, 299, 299, 3), "uint8", Preprocess(resize=342, crop=299, layout="NHWC", dtype="uint8")),
])
def test_for_input_derives_layout_channels_size_and_norm(shape, dtype, expected):
    steps = Preprocess.for_input(shape, dtype)
    assert steps == expected
    if all(isinstance(d, int) and d > 0 for d in shape[1:]):
        chelsea = np.zeros((300, 451, 3), np.uint8)
        from PIL import Image

        assert steps.apply(Image.fromarray(chelsea).convert(
            "L" if steps.grayscale else "RGB")).shape == tuple(shape[1:])


@pytest.mark.parametrize(("shape", "dtype", "message"), [
    ((1, 784), "float32", "it has 2 axes"),
    ((1, 5, 224, 224), "float32", "cannot tell the channel axis"),
    ((1, 3, 224, 224), "int64", "dtype int64"),
])
def test_for_input_refuses_what_is_not_an_image_batch(shape, dtype, message):
    with pytest.raises(InputError, match=message):
        Preprocess.for_input(shape, dtype)


def test_a_palette_image_with_transparency_reads_as_its_colours_without_a_warning(tmp_path):
    from PIL import Image

    image = Image.new("P", (3, 2))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((2, 1), 1)
    image.save(tmp_path / "palette.png", transparency=b"\x80\x00")  # alpha per index: bytes in Pillow
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels = read_image(tmp_path / "palette.png")
    assert pixels.mode == "RGB"
    assert pixels.getpixel((0, 0)) == (255, 0, 0) and pixels.getpixel((2, 1)) == (0, 0, 255)
