"""The compute side of OATS's three-way trade-off: FLOPs, parameters and latency per width.

Every figure is that of the standalone slim network :func:`oat.models.export.export`
builds for a (λ, width): FiLM is folded into the BN (a per-λ constant, not per-image
work) and only the width's channels exist. The cost therefore depends on the width
alone, not on λ (the clean and adversarial BN of a width have the same shape), and is
measured once per width.

FLOPs are counted by :func:`oat.models.flops.count_flops` (torch's FlopCounterMode:
convolutions and matrix products, a multiply-add counts as 2 FLOPs; BN, ReLU and pooling
are not counted) for one image. Latency is the median wall time of a forward pass of a batch,
after warm-up, in eval mode and fp32; it depends on the machine and its load.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from oat.models.export import export
from oat.models.flops import count_flops

__all__ = ["add_cost", "cost_table", "count_flops", "count_params", "measure_latency", "width_cost"]

LATENCY_BATCH = 128
LATENCY_REPEATS = 10
LATENCY_WARMUP = 3


def count_params(module: nn.Module) -> int:
    """Number of parameters (trainable tensors; BN running statistics are buffers)."""
    return sum(p.numel() for p in module.parameters())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_latency(module: nn.Module | Callable, input_shape, device="cpu", *, repeats: int = LATENCY_REPEATS,
                    warmup: int = LATENCY_WARMUP) -> float:
    """Median seconds of one forward pass on a random input of ``input_shape``."""
    device = torch.device(device)
    x = torch.rand(*input_shape, device=device)
    for _ in range(warmup):
        module(x)
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        module(x)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def width_cost(model, width, image_shape, device="cpu", *, lam: float | None = None,
               latency_batch: int = LATENCY_BATCH, repeats: int = LATENCY_REPEATS) -> dict:
    """FLOPs per image, parameters and latency per batch of the slim network at ``width``.

    Args:
        model: a conditioned model.
        width: a trained width (None: the largest).
        image_shape: ``(C, H, W)`` of one image.
        device: where latency is measured.
        lam: the λ to export at (default: the largest trained one; the cost does not depend on it).
        latency_batch: batch size of the latency measurement (0: skip latency).
        repeats: timed runs (the median is reported).

    Returns:
        ``{"flops", "params", "latency_ms", "latency_batch"}`` (latency None when skipped).
    """
    lam = max(model.spec.lams) if lam is None else lam
    slim = export(model, lam, width).eval().to(device)
    out = {"flops": count_flops(slim, (1, *image_shape)), "params": count_params(slim),
           "latency_ms": None, "latency_batch": latency_batch or None}
    if latency_batch:
        sec = measure_latency(slim, (latency_batch, *image_shape), device, repeats=repeats)
        out["latency_ms"] = round(1000 * sec, 3)
    return out


def cost_table(model, widths, image_shape, device="cpu", **kw) -> dict:
    """``{width: width_cost(...)}`` for each width (None kept as the key for the largest)."""
    return {w: width_cost(model, w, image_shape, device, **kw) for w in widths}


def add_cost(rows: list[dict], model, image_shape, device="cpu", **kw) -> list[dict]:
    """Add ``flops``, ``params``, ``latency_ms`` and ``latency_batch`` to result rows, in place.

    A row's ``width`` (None: the largest) picks its cost; each width is measured once.
    """
    widths = sorted({r.get("width") for r in rows}, key=lambda w: -(w or 1.0))
    table = cost_table(model, widths, image_shape, device, **kw)
    for r in rows:
        r.update(table[r.get("width")])
    return rows
