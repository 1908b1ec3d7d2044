"""The in-memory containers every loader returns, and the seeded train/validation split.

Images stay ``uint8`` (N, C, H, W) until a batch is drawn: a quarter of the memory of
float32, and attacks and augmentation both want raw pixels in [0, 1] rather than
normalised values (normalisation is the model's first layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from oat.errors import ConfigError, DataError


@dataclass
class ArrayDataset:
    """A labelled image set held as two tensors.

    Attributes:
        images: ``uint8`` tensor of shape (N, C, H, W).
        labels: ``int64`` tensor of shape (N,), values in ``[0, num_classes)``.
        num_classes: Number of classes of the data set (not only those present).
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        # Fail here, at construction, rather than deep inside a training step.
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"labels must be int64 of shape ({self.images.shape[0]},), "
                f"got {self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray | torch.Tensor) -> ArrayDataset:
        """Returns the examples at ``index`` as a new data set (copies, never views)."""
        index = torch.as_tensor(index, dtype=torch.int64)
        return ArrayDataset(
            self.images[index].contiguous(), self.labels[index].contiguous(), self.num_classes
        )


@dataclass
class DataSplits:
    """Train, validation and test sets of one data set, with the settings that go with it.

    Attributes:
        name: Canonical data set name (a key of ``oat.data.DATASETS``).
        train: Training examples (the validation examples removed).
        val: Validation examples, drawn from the official training split, never from test.
        test: The official test split, untouched.
        num_classes: Number of classes.
        image_shape: (C, H, W).
        default_eps: The L∞ budget customary for this data set, in [0, 1] pixel units.
        augment: Augmentations customary for this data set, for ``DeviceLoader``.
        split_seed: Seed that drew the validation examples.
    """

    name: str
    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    num_classes: int
    image_shape: tuple[int, int, int]
    default_eps: float
    augment: tuple[str, ...]
    split_seed: int

    def info(self) -> dict:
        """Returns a JSON-able summary, for run folders and reports."""
        return {
            "name": self.name,
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "default_eps": self.default_eps,
            "augment": list(self.augment),
            "split_seed": self.split_seed,
        }


def check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    """Raises DataError unless every label lies in ``[0, num_classes)``."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{what}: labels range {int(labels.min())}..{int(labels.max())}, "
            f"expected 0..{num_classes - 1} (files of another data set?)"
        )


def make_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, what: str) -> ArrayDataset:
    """Checks label range and count, and wraps numpy arrays as an ``ArrayDataset``."""
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{what}: {images.shape[0]} images but {labels.shape[0]} labels, expected equal counts"
        )
    check_labels(labels, num_classes, what)
    return ArrayDataset(
        torch.from_numpy(np.require(images, np.uint8, ["C", "W"])),  # copies only if read-only/strided
        torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        num_classes,
    )


def split_train_val(train: ArrayDataset, val_size: int, seed: int) -> tuple[ArrayDataset, ArrayDataset]:
    """Draws ``val_size`` seeded, class-stratified examples out of ``train``.

    Stratified so that a small validation set still holds every class in proportion;
    a pure function of (labels, val_size, seed), so a resumed run sees the same split.

    Args:
        train: The official training split.
        val_size: Number of validation examples, ``0 <= val_size < len(train)``.
        seed: Split seed.

    Returns:
        (train without the validation examples, validation examples), both sorted by
        original index so the train set keeps the file order.
    """
    n = len(train)
    if not 0 <= val_size < n:
        raise ConfigError(f"val_size={val_size} must be in [0, {n}) for a training split of {n} examples")
    rng = np.random.default_rng(seed)
    labels = train.labels.numpy()
    order = rng.permutation(n)
    # Interleave the classes in permuted order: take the k-th member of each class
    # before any (k+1)-th, so the first val_size indices are stratified.
    rank_in_class = np.empty(n, dtype=np.float64)
    for c in np.unique(labels):
        members = order[labels[order] == c]
        rank_in_class[members] = np.arange(members.size) / members.size
    tiebreak = rng.random(n)
    chosen = np.lexsort((tiebreak, rank_in_class))[:val_size]
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    return train.subset(np.flatnonzero(~mask)), train.subset(np.flatnonzero(mask))
