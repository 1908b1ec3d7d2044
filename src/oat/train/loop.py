"""The generic training loop: SGD + per-step cosine schedule, bf16 autocast, channels_last.

It knows nothing about λ: an objective turns each batch into a loss and metrics. Per
epoch it seeds one generator from (seed, epoch, rank) for λ sampling and PGD starts, so
an epoch replays exactly after a resume from the checkpoint written at its start.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from oat.errors import OatError


class NonFiniteError(OatError):
    """The loss or the gradients became NaN/inf."""


@dataclass
class LoopState:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    history: list = field(default_factory=list)


def cosine_lr(base: float, step: int, total: int) -> float:
    """The paper's cosine annealing, per step, from ``base`` to 0."""
    return base * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def epoch_generator(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7_919 + rank * 104_729)


def autocast_for(device: torch.device, amp: str):
    """bf16 autocast when asked (``bf16``) or by default on CUDA (``auto``); else a no-op."""
    on = amp == "bf16" or (amp == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on)


def grads_finite(model: torch.nn.Module) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True


def train_epoch(model, objective, loader, optimizer, state: LoopState, *, base_lr: float, total_steps: int,
                device: torch.device, amp: str = "auto", seed: int = 0, rank: int = 0,
                nonfinite: str = "stop", progress: bool = True, desc: str = "") -> dict:
    """One pass over ``loader``; returns the epoch's mean loss, train SA/RA and images/s."""
    model.train()
    gen = epoch_generator(seed, state.epoch, rank)
    sums: dict = {}
    t0, skipped = time.perf_counter(), 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, dynamic_ncols=True)
    for x, y in bar:
        for g in optimizer.param_groups:
            g["lr"] = cosine_lr(base_lr, state.step, total_steps)
        with autocast_for(device, amp):
            loss, metrics = objective(model, x, y, generator=gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not (torch.isfinite(loss) and grads_finite(model)):
            if nonfinite == "stop":
                raise NonFiniteError(f"non-finite loss or gradients at epoch {state.epoch + 1}, step "
                                     f"{state.step + 1}; the last good checkpoint is kept (lower lr, or "
                                     "nonfinite=skip to skip such steps)")
            skipped += 1
            state.step += 1
            continue
        optimizer.step()
        state.step += 1
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0) + v
        if progress:
            bar.set_postfix(_summary(sums), refresh=False)
    out = _summary(sums)
    out.update(epoch=state.epoch + 1, lr=optimizer.param_groups[0]["lr"], skipped_steps=skipped,
               seconds=round(time.perf_counter() - t0, 3))
    out["img_per_s"] = round(sums.get("n", 0) / max(out["seconds"], 1e-9), 1)
    return out


def _summary(sums: dict) -> dict:
    n = max(int(sums.get("n", 0)), 1)
    out = {"loss": round(float(sums.get("loss", 0)) / n, 4)}
    if sums.get("n_clean"):
        out["train_sa"] = round(float(sums["clean_correct"]) / int(sums["n_clean"]), 4)
    if sums.get("n_adv"):
        out["train_ra"] = round(float(sums["adv_correct"]) / int(sums["n_adv"]), 4)
    return out


def fit(model, objective, loader, optimizer, *, epochs: int, base_lr: float, device, state: LoopState | None = None,
        on_epoch_end: Callable[[LoopState, dict], None] | None = None, **kw) -> LoopState:
    """Train from ``state.epoch`` to ``epochs``, calling ``on_epoch_end`` (checkpoint, log) after each."""
    state = state or LoopState()
    total = epochs * len(loader)
    while state.epoch < epochs:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(state.epoch)
        stats = train_epoch(model, objective, loader, optimizer, state, base_lr=base_lr, total_steps=total,
                            device=device, desc=f"epoch {state.epoch + 1}/{epochs}", **kw)
        state.epoch += 1
        state.history.append(stats)
        if on_epoch_end is not None:
            on_epoch_end(state, stats)
    return state
