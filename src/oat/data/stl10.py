"""STL-10 (96×96, 10 classes) from the official binary files in ``stl10_binary/``.

``*_X.bin`` is raw uint8, each image stored channel by channel in column-major order
(MATLAB's), so it is read as (N, 3, 96, 96) and the last two axes swapped.
``*_y.bin`` is one uint8 label per image, 1..10. The 100,000 unlabelled images are not
used: adversarial training here is supervised.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from oat.data.arrays import ArrayDataset, make_dataset
from oat.data.files import find_dir
from oat.errors import DataError

FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin")}
IMAGE_BYTES = 3 * 96 * 96


def read_split(folder: Path, split: str, what: str) -> ArrayDataset:
    """Reads one split's image and label files and checks their sizes against each other."""
    x_path, y_path = (folder / name for name in FILES[split])
    try:
        x = np.fromfile(x_path, dtype=np.uint8)
        y = np.fromfile(y_path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{what}: cannot read {x_path} or {y_path} ({exc})") from exc
    if x.size % IMAGE_BYTES:
        raise DataError(
            f"{what}: {x_path} is {x.size} bytes, not a multiple of {IMAGE_BYTES} (3×96×96); "
            "truncated or another data set?"
        )
    n = x.size // IMAGE_BYTES
    if y.size != n:
        raise DataError(
            f"{what}: {x_path} holds {n} images but {y_path} {y.size} labels, expected equal counts"
        )
    labels = y.astype(np.int64)
    if n and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f"{what}: {y_path} labels range {labels.min()}..{labels.max()}, expected 1..10")
    images = x.reshape(n, 3, 96, 96).transpose(0, 1, 3, 2)  # column-major -> row-major
    return make_dataset(images, labels - 1, 10, f"{what} {split}")


def load_stl10(root: str | os.PathLike, what: str = "stl10") -> tuple[ArrayDataset, ArrayDataset]:
    """Returns (train, test) of STL-10 from ``root`` or ``root/stl10_binary``."""
    required = tuple(name for pair in FILES.values() for name in pair)
    folder = find_dir(root, ("stl10_binary",), required, what)
    return read_split(folder, "train", what), read_split(folder, "test", what)
