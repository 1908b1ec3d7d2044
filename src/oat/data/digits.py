"""UCI handwritten digits (8×8, 10 classes), bundled with scikit-learn: real data, offline.

The smallest real image set we have; tests and the demo run on it in seconds.
"""

from __future__ import annotations

import numpy as np

from oat.data.arrays import ArrayDataset, make_dataset, split_train_val

NUM_CLASSES = 10
TEST_SIZE = 360
TEST_SPLIT_SEED = 1234  # fixed, so the test set never moves with the validation seed


def load_digits_all() -> ArrayDataset:
    """Returns all 1,797 images as uint8 (N, 1, 8, 8), pixels rescaled from 0..16 to 0..255."""
    from sklearn.datasets import load_digits  # local import: sklearn is slow to import

    bunch = load_digits()
    images = np.rint(bunch.images * 255.0 / 16.0).astype(np.uint8)[:, None]
    return make_dataset(images, bunch.target.astype(np.int64), NUM_CLASSES, "digits")


def load_digits_splits(root: object = None, download: bool = False) -> tuple[ArrayDataset, ArrayDataset]:
    """Returns (train, test) for digits; ``root`` and ``download`` are ignored.

    The data set has no official test split, so a fixed stratified draw of 360 images
    serves as one; it does not depend on the validation seed, so results across split
    seeds are measured on the same test images.
    """
    del root, download
    full = load_digits_all()
    train, test = split_train_val(full, TEST_SIZE, TEST_SPLIT_SEED)
    return train, test
