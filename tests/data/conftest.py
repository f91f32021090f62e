"""Image files for the data tests: scikit-image's photographs in an image-folder layout, and
small synthetic images whose pixels a test can compute by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# class folder -> (file name, scikit-image photograph); camera is grayscale, the others RGB.
PHOTOS = {
    "animals": [("chelsea.jpg", "chelsea"), ("coffee.png", "coffee")],
    "objects": [("astronaut.jpg", "astronaut"), ("camera.png", "camera"), ("rocket.jpeg", "rocket")],
}


def save(array: np.ndarray, path: Path, **options) -> Path:
    """``array`` (H x W or H x W x 3 uint8) written to ``path`` in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def solid(colour: tuple[int, int, int], height: int = 4, width: int = 6) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, np.uint8), (height, width, 3)).copy()


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """animals/{chelsea.jpg, coffee.png}, objects/{astronaut.jpg, camera.png, rocket.jpeg}, plus
    files a loader must skip: a README, a hidden image, hidden folders of images."""
    skimage_data = pytest.importorskip("skimage.data")
    root = tmp_path_factory.mktemp("photos")
    for folder, photos in PHOTOS.items():
        for name, photo in photos:
            save(getattr(skimage_data, photo)(), root / folder / name)
    (root / "objects" / "README.txt").write_text("not an image\n")
    save(solid((1, 2, 3)), root / "animals" / ".hidden.png")
    save(solid((1, 2, 3)), root / ".thumbnails" / "x.png")
    save(solid((1, 2, 3)), root / "objects" / ".cache" / "x.png")
    return root


@pytest.fixture
def save_image():
    """:func:`save`: an array written as an image file."""
    return save


@pytest.fixture
def solid_image():
    """:func:`solid`: an array of one colour."""
    return solid
