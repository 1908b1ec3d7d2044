"""SVHN (cropped digits, format 2) from its official MATLAB files.

``train_32x32.mat`` / ``test_32x32.mat`` hold ``X`` as (32, 32, 3, N) uint8 and ``y``
as (N, 1) with labels 1..10, where 10 stands for the digit 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from oat.data.arrays import ArrayDataset, make_dataset
from oat.data.files import find_dir
from oat.errors import DataError

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def read_mat(path: Path, what: str) -> ArrayDataset:
    """Reads one SVHN ``.mat`` file into an ``ArrayDataset`` of (N, 3, 32, 32) images."""
    from scipy.io import loadmat  # local import: scipy.io is slow to import

    try:
        mat = loadmat(str(path), variable_names=("X", "y"))
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError... on damaged files
        raise DataError(
            f"{what}: cannot read {path} ({exc.__class__.__name__}: {exc}); truncated or corrupt?"
        ) from exc
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{what}: {path} lacks variables X and y; expected the official SVHN format 2 file")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"{what}: {path} X is {x.dtype} {x.shape}, expected uint8 (32, 32, 3, N)")
    labels = y.astype(np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f"{what}: {path} labels range {labels.min()}..{labels.max()}, expected 1..10")
    labels[labels == 10] = 0  # SVHN writes the digit 0 as class 10
    return make_dataset(x.transpose(3, 2, 0, 1), labels, 10, f"{what} {path.stem}")


def load_svhn(root: str | os.PathLike, what: str = "svhn") -> tuple[ArrayDataset, ArrayDataset]:
    """Returns (train, test) of SVHN from ``root`` or ``root/svhn``."""
    folder = find_dir(root, ("svhn", "SVHN"), tuple(FILES.values()), what)
    return read_mat(folder / FILES["train"], what), read_mat(folder / FILES["test"], what)
