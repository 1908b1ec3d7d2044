"""Throughput of DeviceLoader against a per-example torch DataLoader doing the same crop + flip.

Synthetic CIFAR-shaped uint8 data (no files needed). One pass per loader after one
warm-up batch; prints a table and writes ``benchmarks/results/bench_loader.json`` with
the machine, versions (git commit), command and settings (``common.write_result``).

    OMP_NUM_THREADS=1 python benchmarks/bench_loader.py [--n 10000] [--batch-size 128] [--device cpu]

On a shared 2-core CPU, two intra-op threads collapse under contention from other
processes (DeviceLoader fell from 47k to 2k images/s); one thread gives stable figures.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import write_result  # also puts the checkout's src first on sys.path
from torch.utils.data import DataLoader, Dataset

from oat.data import ArrayDataset, DeviceLoader


class PerExampleDataset(Dataset):
    """The conventional pipeline: one image at a time, padded, cropped and flipped in __getitem__."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = torch.nn.functional.pad(self.images[i], (4, 4, 4, 4))
        dy, dx = torch.randint(0, 9, (2,)).tolist()
        img = img[:, dy : dy + 32, dx : dx + 32]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img.float().div_(255), self.labels[i]


def images_per_second(loader, device: torch.device) -> float:
    """Times one full pass (after one warm-up batch), including the copy to ``device``."""
    it = iter(loader)
    next(it)
    count, start = 0, time.perf_counter()
    for x, y in it:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        count += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (args.n,), generator=gen)
    rows = {
        "DeviceLoader": images_per_second(
            DeviceLoader(
                ArrayDataset(images, labels, 10), args.batch_size, augment=("crop", "flip"), device=device
            ),
            device,
        )
    }
    for workers in (0, 2):
        loader = DataLoader(
            PerExampleDataset(images, labels),
            args.batch_size,
            shuffle=True,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        rows[f"DataLoader(num_workers={workers})"] = images_per_second(loader, device)
    base = rows["DataLoader(num_workers=0)"]
    print(f"{'loader':<28}{'images/s':>12}{'speed-up':>10}")
    for name, rate in rows.items():
        print(f"{name:<28}{rate:>12,.0f}{rate / base:>9.1f}x")
    write_result("bench_loader", {
        "images_per_second": {k: round(v, 1) for k, v in rows.items()},
        "settings": {"n": args.n, "batch_size": args.batch_size, "device": str(device), "image_shape": [3, 32, 32],
                     "augment": ["crop", "flip"], "passes": 1},
    })


if __name__ == "__main__":
    main()
