"""How an image becomes a model's input tensor: resize, centre crop, normalise, lay out, cast.

The geometry follows torchvision's evaluation transforms (``Resize(n)`` keeps the aspect ratio and
sets the shorter side, ``CenterCrop`` rounds the offsets), so a model exported from PyTorch sees
the pixels it was validated on. Pillow is imported only inside the functions that resize, so
importing this module costs numpy alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from splitinfer.errors import InputError
from splitinfer.units import check_number

if TYPE_CHECKING:
    from PIL.Image import Image

# name -> (pixel scale, mean, std): a value is (pixel * scale - mean) / std, per channel.
NORMS: dict[str, tuple[float, tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "unit": (1 / 255, (0.0,), (1.0,)),  # [0, 1]
    "signed": (1 / 255, (0.5,), (0.5,)),  # [-1, 1]
    "raw": (1.0, (0.0,), (1.0,)),  # 0..255
}
LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("float32", "float16", "float64", "uint8", "int8")
# Integer inputs are quantised models' raw pixels: uint8 as read, int8 shifted by -128 (the usual
# zero point of a symmetric int8 input); a normalisation would not fit in them.
_INTEGER_DTYPES = ("uint8", "int8")
KEYS = ("resize", "crop", "norm", "mean", "std", "layout", "grayscale", "dtype")
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")
# The share of the resized image a square centre crop keeps (224 of 256): ImageNet's evaluation.
_CROP_FRACTION = 0.875


def _bad(key: str, value: object, allowed: str) -> InputError:
    return InputError(f"preprocess {key}={value!r} is not valid", f"use {allowed}")


def _size(key: str, value: object, *, pair_only: bool) -> int | tuple[int, int] | None:
    """An int (a shorter side) or an (H, W) pair of positive whole numbers; a crop's int is square."""
    allowed = ("N (a square NxN) or HxW" if pair_only else "N (the shorter side) or HxW (exact)") + \
        ", positive whole numbers"
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise _bad(key, value, allowed)
        h, w = (int(check_number(v, f"preprocess {key}", low=1, whole=True, error=InputError,
                                 fix=f"{key} is {allowed}")) for v in value)
        return h, w
    n = int(check_number(value, f"preprocess {key}", low=1, whole=True, error=InputError,
                         fix=f"{key} is {allowed}"))
    return (n, n) if pair_only else n


def _floats(key: str, value: object) -> tuple[float, ...] | None:
    if value is None:
        return None
    values = value if isinstance(value, Sequence) and not isinstance(value, str) else (value,)
    return tuple(float(check_number(v, f"preprocess {key}", error=InputError,
                                    fix=f"{key} is one number or one per channel")) for v in values)


@dataclass(frozen=True)
class Preprocess:
    """The steps from an image file to one sample of a model input (without the batch axis).

    ``resize``: an int sets the shorter side (aspect kept), an (H, W) pair the exact size; None keeps
    the image's size. ``crop``: a centre crop to (H, W) (an int is square), after the resize.
    ``norm``: a preset of :data:`NORMS` (None: ``unit`` for float dtypes, ``raw`` for integer ones);
    ``mean``/``std`` replace the preset's and are on its pixel scale ([0, 1], or 0..255 for ``raw``),
    one value or one per channel. ``dtype`` uint8 is the raw pixels, int8 the pixels minus 128.
    """

    resize: int | tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    norm: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str = "NCHW"
    grayscale: bool = False
    dtype: str = "float32"

    def __post_init__(self) -> None:
        # Normalised here so that equal steps compare equal, however they were written.
        set_ = object.__setattr__
        set_(self, "resize", _size("resize", self.resize, pair_only=False))
        set_(self, "crop", _size("crop", self.crop, pair_only=True))
        set_(self, "mean", _floats("mean", self.mean))
        set_(self, "std", _floats("std", self.std))
        set_(self, "layout", self.layout.upper() if isinstance(self.layout, str) else self.layout)
        if self.norm is not None and self.norm not in NORMS:
            raise _bad("norm", self.norm, " or ".join(NORMS))
        if self.layout not in LAYOUTS:
            raise _bad("layout", self.layout, " or ".join(LAYOUTS))
        if self.dtype not in DTYPES:
            raise _bad("dtype", self.dtype, ", ".join(DTYPES))
        if not isinstance(self.grayscale, bool):
            raise _bad("grayscale", self.grayscale, "true or false")
        if self.dtype in _INTEGER_DTYPES and (self.norm not in (None, "raw") or self.mean or self.std):
            raise InputError(f"preprocess dtype={self.dtype} holds raw pixels, but norm, mean or std is set",
                             "drop norm, mean and std, or use dtype=float32")
        _, mean, std = self.normalisation()
        if any(s <= 0 for s in std):
            raise _bad("std", "/".join(f"{s:g}" for s in std), "positive numbers")
        for key, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, self.channels):
                raise InputError(
                    f"preprocess {key} has {len(values)} values for {self.channels} channel(s)"
                    + (f" (norm={self.norm})" if self.norm and getattr(self, key) is None else ""),
                    f"give {key}= one value" + (f" or {self.channels}, separated by '/'"
                                                if self.channels > 1 else ""))

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    def normalisation(self) -> tuple[float, tuple[float, ...], tuple[float, ...]]:
        """(pixel scale, mean, std) after the preset and its overrides."""
        norm = self.norm or ("raw" if self.dtype in _INTEGER_DTYPES else "unit")
        scale, mean, std = NORMS[norm]
        return scale, self.mean or mean, self.std or std

    # ---- text form -------------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> Preprocess:
        """Steps from ``key=value`` pairs separated by commas: ``"resize=256,crop=224,norm=imagenet"``.

        Keys: resize (N or HxW), crop (N or HxW), norm (imagenet, unit, signed, raw), mean and std
        (one value or per channel, '/' between), layout (NCHW, NHWC), grayscale (a bare key or
        true/false), dtype. An empty text gives the defaults.
        """
        given: dict[str, Any] = {}
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            key, eq, value = (s.strip() for s in item.partition("="))
            key = {"gray": "grayscale"}.get(key.lower(), key.lower())
            if key not in KEYS:
                raise InputError(f"unknown preprocess key {key!r} in {text!r}", f"use {', '.join(KEYS)}")
            if key in given:
                raise InputError(f"preprocess key {key!r} given twice in {text!r}", "give each key once")
            if not eq and key != "grayscale":
                raise _bad(key, "", f"{key}=VALUE")
            given[key] = _parse_value(key, value if eq else "true")
        return cls(**given)

    def to_text(self) -> str:
        """The text :meth:`parse` reads back as these steps (defaults left out)."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            if isinstance(value, tuple) and f.name in ("resize", "crop"):
                value = "x".join(map(str, value))
            elif isinstance(value, tuple):
                value = "/".join(f"{v:g}" for v in value)
            elif isinstance(value, bool):
                value = str(value).lower()
            parts.append(f"{f.name}={value}")
        return ",".join(parts)

    # ---- from a model input ----------------------------------------------------------------------
    @classmethod
    def for_input(cls, shape: Sequence[int | str | None], dtype: str = "float32") -> Preprocess:
        """Steps that make an image fit a model input of ``shape`` (N first, then CHW or HWC).

        One or three channels in axis 1 is NCHW, else in axis 3 NHWC. Three channels get the
        ImageNet normalisation, one channel [0, 1] grayscale. A square input of 64 or more is
        resized to 1/0.875 of its side and centre-cropped (ImageNet's evaluation); a smaller or
        oblong one is resized exactly; symbolic height or width leaves the size alone.
        """
        dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
        if len(dims) != 4:
            raise InputError(f"cannot derive image preprocessing for input shape {list(shape)}: "
                             f"it has {len(dims)} axes, an image batch has 4",
                             "give the preprocessing explicitly (e.g. resize=256,crop=224,norm=imagenet)")
        if dims[1] in (1, 3):
            layout, (channels, h, w) = "NCHW", dims[1:]
        elif dims[3] in (1, 3):
            layout, (h, w, channels) = "NHWC", dims[1:]
        else:
            raise InputError(f"cannot tell the channel axis of input shape {list(shape)}: neither axis 1 "
                             "nor axis 3 has 1 or 3 channels",
                             "give the preprocessing explicitly with layout=NCHW or layout=NHWC")
        if dtype not in DTYPES:
            raise InputError(f"cannot feed images to an input of dtype {dtype}",
                             f"use one of {', '.join(DTYPES)}")
        integer = dtype in _INTEGER_DTYPES
        norm = None if integer else "imagenet" if channels == 3 else "unit"  # None: raw, for integers
        resize: int | tuple[int, int] | None = None
        crop: tuple[int, int] | None = None
        if h is not None and w is not None:
            if h == w and h >= 64:
                resize, crop = round(h / _CROP_FRACTION), (h, w)
            else:
                resize = (h, w)
        return cls(resize=resize, crop=crop, norm=norm, layout=layout, grayscale=channels == 1, dtype=dtype)

    # ---- applying --------------------------------------------------------------------------------
    def apply(self, image: Image) -> np.ndarray:
        """One sample from a Pillow image already in RGB or L mode (see ``read_image``)."""
        return self.normalise(self.crop_centre(np.asarray(self.resized(image))))

    def resized(self, image: Image) -> Image:
        if self.resize is None:
            return image
        from PIL import Image as PILImage

        w, h = image.size
        if isinstance(self.resize, int):
            # torchvision's Resize(int): the shorter side becomes N, the longer one is truncated.
            short, long = (w, h) if w <= h else (h, w)
            if short == self.resize:
                return image
            other = int(self.resize * long / short)
            size = (self.resize, other) if w <= h else (other, self.resize)
        else:
            size = (self.resize[1], self.resize[0])
        return image.resize(size, PILImage.Resampling.BILINEAR) if size != image.size else image

    def crop_centre(self, pixels: np.ndarray) -> np.ndarray:
        """The centre ``crop`` of an H x W (x C) pixel array, offsets rounded as torchvision does."""
        if self.crop is None:
            return pixels
        (ch, cw), (h, w) = self.crop, pixels.shape[:2]
        if ch > h or cw > w:
            raise InputError(f"cannot crop {ch}x{cw} from an image of {h}x{w} (after resize={self.resize})",
                             f"resize to at least the crop size (e.g. resize={max(ch, cw)})")
        top, left = round((h - ch) / 2.0), round((w - cw) / 2.0)
        return pixels[top:top + ch, left:left + cw]

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """One sample from H x W (x C) uint8 pixels: normalised, cast, channels where ``layout`` says."""
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if pixels.shape[2] != self.channels:
            raise InputError(f"an image has {pixels.shape[2]} channel(s), the preprocessing makes "
                             f"{self.channels}", "read images with read_image, which converts them")
        if self.dtype == "uint8":
            out = pixels.astype(np.uint8, copy=True)
        elif self.dtype == "int8":
            out = (pixels.astype(np.int16) - 128).astype(np.int8)
        else:
            scale, mean, std = self.normalisation()
            # float16 is computed in float32 and rounds once, at the end.
            work = np.float64 if self.dtype == "float64" else np.float32
            x = pixels.astype(work) * work(scale)
            x = (x - np.asarray(mean, work)) / np.asarray(std, work)
            out = x.astype(self.dtype, copy=False)
        return np.ascontiguousarray(out.transpose(2, 0, 1) if self.layout == "NCHW" else out)


def _parse_value(key: str, value: str) -> object:
    low = value.lower()
    if key in ("resize", "crop"):
        if low == "none":
            return None
        try:
            parts = [int(p) for p in low.split("x")]
        except ValueError:
            raise _bad(key, value, "N or HxW, e.g. 256 or 224x224") from None
        return parts[0] if len(parts) == 1 else parts
    if key in ("mean", "std"):
        try:
            numbers = [float(p) for p in value.split("/")]
        except ValueError:
            raise _bad(key, value, "one number or one per channel separated by '/', e.g. 0.5/0.5/0.5") \
                from None
        if not all(math.isfinite(n) for n in numbers):
            raise _bad(key, value, "finite numbers")
        return numbers
    if key == "grayscale":
        if low not in _TRUE + _FALSE:
            raise _bad(key, value, "true or false")
        return low in _TRUE
    if key == "norm" and low == "none":
        return None
    return low if key in ("norm", "dtype") else value
