"""A loader that keeps a whole split on the device and samples and augments batches there.

Per-example Python work (a ``Dataset.__getitem__`` per image, collation, worker
processes) dominates small-image training on a GPU. Here the split lives on the device
as uint8 (CIFAR-10's 50,000 images take 150 MB), a batch is one index gather, and crop
and flip are a few batched tensor ops. Output is float32 in [0, 1], never normalised:
attacks work in pixel space and normalisation belongs to the model.

Determinism: the epoch's order is a pure function of (seed, epoch) and its augmentation
of (seed, epoch, rank), both drawn on the CPU, so a resumed run, or the same run on
another device, sees the same batches. Call ``set_epoch`` before each epoch (as with
``DistributedSampler``); the loader does not advance the epoch by itself.

Sharding: with ``world_size`` ranks the global batch is ``batch_size * world_size``.
Each global batch of the epoch's permutation is cut into ``world_size`` consecutive
slices of ``batch_size``, slice ``rank`` going to this rank, so the ranks' examples are
disjoint and together cover the epoch. Without ``drop_last`` the final partial global
batch is split as evenly as possible; if it has fewer examples than ranks, the ranks
left without any yield one batch fewer, so use ``drop_last=True`` for multi-rank
training, where every rank must run the same number of steps.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from oat.data.arrays import ArrayDataset
from oat.errors import ConfigError

KNOWN_AUGMENTS = ("crop", "flip")
CROP_PAD = 4


def derive_seed(*parts: int) -> int:
    """Mixes integers into one 63-bit seed (via numpy's SeedSequence: no collisions of nearby tuples)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def random_crop(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, pad: int = CROP_PAD) -> torch.Tensor:
    """Crops each image at its own offset from a copy zero-padded by ``pad`` on every side.

    Args:
        x: (B, C, H, W) batch.
        dy: (B,) vertical offsets in ``[0, 2 * pad]``; ``pad`` means no shift.
        dx: (B,) horizontal offsets in ``[0, 2 * pad]``.
        pad: Padding width.

    Returns:
        (B, C, H, W): ``out[b, :, i, j] = padded[b, :, i + dy[b], j + dx[b]]``.
    """
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    # Two torch.gather calls (rows, then columns) are ~3x faster on the CPU than one
    # advanced-indexing gather with four broadcast index tensors.
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    padded = padded.gather(2, rows.expand(b, c, h, w + 2 * pad))
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    return padded.gather(3, cols.expand(b, c, h, w))


def random_flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirrors horizontally the images whose ``flip`` entry is True."""
    return torch.where(flip[:, None, None, None], x.flip(3), x)


class DeviceLoader:
    """Whole split on the device as uint8; batches sampled and augmented there; float32 in [0,1] out.

    Args:
        dataset: The split to iterate over.
        batch_size: Examples per batch on this rank.
        shuffle: Draw a fresh permutation each epoch (else file order).
        augment: Any of ``"crop"`` (4-pixel zero-padded random crop) and ``"flip"``
            (horizontal, p = 0.5).
        device: Where batches are produced.
        seed: Base seed of order and augmentation.
        drop_last: Drop the final partial global batch.
        rank: This process's rank.
        world_size: Number of ranks sharing the epoch.
        channels_last: Yield images in channels-last memory format.
        max_device_bytes: If the images exceed this, keep them in host memory and copy
            each batch over through pinned memory (on CUDA); None means no limit.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        augment: tuple[str, ...] = (),
        device="cpu",
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        max_device_bytes: int | None = None,
    ):
        unknown = set(augment) - set(KNOWN_AUGMENTS)
        if unknown:
            raise ConfigError(
                f"unknown augmentation(s) {sorted(unknown)}; known: {', '.join(KNOWN_AUGMENTS)}"
            )
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(
                f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}"
            )
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, tuple(augment)
        self.device, self.seed, self.drop_last = torch.device(device), seed, drop_last
        self.rank, self.world_size, self.channels_last = rank, world_size, channels_last
        self.epoch = 0
        self.on_device = max_device_bytes is None or dataset.images.nbytes <= max_device_bytes
        if self.on_device:
            self.images = dataset.images.to(self.device)
        else:  # host fallback: the split stays in host memory, each batch is copied over
            self.images = dataset.images
        # Pinned staging lets a batch's host-to-device copy run asynchronously.
        self.pin = not self.on_device and self.device.type == "cuda" and torch.cuda.is_available()
        self.labels = dataset.labels.to(self.device)
        self.num_examples = len(dataset)

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose order and augmentation the next iteration produces."""
        self.epoch = int(epoch)

    def shard(self) -> list[torch.Tensor]:
        """Returns this rank's batches of example indices (CPU int64) for the current epoch."""
        n, b, w = self.num_examples, self.batch_size, self.world_size
        if self.shuffle:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))  # same on every rank
            perm = torch.randperm(n, generator=gen)
        else:
            perm = torch.arange(n)
        full = n // (b * w)
        batches = list(perm[: full * b * w].view(full, w, b)[:, self.rank].unbind(0))
        tail = perm[full * b * w :]
        if not self.drop_last and tail.numel():
            mine = torch.tensor_split(tail, w)[self.rank]
            if mine.numel():
                batches.append(mine)
        return batches

    def __len__(self) -> int:
        n, b, w = self.num_examples, self.batch_size, self.world_size
        full, tail = divmod(n, b * w)
        # tensor_split gives the first (tail % w) ranks one extra; rank r is empty iff tail <= r.
        return full + int(not self.drop_last and tail > self.rank)

    def _augment_params(self, count: int) -> dict[str, torch.Tensor]:
        """Draws this rank's crop offsets and flips for the epoch on the CPU, then moves them over once."""
        gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, self.rank, 1))
        params = {}
        if "crop" in self.augment:
            params["crop"] = torch.randint(0, 2 * CROP_PAD + 1, (2, count), generator=gen)
        if "flip" in self.augment:
            params["flip"] = torch.rand(count, generator=gen) < 0.5
        return {k: v.to(self.device) for k, v in params.items()}

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self.shard()
        params = self._augment_params(sum(len(i) for i in batches))
        start = 0
        for index in batches:
            stop = start + len(index)
            if self.on_device:
                index = index.to(self.device, non_blocking=True)
                x = self.images[index]
            else:
                x = self.images[index]
                x = (x.pin_memory() if self.pin else x).to(self.device, non_blocking=True)
                index = index.to(self.device, non_blocking=True)
            if "crop" in params:
                x = random_crop(x, params["crop"][0, start:stop], params["crop"][1, start:stop])
            if "flip" in params:
                x = random_flip(x, params["flip"][start:stop])
            x = x.float().div_(255)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            start = stop
            yield x, self.labels[index]
