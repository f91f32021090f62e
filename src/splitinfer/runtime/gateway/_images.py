"""Image bodies (JPEG, PNG) to a model input, and a classifier's top labels for the answer.

An image body is decoded with Pillow from the bytes :func:`~._bodies.read_body` already read within
the body size limit, then preprocessed by a :class:`~splitinfer.data.Preprocess` (the app's, by
default ``Preprocess.for_input`` of the model's input). Pillow is imported when the first image
arrives. Decoding runs outside the event loop (see ``app.py``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from splitinfer.data import Preprocess, top_k
from splitinfer.errors import InputError, first_line

if TYPE_CHECKING:
    from PIL.Image import Image

    from splitinfer.types import TensorSpec

IMAGE_TYPES = ("image/jpeg", "image/png")
_FORMATS = ("JPEG", "PNG")  # the only decoders Pillow may use, whatever the bytes claim to be
# A compressed body can decode to far more memory than it takes on the wire (a decompression bomb):
# an image is refused before its pixels are decoded when it has more than this many pixels (6000 x
# 6000 RGB is 108 MB decoded). Pillow's own limit (Image.MAX_IMAGE_PIXELS, ~89 M, an error at twice
# it) holds too: the lower of the two applies.
MAX_IMAGE_PIXELS = 36_000_000
NUM_TOP = 5
_FIX = "send a JPEG or PNG photograph (Content-Type image/jpeg or image/png)"


def image_steps(inputs: Sequence[TensorSpec], preprocess: Preprocess | None) -> Preprocess | InputError:
    """How an image body becomes the model's one input: ``preprocess``, else the steps its shape
    suggests; an image request gets the returned :class:`InputError` when there are none."""
    if len(inputs) != 1:
        return InputError(f"the model has {len(inputs)} inputs, an image fills one",
                          'send JSON: {"inputs": {name: {"dtype", "shape", "data"}}}')
    if preprocess is not None:
        return preprocess
    try:
        return Preprocess.for_input(inputs[0].shape, inputs[0].dtype)
    except InputError as e:
        return InputError(f"the gateway cannot make an image into input {inputs[0].name!r} ({e.problem})",
                          "send .npy or JSON, or start the gateway with a preprocessing "
                          "(splitinfer serve --preprocess)")


def decode_image(body: bytes | bytearray, *, grayscale: bool = False,
                 max_pixels: int = MAX_IMAGE_PIXELS) -> Image:
    """The JPEG or PNG image in ``body``, upright (EXIF orientation applied), in RGB or L mode.

    Anything else (another format, truncated or corrupt bytes, more than ``max_pixels`` pixels) is an
    :class:`InputError` with one line saying why, raised before a refused image's pixels are decoded.
    """
    from PIL import Image as PILImage
    from PIL import ImageOps

    limit = min(max_pixels, PILImage.MAX_IMAGE_PIXELS or max_pixels)
    try:
        with PILImage.open(io.BytesIO(body), formats=_FORMATS) as opened:  # reads the header only
            width, height = opened.size
            if width * height > limit:
                raise InputError(f"the image is {width}x{height} pixels, the limit is {limit} pixels",
                                 "send a smaller image (resize it before sending)")
            image = ImageOps.exif_transpose(opened)  # decodes: a loaded copy
    except InputError:
        raise
    # Broad on purpose: Pillow's decoders raise UnidentifiedImageError, OSError, ValueError,
    # SyntaxError, struct.error, DecompressionBombError and others for bytes they cannot read.
    except Exception as e:
        raise InputError(f"the body is not a readable JPEG or PNG image ({_reason(e)})", _FIX) from None
    if image.mode.startswith("I;16"):  # 16-bit PNG: its top 8 bits (Pillow would clip at 255)
        image = PILImage.fromarray((np.asarray(image) >> 8).astype(np.uint8))
    elif image.mode in ("I", "F"):
        raise InputError(f"the image has 32-bit pixels (Pillow mode {image.mode})", "send an 8-bit image")
    elif image.mode == "P":  # through RGBA: a palette with transparency warns when it goes to RGB
        image = image.convert("RGBA")
    return image.convert("L" if grayscale else "RGB")


def _reason(error: Exception) -> str:
    text = first_line(error)
    if "cannot identify image file" in text:
        return "Pillow cannot identify it"
    return text[:200]


def image_feeds(body: bytes | bytearray, spec: TensorSpec, steps: Preprocess) -> dict[str, np.ndarray]:
    """The feeds of a single-input model from an image body: decoded, preprocessed and, for an input
    with a fixed batch, repeated into every slot."""
    sample = steps.apply(decode_image(body, grayscale=steps.grayscale))
    batch = spec.shape[0] if isinstance(spec.shape[0], int) and spec.shape[0] > 0 else 1
    return {spec.name: np.repeat(sample[None], batch, axis=0)}


def classifier_output(outputs: Sequence[TensorSpec]) -> TensorSpec | None:
    """The first output that holds class scores (N x C, C >= 2, a fixed C), or None."""
    return next((s for s in outputs if len(s.shape) == 2 and isinstance(s.shape[1], int) and s.shape[1] >= 2),
                None)


def check_labels(labels: Sequence[str], outputs: Sequence[TensorSpec] | None, name: str) -> list[str]:
    """``labels`` as a list, checked against the model's classifier output when ``outputs`` are known."""
    if isinstance(labels, str) or not all(isinstance(x, str) for x in labels) or not labels:
        raise InputError(f"{name} is not a list of class names", "give one name per class, label 0 first")
    if outputs is not None:
        out = classifier_output(outputs)
        if out is None:
            raise InputError(f"{name} are given, but no output of the model holds class scores (N x C)",
                             "serve without labels")
        if out.shape[1] != len(labels):
            raise InputError(f"{name} has {len(labels)} names, output {out.name!r} has {out.shape[1]} "
                             "classes", "use the label file made for this model")
    return list(labels)


def top_labels(outputs: dict[str, np.ndarray], labels: Sequence[str], num_samples: int | None) -> Any:
    """``{"output": name, "top5": [[{"label", "score"}, ...] per sample]}`` for the first output of
    class scores with as many classes as ``labels`` (None when there is none); ``num_samples``: at most
    this many rows (an image request: 1)."""
    name, scores = next(((n, v) for n, v in outputs.items()
                         if v.ndim == 2 and v.shape[1] == len(labels) and v.dtype.kind in "iuf"),
                        (None, None))
    if scores is None:
        return None
    rows = scores[:num_samples] if num_samples is not None else scores
    return {"output": name, f"top{NUM_TOP}": [[{"label": label, "score": score}
                                               for label, score in top_k(row, NUM_TOP, labels)]
                                              for row in rows]}
