"""Loaders read each official format correctly and refuse damaged or foreign files with a DataError."""

from __future__ import annotations

import gzip
import json
import pickle

import numpy as np
import pytest
import torch
from data_fakes import write_cifar10, write_cifar100, write_idx_set, write_stl10, write_svhn

from oat.data import DATASETS, DataSplits, list_datasets, load_data
from oat.errors import ConfigError, DataError


def check_splits(s: DataSplits, sizes: tuple[int, int, int]) -> None:
    """Shapes, dtypes, label ranges, split sizes, and train/val disjointness."""
    assert (len(s.train), len(s.val), len(s.test)) == sizes
    for part in (s.train, s.val, s.test):
        assert part.images.dtype == torch.uint8 and part.labels.dtype == torch.int64
        assert tuple(part.images.shape[1:]) == s.image_shape
        assert 0 <= int(part.labels.min()) and int(part.labels.max()) < s.num_classes
    train_rows = {bytes(r) for r in s.train.images.flatten(1).numpy()}
    assert not train_rows & {bytes(r) for r in s.val.images.flatten(1).numpy()}
    json.dumps(s.info())


def test_registry_names():
    assert list_datasets() == sorted(
        ["digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "stl10"]
    )
    assert set(DATASETS) == set(list_datasets())


def test_unknown_name_lists_known():
    with pytest.raises(DataError, match="known: cifar10, cifar100, digits"):
        load_data("imagenet")


def test_digits_real_data():
    s = load_data("digits", seed=3)
    check_splits(s, (1257, 180, 360))
    assert s.default_eps == 0.1 and s.augment == () and s.image_shape == (1, 8, 8)
    assert int(s.train.images.max()) == 255  # 16 -> 255
    # Stratified: every class present in validation, in roughly equal numbers.
    assert torch.bincount(s.val.labels, minlength=10).min() >= 16
    again, other = load_data("digits", seed=3), load_data("digits", seed=4)
    assert torch.equal(again.val.images, s.val.images)
    assert not torch.equal(other.val.images, s.val.images)
    assert torch.equal(other.test.images, s.test.images)  # test split does not move with the seed


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx(tmp_path, gz):
    write_idx_set(tmp_path / "mnist", gz=gz)
    s = load_data("mnist", tmp_path, val_size=5)
    check_splits(s, (25, 5, 10))
    assert s.default_eps == 0.3 and s.image_shape == (1, 28, 28)


def test_fashion_mnist_from_folder_itself(tmp_path):
    write_idx_set(tmp_path)
    s = load_data("fashion-mnist", tmp_path, val_size=10)
    check_splits(s, (20, 10, 10))
    assert s.default_eps == 0.1


def test_fashion_mnist_default_location_message(tmp_path, monkeypatch):
    monkeypatch.setenv("OAT_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("oat.data.idx.FASHION_SYSTEM_DIR", tmp_path / "nowhere")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_data("fashion-mnist")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:-7], "truncated"),
        (lambda b: b"\x00\x00\x09\x03" + b[4:], "magic number"),
        (lambda b: b[:3], "shorter than an IDX header"),
    ],
)
def test_idx_damaged(tmp_path, damage, message):
    folder = write_idx_set(tmp_path, gz=False)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=message):
        load_data("mnist", tmp_path, val_size=5)


def test_idx_corrupt_gzip_and_count_mismatch(tmp_path):
    folder = write_idx_set(tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]))
    )
    with pytest.raises(DataError, match="10 images but 3 labels"):
        load_data("mnist", tmp_path, val_size=5)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(np.random.default_rng(0).bytes(5000))[:300]
    )
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_data("mnist", tmp_path, val_size=5)


def test_idx_label_range(tmp_path):
    folder = write_idx_set(tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 10]) + bytes(9) + b"\x0b")
    )
    with pytest.raises(DataError, match="expected 0..9"):
        load_data("mnist", tmp_path, val_size=5)


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data("cifar10", tmp_path / "absent")
    with pytest.raises(DataError, match="data_batch_1"):
        load_data("cifar10", tmp_path)


def test_cifar10(tmp_path):
    write_cifar10(tmp_path)
    s = load_data("cifar10", tmp_path, val_size=10, seed=1)
    check_splits(s, (50, 10, 10))
    assert s.augment == ("crop", "flip") and s.default_eps == pytest.approx(8 / 255)
    # The folder itself works as root too, and the row layout is channel-major.
    direct = load_data("cifar10", tmp_path / "cifar-10-batches-py", val_size=0)
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes(), encoding="bytes")
    assert np.array_equal(direct.train.images[0].numpy(), raw[b"data"][0].reshape(3, 32, 32))


def test_cifar100(tmp_path):
    write_cifar100(tmp_path)
    s = load_data("cifar100", tmp_path, val_size=50)
    check_splits(s, (250, 50, 100))
    assert s.num_classes == 100 and int(s.train.labels.max()) > 10


def test_cifar_other_dataset_and_truncated(tmp_path):
    folder = write_cifar10(tmp_path)
    (tmp_path / "cifar-100-python").mkdir()
    for name in ("train", "test"):  # CIFAR-10 batches where CIFAR-100 is expected
        (tmp_path / "cifar-100-python" / name).write_bytes((folder / "test_batch").read_bytes())
    with pytest.raises(DataError, match="fine_labels"):
        load_data("cifar100", tmp_path)
    (folder / "data_batch_3").write_bytes((folder / "data_batch_3").read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_3.*truncated or corrupt"):
        load_data("cifar10", tmp_path)


def test_cifar_pickle_refuses_code(tmp_path):
    folder = write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match="not allowed"):
        load_data("cifar10", tmp_path)


def test_svhn(tmp_path):
    write_svhn(tmp_path / "svhn")
    s = load_data("svhn", tmp_path, val_size=8)
    check_splits(s, (32, 8, 12))
    assert s.augment == ()
    assert int((s.test.labels == 0).sum()) == 1  # label 10 became 0


def test_svhn_bad_files(tmp_path):
    folder = write_svhn(tmp_path)
    (folder / "test_32x32.mat").write_bytes((folder / "test_32x32.mat").read_bytes()[:300])
    with pytest.raises(DataError, match="test_32x32.mat"):
        load_data("svhn", tmp_path, val_size=8)
    from scipy.io import savemat

    savemat(str(folder / "test_32x32.mat"), {"X": np.zeros((28, 28, 1, 3), np.uint8), "y": np.ones((3, 1))})
    with pytest.raises(DataError, match=r"expected uint8 \(32, 32, 3, N\)"):
        load_data("svhn", tmp_path, val_size=8)


def test_stl10_transpose_and_val_from_train(tmp_path):
    _, train_images = write_stl10(tmp_path)
    s = load_data("stl10", tmp_path, val_size=4)
    check_splits(s, (16, 4, 10))
    assert s.augment == ("crop", "flip") and DATASETS["stl10"].val_size == 500
    full = load_data("stl10", tmp_path / "stl10_binary", val_size=0)
    assert np.array_equal(full.train.images.numpy(), train_images)  # column-major undone
    assert int(full.train.labels.min()) == 0 and int(full.train.labels.max()) == 9
    train_rows = {bytes(r) for r in train_images.reshape(len(train_images), -1)}
    assert {bytes(r) for r in s.val.images.flatten(1).numpy()} <= train_rows


def test_stl10_truncated_and_mismatch(tmp_path):
    folder, _ = write_stl10(tmp_path)
    (folder / "test_X.bin").write_bytes((folder / "test_X.bin").read_bytes()[:-5])
    with pytest.raises(DataError, match="not a multiple of 27648"):
        load_data("stl10", tmp_path, val_size=4)
    write_stl10(tmp_path)
    (folder / "test_y.bin").write_bytes(bytes([1, 2, 3]))
    with pytest.raises(DataError, match="10 images but .* 3 labels"):
        load_data("stl10", tmp_path, val_size=4)


def test_val_size_too_large(tmp_path):
    write_idx_set(tmp_path)
    with pytest.raises(ConfigError, match="val_size=30"):
        load_data("mnist", tmp_path, val_size=30)
