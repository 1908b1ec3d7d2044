"""CIFAR-10 and CIFAR-100 in their official "python version" pickle batches.

Each batch is a pickled dict with ``data`` (N × 3072 uint8, channel-major rows of
32×32) and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100). Unpickling is only
done here because pickle IS the official format; the unpickler refuses every global
but the handful that rebuild a numpy array, so a crafted file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

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


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR batch may name: what numpy pickles an ndarray with."""
    try:  # numpy >= 2 moved the internals to numpy._core; files name either.
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = multiarray._reconstruct
        if hasattr(numeric, "_frombuffer"):  # protocol-5 pickles of arrays
            allowed[(f"{module}.numeric", "_frombuffer")] = numeric._frombuffer
    # Python 3 writes bytes objects at protocol <= 2 as _codecs.encode(str, "latin1");
    # re-saved batches contain it. It only turns a str into bytes.
    import _codecs

    allowed[("_codecs", "encode")] = _codecs.encode
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the numpy array globals listed in ``_numpy_globals``."""

    _allowed = None

    def find_class(self, module: str, name: str) -> object:
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _numpy_globals()
        try:
            return RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file") from None


def read_batch(path: Path, label_key: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one pickle batch and returns (images uint8 (N, 3, 32, 32), labels int64 (N,))."""
    try:
        # encoding="bytes": the official files are Python 2 pickles with str keys.
        batch = RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as exc:  # truncated pickles raise many types: EOFError, UnpicklingError, ValueError...
        raise DataError(
            f"{what}: cannot unpickle {path} ({exc.__class__.__name__}: {exc}); truncated or corrupt?"
        ) from exc
    if not isinstance(batch, dict):
        raise DataError(f"{what}: {path} holds a {type(batch).__name__}, expected a dict batch")
    batch = {k.encode() if isinstance(k, str) else k: v for k, v in batch.items()}
    if b"data" not in batch or label_key not in batch:
        keys = sorted(k.decode(errors="replace") for k in batch if isinstance(k, bytes))
        raise DataError(
            f"{what}: {path} has keys {keys}, expected 'data' and '{label_key.decode()}' "
            "(files of another data set?)"
        )
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{what}: {path} data is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    return data.reshape(-1, 3, 32, 32), labels


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
