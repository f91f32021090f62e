"""Reading image files with Pillow, and finding them in an image folder.

Pillow is imported inside :func:`read_image`, so that importing the package does not load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from splitinfer.errors import InputError, first_line

if TYPE_CHECKING:
    from PIL.Image import Image

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pbm", ".pnm"})
# The only formats Pillow may decode, whatever a file's name says. Pillow would otherwise guess from
# the bytes, and a few of its formats run a program (EPS starts Ghostscript): a data set is data.
# (JPEG's opener also returns the MPO files of many cameras.)
PILLOW_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | Path, *, grayscale: bool = False) -> Image:
    """The image at ``path``, upright (its EXIF orientation applied), in RGB or L (``grayscale``) mode.

    An unreadable, corrupt or truncated file, or one in another format, is an ``InputError`` with
    Pillow's reason.
    """
    from PIL import Image as PILImage
    from PIL import ImageOps

    # Every plugin registered first: a format this Pillow was built without is left out, not a
    # KeyError for every file.
    PILImage.init()
    formats = [f for f in PILLOW_FORMATS if f in PILImage.OPEN]
    try:
        with PILImage.open(path, formats=formats) as opened:
            image = ImageOps.exif_transpose(opened)  # a loaded copy, whatever the tag says
    except FileNotFoundError:
        raise InputError(f"image {path} does not exist", "check the path") from None
    # Broad on purpose: Pillow's decoders raise OSError, ValueError, SyntaxError, struct.error,
    # DecompressionBombError and others for bytes they cannot read; each is one bad file.
    except Exception as e:
        raise InputError(f"cannot read image {path}: {first_line(e)}",
                         "replace the file with a JPEG, PNG, BMP, GIF, TIFF, WebP or PPM image, "
                         "or remove it") from None
    if image.mode.startswith("I;16"):
        # Pillow clips 16-bit pixels at 255 when it converts them: keep their top 8 bits instead.
        image = PILImage.fromarray((np.asarray(image) >> 8).astype(np.uint8))
    elif image.mode in ("I", "F"):
        raise InputError(f"image {path} has 32-bit pixels (Pillow mode {image.mode}), with no range to "
                         "scale them to 0..255 from", "convert it to an 8-bit image, or give arrays (.npy)")
    elif image.mode == "P":
        # Through RGBA: Pillow warns when a palette with transparency goes straight to RGB.
        image = image.convert("RGBA")
    return image.convert("L" if grayscale else "RGB")


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if is_image_file(p) and _visible(p, folder) and p.is_file())


def scan_image_folder(root: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """(files, labels, class names) of an image folder.

    With sub-folders holding images, each sub-folder is a class (sorted by name, its images found
    at any depth), as torchvision's ``ImageFolder`` reads it, so labels match a model trained that
    way; else the folder's own images, without labels. Hidden files and folders are skipped, and
    so are files without an image extension.
    """
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    files = [p for p in entries if p.is_file() and is_image_file(p)]
    folders = [p for p in entries if p.is_dir()]
    per_class = [_images_under(folder) for folder in folders]
    if any(per_class):
        if files:
            raise InputError(f"image folder {root} has both images ({files[0].name}, ...) and class "
                             f"folders ({folders[0].name}, ...)",
                             "move the images into class folders, or the class folders out")
        paths = [p for images in per_class for p in images]
        labels = [label for label, images in enumerate(per_class) for _ in images]
        return paths, labels, [folder.name for folder in folders]
    if not files:
        raise InputError(f"folder {root} holds no images",
                         f"put image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in it, directly or "
                         "in one sub-folder per class")
    return files, None, None
