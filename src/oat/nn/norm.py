"""BN (dual/switchable) + FiLM as one layer, and the one place where the two are folded.

In eval mode BN is the per-channel affine map ``a·x + b`` (``a = γ/√(var + ε)``, ``b = β − mean·a``)
and FiLM is ``μ·z + σ`` per λ, so BN followed by FiLM is ``(μa)·x + (σ + μb)``: :func:`fold`
computes that (the attack path of :class:`Norm`). Without the running statistics, FiLM still
folds into BN's affine parameters, ``(γμ, βμ + σ)``, which keeps the BN exact in train mode
too (``fold(..., statistics=False)``, used by :func:`oat.models.export.export`).
"""

from __future__ import annotations

import torch
from torch import nn

from oat.conditioning import Conditioning
from oat.nn.context import Ctx
from oat.nn.dual_bn import DualBN
from oat.nn.film import FiLM


@torch.no_grad()
def fold(bn: nn.modules.batchnorm._BatchNorm, mu: torch.Tensor, sigma: torch.Tensor, *,
         statistics: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """BN then FiLM(μ, σ) as one ``(scale, shift)``.

    Args:
        bn: an affine BN layer.
        mu: FiLM scale, ``(C,)`` or ``(K, C)`` for K distinct λ.
        sigma: FiLM shift, the same shape.
        statistics: fold BN's running statistics too (eval mode: ``y = scale·x + shift``);
            False folds FiLM into BN's affine only (``y = BN'(x)`` with ``γ' = scale``,
            ``β' = shift``), exact with batch statistics as well.
    """
    if not statistics:
        return bn.weight * mu, bn.bias * mu + sigma
    a, b = bn_affine(bn)
    return mu * a, sigma + mu * b


@torch.no_grad()
def bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as ``a·x + b`` per channel: ``a = γ/√(var + ε)``, ``b = β − mean·a``."""
    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return a, bn.bias - bn.running_mean * a


class Norm(nn.Module):
    """A (dual, switchable) BN followed by FiLM when the spec has FiLM and ``film`` is True.

    The reference puts FiLM after every main-path BN, never after a shortcut's BN or the
    wide ResNets' final BN; callers say which with ``film``.
    """

    def __init__(self, channels: int, spec: Conditioning, film: bool = True):
        super().__init__()
        self.bn = DualBN(channels, spec.widths, spec.dual_bn)
        self.film = FiLM(channels, spec.film_input_dim, spec.film_form) if (spec.film and film) else None

    def forward(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        if ctx.film_cache is not None and not self.training and self._one_branch(ctx):
            # Attack path (eval mode, a predictor's context): BN with running statistics and
            # FiLM are both per-channel affine maps, so they fold into one (per-example) scale
            # and shift, computed once per predictor and reused on every PGD step. A BN alone
            # (a dedicated model, a shortcut) folds the same way, so a dedicated model's attack
            # pays no more per step than an OAT model's.
            scale, shift = self._folded(x, ctx)
            return torch.addcmul(shift, x, scale)
        x = self.bn(x, ctx)
        return x if self.film is None else self.film(x, ctx)

    def _one_branch(self, ctx: Ctx) -> bool:
        """Whether every example of ``ctx`` takes the same BN (what a fold needs)."""
        return ctx.route != "mixed" or not self.bn.dual

    @torch.no_grad()
    def _folded(self, x: torch.Tensor, ctx: Ctx) -> tuple[torch.Tensor, torch.Tensor]:
        key = ("norm", id(self), x.dtype)
        if key not in ctx.film_cache:
            bn = self.bn.branch(ctx)
            if self.film is None:
                scale, shift = bn_affine(bn)
            else:
                mu, sigma = self.film.table_of(ctx, x.shape[1]).split(x.shape[1], dim=1)  # FiLM(z) = μ·z + σ
                scale, shift = fold(bn, mu, sigma)
                if ctx.inverse is not None:
                    scale, shift = scale[ctx.inverse], shift[ctx.inverse]
            view = (-1, x.shape[1]) + (1,) * (x.dim() - 2)
            # Cast to the input's dtype: under bf16 autocast (train_attack_precision=amp) the shift
            # is rounded once here, where an unfolded BN would subtract the mean in bf16 instead.
            ctx.film_cache[key] = (scale.view(view).to(x.dtype), shift.view(view).to(x.dtype))
        return ctx.film_cache[key]
