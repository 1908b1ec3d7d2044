"""Writers of tiny files in each data set's exact official format, for the loader tests."""

from __future__ import annotations

import gzip
import pickle
import tarfile
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
    """Returns ``array`` (uint8) as an IDX file: magic 0x0000 08 <ndim>, big-endian dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx_set(folder: Path, n_train: int = 30, n_test: int = 10, gz: bool = True, seed: int = 0) -> Path:
    """Writes the four MNIST-style IDX files (gzipped or plain) into ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            data = idx_bytes(array)
            name = f"{prefix}-{kind}"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder


def cifar_batch(n: int, classes: int, label_key: str, rng: np.random.Generator) -> dict:
    """Returns a dict shaped like an official CIFAR batch, with bytes keys as Python 2 wrote them."""
    return {
        b"batch_label": b"fake batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key.encode(): [int(i % classes) for i in range(n)],
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_cifar10(root: Path, per_batch: int = 12, n_test: int = 10) -> Path:
    """Writes ``root/cifar-10-batches-py`` with data_batch_1..5 and test_batch."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(
            pickle.dumps(cifar_batch(per_batch, 10, "labels", rng), protocol=2)
        )
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(n_test, 10, "labels", rng), protocol=2))
    return folder


def write_cifar100(root: Path, n_train: int = 300, n_test: int = 100) -> Path:
    """Writes ``root/cifar-100-python`` with train and test."""
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        batch = cifar_batch(n, 100, "fine_labels", rng)
        batch[b"coarse_labels"] = [i % 20 for i in range(n)]
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


def write_svhn(folder: Path, n_train: int = 40, n_test: int = 12) -> Path:
    """Writes train_32x32.mat and test_32x32.mat (X (32, 32, 3, N), y (N, 1) in 1..10)."""
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8)[:, None]
        savemat(str(folder / f"{name}_32x32.mat"), {"X": x, "y": y})
    return folder


def write_stl10(root: Path, n_train: int = 20, n_test: int = 10) -> tuple[Path, np.ndarray]:
    """Writes ``root/stl10_binary`` (column-major images); returns it and the row-major train images."""
    rng = np.random.default_rng(3)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    train_images = None
    for name, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        images.transpose(0, 1, 3, 2).tofile(folder / f"{name}_X.bin")  # column-major, as MATLAB wrote it
        (np.arange(n) % 10 + 1).astype(np.uint8).tofile(folder / f"{name}_y.bin")
        train_images = images if name == "train" else train_images
    return folder, train_images


def make_tar_gz(source_dir: Path, archive: Path) -> Path:
    """Packs ``source_dir`` (as its own top-level folder) into ``archive``."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source_dir, arcname=source_dir.name)
    return archive
