"""Data in: image folders, arrays and single images as model inputs, with their labels.

``load_dataset`` reads a path into a ``Dataset`` (``x`` N first, optional ``y`` and class names);
``Preprocess`` turns images into tensors (resize, centre crop, normalise, layout, dtype);
``read_labels`` and ``top_k`` name a classifier's outputs. Pillow is imported only when an
image is read.
"""

from __future__ import annotations

from splitinfer.data.dataset import Dataset, load_dataset
from splitinfer.data.images import IMAGE_EXTENSIONS, read_image
from splitinfer.data.labels import read_labels, top_k
from splitinfer.data.preprocess import NORMS, Preprocess

__all__ = ["IMAGE_EXTENSIONS", "NORMS", "Dataset", "Preprocess", "load_dataset", "read_image", "read_labels",
           "top_k"]
