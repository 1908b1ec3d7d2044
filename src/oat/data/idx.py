"""MNIST and Fashion-MNIST in their official IDX format, gzipped or not.

IDX layout: a 4-byte magic (two zero bytes, a type code, the number of dimensions),
then one big-endian uint32 per dimension, then the values. We accept only unsigned
bytes (type 0x08): 3 dimensions for images, 1 for labels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from oat.data.arrays import ArrayDataset, make_dataset
from oat.data.files import find_dir, read_bytes, resolve_file
from oat.errors import DataError

IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Where the Debian package dataset-fashion-mnist installs the files.
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def parse_idx(data: bytes, magic: int, path: Path, what: str) -> np.ndarray:
    """Parses one IDX file and checks its magic number and length.

    Args:
        data: Whole (decompressed) file contents.
        magic: Expected magic number (``IMAGE_MAGIC`` or ``LABEL_MAGIC``).
        path: File path, for messages.
        what: Data set name, for messages.

    Returns:
        A uint8 array of the header's shape.
    """
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{what}: {path} is {len(data)} bytes, shorter than an IDX header; truncated?")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(
            f"{what}: {path} has magic number 0x{found:08x}, expected 0x{magic:08x} (not an IDX file?)"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(
            f"{what}: {path} is {len(data)} bytes, expected {expected} for shape {dims}; truncated?"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_idx_split(folder: Path, split: str, what: str) -> ArrayDataset:
    """Reads one split (``train`` or ``test``) of 28×28 grey images and their labels."""
    image_name, label_name = SPLIT_FILES[split]
    image_path = resolve_file(folder, image_name)
    label_path = resolve_file(folder, label_name)
    images = parse_idx(read_bytes(image_path, what), IMAGE_MAGIC, image_path, what)
    labels = parse_idx(read_bytes(label_path, what), LABEL_MAGIC, label_path, what)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{what}: {image_path} holds images of {images.shape[1:]}, expected (28, 28)")
    return make_dataset(images[:, None], labels.astype(np.int64), 10, f"{what} {split}")


def idx_dir(root: str | os.PathLike, what: str) -> Path:
    """Returns the folder with the four IDX files under ``root`` (or ``root/<name>``, ``root/<name>/raw``)."""
    required = tuple(name for pair in SPLIT_FILES.values() for name in pair)
    subdirs = (what, f"{what}/raw", what.upper(), f"{what.upper()}/raw", what.replace("-", "_"))
    return find_dir(root, subdirs, required, what)


def load_mnist(root: str | os.PathLike, what: str = "mnist") -> tuple[ArrayDataset, ArrayDataset]:
    """Returns (train, test) of MNIST or Fashion-MNIST from IDX files under ``root``."""
    folder = idx_dir(root, what)
    return load_idx_split(folder, "train", what), load_idx_split(folder, "test", what)


def fashion_system_dir() -> Path:
    """Returns the Debian package's folder, or raises a DataError saying how to get the files."""
    if (FASHION_SYSTEM_DIR / SPLIT_FILES["train"][0]).is_file():
        return FASHION_SYSTEM_DIR
    raise DataError(
        f"fashion-mnist: no files in {FASHION_SYSTEM_DIR}; run `apt-get install dataset-fashion-mnist` "
        "or pass --data-dir with the four IDX files (or --download)"
    )
