"""CIFAR-10 and CIFAR-100 in their official "python version" pickle batches.

Each batch is a pickled dict with ``data`` (N × 3072 uint8, channel-major rows of
32×32) and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100). Unpickling is only
done here because pickle IS the official format, and only through
:mod:`oat.data.safe_pickle`: a crafted file can neither run code nor make the loader
allocate or traverse far more than its own size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from oat.data import safe_pickle
from oat.data.arrays import ArrayDataset, make_dataset
from oat.data.files import find_dir
from oat.errors import DataError

LAYOUTS = {
    # name: (folder, train files, test files, label key, classes)
    "cifar10": (
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        b"labels",
        10,
    ),
    "cifar100": ("cifar-100-python", ("train",), ("test",), b"fine_labels", 100),
}


LABEL_KEYS = (b"labels", b"fine_labels", b"coarse_labels")
OFFICIAL_KEYS = {b"data", b"batch_label", b"filenames", *LABEL_KEYS}


def read_batch(path: Path, label_key: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one pickle batch and returns (images uint8 (N, 3, 32, 32), labels int64 (N,)).

    The pickle is scanned before it is unpickled and must hold exactly the official
    structure (see :mod:`oat.data.safe_pickle` and :func:`check_batch`).
    """
    try:
        batch = safe_pickle.load(path.read_bytes())
    except DataError as exc:
        raise DataError(f"{what}: {path} is refused as a data file: {exc}") from None
    except Exception as exc:  # truncated pickles raise many types: EOFError, UnpicklingError, ValueError...
        raise DataError(
            f"{what}: cannot unpickle {path} ({exc.__class__.__name__}: {exc}); truncated or corrupt?"
        ) from exc
    return check_batch(batch, label_key, f"{what}: {path}")


def check_batch(batch, label_key: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The official structure: a dict of ``data`` (uint8 (N, 3072) array or bytes), the label
    lists of ints, and optionally ``batch_label`` (str) and ``filenames`` (N str); nothing else."""
    if not isinstance(batch, dict):
        raise DataError(f"{where} holds a {type(batch).__name__}, expected a dict batch")
    if not all(isinstance(k, (str, bytes)) for k in batch):
        raise DataError(f"{where} has keys that are not strings; not a CIFAR batch")
    batch = {k.encode() if isinstance(k, str) else k: v for k, v in batch.items()}
    if b"data" not in batch or label_key not in batch:
        keys = sorted(k.decode(errors="replace") for k in batch)
        raise DataError(f"{where} has keys {keys}, expected 'data' and '{label_key.decode()}' "
                        "(files of another data set?)")
    extra = sorted(k.decode(errors="replace") for k in batch if k not in OFFICIAL_KEYS)
    if extra:
        raise DataError(f"{where} has keys {extra} that no official CIFAR batch has")
    data = _data(batch[b"data"], where)
    labels = None
    for key in LABEL_KEYS:
        if key in batch:
            values = _int_list(batch[key], len(data), f"{where} {key.decode()}")
            labels = values if key == label_key else labels
    if not isinstance(batch.get(b"batch_label", b""), (str, bytes)):
        raise DataError(f"{where} batch_label is not a string")
    names = batch.get(b"filenames", [b""] * len(data))
    if not isinstance(names, list) or len(names) != len(data) or not all(isinstance(v, (str, bytes)) for v in names):
        raise DataError(f"{where} filenames is not a list of {len(data)} strings")
    return data.reshape(-1, 3, 32, 32), labels


def _data(data, where: str) -> np.ndarray:
    if isinstance(data, (bytes, bytearray)) and len(data) % 3072 == 0:
        data = np.frombuffer(bytearray(data), np.uint8).reshape(-1, 3072)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where} data is {desc}, expected uint8 (N, 3072)")
    return data


def _int_list(values, n: int, where: str) -> np.ndarray:
    """Labels: a flat list (or 1-D integer array) of ``n`` non-negative ints, never traversed deeper."""
    if isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype.kind in "iu":
        values = values.tolist()
    if not isinstance(values, list) or len(values) != n:
        raise DataError(f"{where} is not a list of {n} labels")
    if not all(type(v) is int and 0 <= v < 2**31 for v in values):
        raise DataError(f"{where} holds something other than non-negative integer labels")
    return np.asarray(values, dtype=np.int64)


def load_cifar(root: str | os.PathLike, what: str = "cifar10") -> tuple[ArrayDataset, ArrayDataset]:
    """Returns (train, test) of CIFAR-10 or CIFAR-100 from ``root`` or ``root/<official folder>``."""
    folder_name, train_files, test_files, label_key, classes = LAYOUTS[what]
    folder = find_dir(root, (folder_name,), train_files + test_files, what)
    splits = []
    for split, files in (("train", train_files), ("test", test_files)):
        parts = [read_batch(folder / name, label_key, what) for name in files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        splits.append(make_dataset(images, labels, classes, f"{what} {split}"))
    return splits[0], splits[1]
