"""DeviceLoader: determinism per (seed, epoch, rank), sharding, augmentation, output format."""

from __future__ import annotations

import pytest
import torch

from oat.data import ArrayDataset, DeviceLoader
from oat.data.device_loader import random_crop, random_flip
from oat.errors import ConfigError


def dataset(n: int = 50, size: int = 8) -> ArrayDataset:
    """Images whose pixel (0, 0, 0) encodes the example's index, so batches can be traced back."""
    images = torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    return ArrayDataset(images, torch.arange(n) % 10, 10)


def labels_seen(loader: DeviceLoader) -> list[int]:
    return [int(i) for _, y in loader for i in y]


def test_output_format_and_len():
    for drop_last, batches in ((False, 4), (True, 3)):
        loader = DeviceLoader(dataset(), 16, augment=("crop", "flip"), drop_last=drop_last)
        out = list(loader)
        assert len(out) == len(loader) == batches
        for x, y in out:
            assert x.dtype == torch.float32 and y.dtype == torch.int64
            assert x.shape[1:] == (3, 8, 8) and 0 <= x.min() and x.max() <= 1


def test_same_epoch_same_batches_other_epoch_differs():
    a = DeviceLoader(dataset(), 16, augment=("crop", "flip"), seed=5)
    b = DeviceLoader(dataset(), 16, augment=("crop", "flip"), seed=5)
    a.set_epoch(3)
    b.set_epoch(3)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    first = [x for x, _ in a]
    assert all(torch.equal(u, v) for u, v in zip(first, [x for x, _ in a]))  # re-iterating repeats the epoch
    a.set_epoch(4)
    assert not torch.equal(first[0], next(iter(a))[0])


def test_no_shuffle_keeps_order():
    loader = DeviceLoader(dataset(), 16, shuffle=False)
    assert labels_seen(loader) == [i % 10 for i in range(50)]
    x, _ = next(iter(loader))
    assert torch.equal(x, dataset().images[:16].float() / 255)


@pytest.mark.parametrize("world_size, drop_last", [(3, False), (3, True), (4, False), (2, False)])
def test_shards_disjoint_and_covering(world_size, drop_last):
    ids = []
    lengths = []
    for rank in range(world_size):
        loader = DeviceLoader(dataset(50), 4, rank=rank, world_size=world_size, drop_last=drop_last, seed=1)
        loader.set_epoch(2)
        batches = [(x[:, 0, 0, 0] * 255).round().long().tolist() for x, _ in loader]
        assert len(batches) == len(loader)
        assert all(len(b) <= 4 for b in batches)
        lengths.append(len(batches))
        ids += [i for b in batches for i in b]
    assert len(ids) == len(set(ids))  # disjoint
    expected = (50 // (4 * world_size)) * 4 * world_size if drop_last else 50
    assert len(ids) == expected  # covering (all of it without drop_last)
    if drop_last:
        assert len(set(lengths)) == 1


def test_crop_shifts_content_and_keeps_shape():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6) + 1
    out = random_crop(x, torch.tensor([4, 6]), torch.tensor([4, 2]))
    assert out.shape == x.shape
    assert torch.equal(out[0], x[0])  # offset 4 == pad: unshifted
    # Second image: down-shifted content 2 rows up, 2 columns right; zeros enter from the padding.
    assert torch.equal(out[1, 0, :4, 2:], x[1, 0, 2:, :4])
    assert (out[1, 0, 4:] == 0).all() and (out[1, 0, :, :2] == 0).all()


def test_flip_mirrors_selected():
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.uint8).view(2, 1, 2, 3)
    out = random_flip(x, torch.tensor([True, False]))
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])


def test_augmentation_changes_images_but_not_labels():
    plain = DeviceLoader(dataset(), 50, seed=2)
    aug = DeviceLoader(dataset(), 50, augment=("crop", "flip"), seed=2)
    (x0, y0), (x1, y1) = next(iter(plain)), next(iter(aug))
    assert torch.equal(y0, y1) and not torch.equal(x0, x1)


def test_host_fallback_same_batches_and_channels_last():
    a = DeviceLoader(dataset(), 16, augment=("crop", "flip"), seed=7)
    b = DeviceLoader(dataset(), 16, augment=("crop", "flip"), seed=7, max_device_bytes=10, channels_last=True)
    assert a.on_device and not b.on_device
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xb.is_contiguous(memory_format=torch.channels_last)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="unknown augmentation"):
        DeviceLoader(dataset(), 4, augment=("rotate",))
    with pytest.raises(ConfigError, match="rank"):
        DeviceLoader(dataset(), 4, rank=2, world_size=2)
