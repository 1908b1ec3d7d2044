"""Dual (and switchable) batch normalisation (OAT Sec. 3.2, OATS Sec. 3.3).

Every BN is a pair (BN_clean, BN_adv) per trained width. Examples with λ == 0 use
BN_clean; examples with λ > 0 use BN_adv for both their clean and adversarial passes.
Each width keeps its own statistics: slim sub-networks see different feature
distributions. With ``dual=False`` there is one BN per width (the dedicated models and
the single-BN ablation).
"""

from __future__ import annotations

import torch
from torch import nn

from oat.conditioning import scaled
from oat.nn.context import Ctx


class DualBN(nn.Module):
    """``len(widths)`` × (clean, adversarial) BatchNorm2d (or BatchNorm1d) pairs."""

    def __init__(self, channels: int, widths: tuple[float, ...] = (1.0,), dual: bool = True, dims: int = 2):
        super().__init__()
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        self.dual = dual
        # bns[width_idx][0] is the clean (or only) BN, bns[width_idx][1] the adversarial one.
        self.bns = nn.ModuleList(
            nn.ModuleList(bn(scaled(channels, w)) for _ in range(2 if dual else 1)) for w in widths
        )

    def branch(self, ctx: Ctx) -> nn.Module:
        """The one BN of a context whose examples all take one branch (λ == 0: clean, else adversarial)."""
        pair = self.bns[ctx.width_idx]
        if not self.dual or ctx.route == "clean":
            return pair[0]
        if ctx.route == "adv":
            return pair[1]
        raise ValueError("a batch mixing λ = 0 and λ > 0 uses both branches")

    def forward(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        if not self.dual or ctx.route != "mixed":
            return self.branch(ctx)(x)
        pair = self.bns[ctx.width_idx]
        k = ctx.n_clean_prefix
        if k is not None:  # same branches and batch statistics as the gather below, fewer copies
            # split, not two slices: its backward is one cat, where each slice's backward
            # writes its gradient into a zero tensor of the whole batch and the two are summed.
            clean, adv = x.split([k, x.shape[0] - k])
            return torch.cat([pair[0](clean), pair[1](adv)])
        out = torch.empty_like(x)
        out[ctx.clean_idx] = pair[0](x[ctx.clean_idx])
        out[ctx.adv_idx] = pair[1](x[ctx.adv_idx])
        return out
