"""The generic training loop: SGD + per-step cosine schedule, bf16 autocast, channels_last.

It knows nothing about λ: an objective turns each batch into a loss and metrics. Per
epoch it seeds one generator from (seed, epoch, rank) for λ sampling and PGD starts; the
loader's order and augmentation are pure functions of (seed, epoch, rank) too. So an
epoch replays exactly after a resume from a checkpoint written at its start, and from
one written mid-epoch (on SIGINT/SIGTERM) too: that checkpoint records how many batches
of the epoch are done and the generator's state, and the resumed epoch skips those
batches and continues the same generator.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from oat.errors import OatError
from oat.train import distributed as ddp


class NonFiniteError(OatError):
    """The loss or the gradients became NaN/inf."""


@dataclass
class LoopState:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    history: list = field(default_factory=list)
    batch: int = 0  # batches of epoch ``epoch`` already done (a mid-epoch checkpoint)
    gen_state: list | None = None  # the epoch generator's state after ``batch`` batches
    partial: dict = field(default_factory=dict)  # metric sums of those batches
    stopped: int = 0  # signal number that stopped training at a safe point (0: none)


@dataclass
class LoopOptions:
    """How the loop runs (the objective decides what a step computes).

    Attributes:
        epochs: epochs to train to.
        base_lr: the cosine schedule's starting learning rate.
        device: where the batches and the model live.
        amp: ``"bf16"``, ``"off"`` or ``"auto"`` (bf16 on CUDA, fp32 elsewhere: the runner resolves
            ``auto`` by measurement first, see :mod:`oat.train.precision`; a resumed run of an earlier
            version keeps this meaning).
        seed: seeds each epoch's generator, with the epoch and the rank.
        nonfinite: ``"stop"`` or ``"skip"`` a step whose loss or gradients are not finite.
        progress: show a progress bar.
        info: the process group (its ``rank`` seeds the generator; ``oat.train.distributed``).
        step_hook: optional ``(state, model)`` callable after every optimiser step.
    """

    epochs: int
    base_lr: float
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp: str = "auto"
    seed: int = 0
    nonfinite: str = "stop"
    progress: bool = True
    info: ddp.DistInfo = field(default_factory=lambda: ddp.DistInfo())
    step_hook: Callable | None = None


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it after every step (a safe point)."""

    def __init__(self):
        self.signum = 0

    def __call__(self, signum, frame) -> None:
        if self.signum:  # a second signal: the user insists
            raise KeyboardInterrupt
        self.signum = signum


@contextlib.contextmanager
def catch_signals(flag: StopFlag, signals=(signal.SIGINT, signal.SIGTERM)):
    """Route SIGINT/SIGTERM to ``flag`` while training (main thread only), then restore."""
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    old = {s: signal.signal(s, flag) for s in signals}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


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
    if not grads:
        return True
    # max |g| is finite iff every gradient is (NaN and inf propagate; no overflow as a 2-norm
    # could), then a single host sync. On CUDA one fused max-|g| per tensor; the CPU's
    # per-tensor inf-norm is a slow scalar loop, so there one max over all gradients at once.
    if grads[0].device.type == "cpu":
        return bool(torch.isfinite(torch.cat([g.reshape(-1) for g in grads]).abs().max()))
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(grads, float("inf")))).all())


def _start_epoch(state: LoopState, seed: int, rank: int) -> tuple[torch.Generator, dict]:
    gen = epoch_generator(seed, state.epoch, rank)
    if state.batch and state.gen_state is not None:  # resuming mid-epoch
        gen.set_state(torch.tensor(state.gen_state, dtype=torch.uint8))
    return gen, dict(state.partial) if state.batch else {}


def train_epoch(model, objective, loader, optimizer, state: LoopState, opts: LoopOptions, *, total_steps: int,
                desc: str = "", stop: StopFlag | None = None) -> dict | None:
    """One pass over ``loader`` (or its rest, after a mid-epoch resume).

    Returns:
        The epoch's mean loss, train SA/RA and images/s (global over ranks); None when a
        stop signal ended the epoch early at a safe point (``state`` then says where).
    """
    info, device, progress, step_hook = opts.info, opts.device, opts.progress, opts.step_hook
    model.train()
    gen, sums = _start_epoch(state, opts.seed, info.rank)
    resumed_at = state.batch
    t0, skipped, n_batches = time.perf_counter(), 0, len(loader)
    bar = tqdm(total=n_batches, initial=state.batch, desc=desc, leave=False, disable=not progress,
               dynamic_ncols=True)
    for i, (x, y) in enumerate(loader):
        if i < state.batch:  # done before the mid-epoch checkpoint
            continue
        for g in optimizer.param_groups:  # a group may scale the base lr (e.g. FiLM's, film_lr_scale)
            g["lr"] = cosine_lr(opts.base_lr * g.get("lr_scale", 1.0), state.step, total_steps)
        with autocast_for(device, opts.amp):
            loss, metrics = objective(model, x, y, generator=gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        bad = not (torch.isfinite(loss) and grads_finite(model))
        bad, stopping = ddp.agree([bad, bool(stop and stop.signum)], info, device)
        if bad and opts.nonfinite == "stop":
            # Only a run that has passed an epoch end (or a mid-epoch stop) has a checkpoint to keep.
            kept = "the last good checkpoint is kept" if state.epoch or resumed_at else "no checkpoint was written"
            raise NonFiniteError(f"non-finite loss or gradients at epoch {state.epoch + 1}, step "
                                 f"{state.step + 1}; {kept} (lower lr, or nonfinite=skip to skip such steps)")
        if bad:
            skipped += 1
        else:
            optimizer.step()
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0) + v
        state.step += 1
        state.batch = i + 1
        bar.update(1)
        if step_hook is not None:
            step_hook(state, model)
        if progress:
            bar.set_postfix(_summary(sums), refresh=False)
        if stopping and state.batch < n_batches:
            bar.close()
            state.stopped = (stop.signum if stop else 0) or int(signal.SIGTERM)
            state.gen_state = gen.get_state().tolist()
            state.partial = {k: float(v) for k, v in sums.items()}
            return None
    bar.close()
    sums = ddp.all_reduce_sums(sums, info, device)
    state.batch, state.gen_state, state.partial = 0, None, {}
    out = _summary(sums)
    out.update(epoch=state.epoch + 1, lr=optimizer.param_groups[0]["lr"], skipped_steps=skipped,
               seconds=round(time.perf_counter() - t0, 3))
    out["img_per_s"] = round(float(sums.get("n", 0)) / max(out["seconds"], 1e-9), 1)
    return out


def _summary(sums: dict) -> dict:
    n = max(int(sums.get("n", 0)), 1)
    out = {"loss": round(float(sums.get("loss", 0)) / n, 4)}
    if sums.get("n_clean"):
        out["train_sa"] = round(float(sums["clean_correct"]) / int(sums["n_clean"]), 4)
    if sums.get("n_adv"):
        out["train_ra"] = round(float(sums["adv_correct"]) / int(sums["n_adv"]), 4)
    return out


def fit(model, objective, loader, optimizer, opts: LoopOptions, *, state: LoopState | None = None,
        on_epoch_end: Callable[[LoopState, dict], None] | None = None,
        on_stop: Callable[[LoopState], None] | None = None, stop: StopFlag | None = None) -> LoopState:
    """Train from ``state`` to ``epochs``, calling ``on_epoch_end`` (checkpoint, log) after each.

    When ``stop`` is set by a signal, training halts after the current step; ``on_stop``
    (checkpoint) is called with the mid-epoch state and ``state.stopped`` names the signal.
    """
    state = state or LoopState()
    epochs, device = opts.epochs, opts.device
    total = epochs * len(loader)
    while state.epoch < epochs:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(state.epoch)
        stats = train_epoch(model, objective, loader, optimizer, state, opts, total_steps=total,
                            desc=f"epoch {state.epoch + 1}/{epochs}", stop=stop)
        if stats is None:
            if on_stop is not None:
                on_stop(state)
            return state
        state.epoch += 1
        state.history.append(stats)
        if on_epoch_end is not None:
            on_epoch_end(state, stats)
        if stop is not None and state.epoch < epochs:
            if ddp.agree([bool(stop.signum)], opts.info, device)[0]:  # every rank stops at the same epoch
                state.stopped = stop.signum or int(signal.SIGTERM)  # the epoch checkpoint is the safe point
                return state
    return state
