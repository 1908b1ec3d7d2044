"""Projected gradient descent (Madry et al. 2018) and FGSM, as pure functions.

``predict`` is any ``x -> logits`` callable. Gradients are taken with
``torch.autograd.grad`` w.r.t. the perturbation only: no parameter gradient is
accumulated, the caller's tensors are never edited in place, and the global RNG is not
touched (pass a ``torch.Generator`` for reproducible random starts). Putting a model in
eval mode while crafting is the caller's choice (the training objectives do).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oat.attacks.threat import get_threat
from oat.errors import ConfigError


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


def cw_margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini–Wagner margin: best wrong logit minus the true logit (> 0 means misclassified)."""
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


LOSSES = {"ce": ce_loss, "cw": cw_margin_loss}


def train_step_size(eps: float, steps: int) -> float:
    """The OAT reference's training step: min(1.25·ε, ε + 4/255) / steps."""
    return min(1.25 * eps, eps + 4 / 255) / steps


def eval_step_size(eps: float, steps: int) -> float:
    """Madry et al.'s evaluation step 2.5·ε/k (the training rule gives too-small steps at k=20+)."""
    return 2.5 * eps / steps


def pgd(predict, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, step_size: float | None = None,
        norm: str = "linf", loss: str = "ce", random_start: bool = True, restarts: int = 1,
        keep_best: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted PGD.

    Args:
        predict: ``x -> logits``.
        x: images in [0, 1], ``(N, ...)``; y: labels ``(N,)``.
        eps: radius of the threat model in pixel units.
        steps: number of gradient steps (0 returns the random start, or ``x``).
        step_size: default :func:`eval_step_size`.
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"`` or ``"cw"`` (margin).
        random_start: uniform start in the ball.
        restarts: independent runs; each example keeps its worst over all of them.
        keep_best: keep each example's worst iterate (the first misclassified one, else
            the highest loss) instead of the last; the evaluation setting.
        generator: RNG of the random starts.

    Returns:
        Adversarial images, detached, in [0, 1] and within ``eps`` of ``x``.
    """
    if loss not in LOSSES:
        raise ConfigError(f"unknown attack loss {loss!r}; known: {', '.join(LOSSES)}")
    if eps == 0 or steps < 0:
        return x.detach().clone()
    threat, loss_fn = get_threat(norm), LOSSES[loss]
    step_size = eval_step_size(eps, max(steps, 1)) if step_size is None else step_size  # steps=0: no step
    x = x.detach()
    best = _Best(x) if (keep_best or restarts > 1) else None
    for _ in range(restarts):
        delta = threat.init(x, eps, generator) if random_start else torch.zeros_like(x)
        delta = (x + delta).clamp(0, 1) - x
        for _ in range(steps):
            delta.requires_grad_(True)
            logits = predict(x + delta)
            per_ex = loss_fn(logits, y)
            if best is not None and keep_best:
                best.update(x + delta.detach(), logits.detach(), per_ex.detach(), y)
            (grad,) = torch.autograd.grad(per_ex.sum(), delta)
            delta = threat.project(threat.step(delta.detach(), grad, step_size), eps)
            delta = (x + delta).clamp(0, 1) - x
        if best is None:
            return (x + delta).detach()
        with torch.no_grad():
            logits = predict(x + delta)
            best.update(x + delta, logits, loss_fn(logits, y), y)
    return best.x


class _Best:
    """Per-example worst case so far: a misclassified iterate wins, then the highest loss."""

    def __init__(self, x: torch.Tensor):
        self.x = x.clone()
        self.loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        self.fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def update(self, xa: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor, y: torch.Tensor) -> None:
        wrong = logits.argmax(1) != y
        take = ~self.fooled & (wrong | (loss > self.loss))
        self.x[take] = xa[take].to(self.x.dtype)
        self.loss = torch.where(take, loss, self.loss)
        self.fooled |= wrong


def fgsm(predict, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf", loss: str = "ce"):
    """Fast gradient sign method (Goodfellow et al. 2015): one full-size step, no random start."""
    return pgd(predict, x, y, eps=eps, steps=1, step_size=eps, norm=norm, loss=loss,
               random_start=False, keep_best=False)
