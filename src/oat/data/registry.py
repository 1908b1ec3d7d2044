"""The data set registry and ``load_data``: one entry per data set, one call to get its splits."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from oat.data.arrays import ArrayDataset, DataSplits, split_train_val
from oat.data.cifar import load_cifar
from oat.data.digits import load_digits_splits
from oat.data.download import RESOURCES
from oat.data.download import download as download_files
from oat.data.idx import fashion_system_dir, load_mnist
from oat.data.stl10 import load_stl10
from oat.data.svhn import load_svhn
from oat.errors import DataError

Loader = Callable[[Path], "tuple[ArrayDataset, ArrayDataset]"]
CROP_FLIP = ("crop", "flip")
DEFAULT_ROOT = "data"  # relative to the working directory, unless OAT_DATA_DIR is set


@dataclass(frozen=True)
class DatasetSpec:
    """What ``load_data`` needs to know about one data set.

    Attributes:
        load: ``root -> (train, test)``, reading the official files.
        num_classes: Number of classes.
        image_shape: (C, H, W).
        default_eps: Customary L∞ budget in [0, 1] pixel units.
        augment: Customary augmentations for ``DeviceLoader``.
        val_size: Default number of validation examples drawn from train.
        needs_root: False for data bundled with a package (digits).
    """

    load: Loader
    num_classes: int
    image_shape: tuple[int, int, int]
    default_eps: float
    augment: tuple[str, ...]
    val_size: int
    needs_root: bool = True


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(load_digits_splits, 10, (1, 8, 8), 0.1, (), 180, needs_root=False),
    "mnist": DatasetSpec(lambda r: load_mnist(r, "mnist"), 10, (1, 28, 28), 0.3, (), 5000),
    "fashion-mnist": DatasetSpec(lambda r: load_mnist(r, "fashion-mnist"), 10, (1, 28, 28), 0.1, (), 5000),
    "cifar10": DatasetSpec(lambda r: load_cifar(r, "cifar10"), 10, (3, 32, 32), 8 / 255, CROP_FLIP, 5000),
    "cifar100": DatasetSpec(lambda r: load_cifar(r, "cifar100"), 100, (3, 32, 32), 8 / 255, CROP_FLIP, 5000),
    "svhn": DatasetSpec(load_svhn, 10, (3, 32, 32), 8 / 255, (), 5000),
    "stl10": DatasetSpec(load_stl10, 10, (3, 96, 96), 8 / 255, CROP_FLIP, 500),
}


def list_datasets() -> list[str]:
    """Returns the names ``load_data`` accepts, sorted."""
    return sorted(DATASETS)


def resolve_root(name: str, root: str | os.PathLike | None, download: bool) -> Path:
    """Returns the data root: ``root``, else ``$OAT_DATA_DIR``, else ``./data``.

    Fashion-MNIST with no root given (and no download asked) comes from the Debian
    package ``dataset-fashion-mnist`` when no copy exists under the default root.
    """
    if root is not None:
        return Path(root).expanduser()
    default = Path(os.environ.get("OAT_DATA_DIR", DEFAULT_ROOT)).expanduser()
    if name == "fashion-mnist" and not download and not (default / "fashion-mnist").is_dir():
        return fashion_system_dir()
    return default


def load_data(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    val_size: int | None = None,
    seed: int = 0,
) -> DataSplits:
    """Loads a data set's official files and splits a seeded validation set off its training split.

    Args:
        name: One of ``list_datasets()``.
        root: Folder holding the data set's files or their folder; see ``resolve_root``.
            Ignored for ``digits``.
        download: Fetch missing official files into ``root`` first (checksum-verified).
        val_size: Validation examples taken from train; None for the data set's default
            (5,000; 500 for stl10; 180 for digits).
        seed: Seed of the validation split.

    Returns:
        The train/val/test splits and the data set's settings.

    Raises:
        DataError: Unknown name, missing or damaged files, or a failed download.
        ConfigError: ``val_size`` not smaller than the training split.
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(list_datasets())}")
    spec = DATASETS[name]
    folder = None
    if spec.needs_root:
        folder = resolve_root(name, root, download)
        if download and name in RESOURCES:
            download_files(name, folder)
    train, test = spec.load(folder)
    if train.images.shape[1:] != spec.image_shape or test.images.shape[1:] != spec.image_shape:
        raise DataError(
            f"{name}: images of shape {tuple(train.images.shape[1:])}, expected {spec.image_shape}"
        )
    train, val = split_train_val(train, spec.val_size if val_size is None else val_size, seed)
    return DataSplits(
        name=name,
        train=train,
        val=val,
        test=test,
        num_classes=spec.num_classes,
        image_shape=spec.image_shape,
        default_eps=spec.default_eps,
        augment=spec.augment,
        split_seed=seed,
    )
