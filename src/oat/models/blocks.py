"""Shared conditioned blocks: BN (dual/switchable) + FiLM, and the residual blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from oat.conditioning import Conditioning
from oat.nn import DualBN, FiLM, SConv2d
from oat.nn.context import Ctx


class Norm(nn.Module):
    """A (dual, switchable) BN followed by FiLM when the spec has FiLM and ``film`` is True.

    The reference puts FiLM after every main-path BN, never after a shortcut's BN or the
    wide ResNets' final BN; callers say which with ``film``.
    """

    takes_ctx = True

    def __init__(self, channels: int, spec: Conditioning, film: bool = True):
        super().__init__()
        self.bn = DualBN(channels, spec.widths, spec.dual_bn)
        self.film = FiLM(channels, spec.enc_dim, spec.film_form) if (spec.film and film) else None

    def forward(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        if self.film is not None and ctx.film_cache is not None and not self.training and ctx.route != "mixed":
            # Attack path (eval mode, cached FiLM): BN with running statistics and FiLM are
            # both per-channel affine maps, so they fold into one per-example scale and
            # shift, computed once per predictor and reused on every PGD step.
            scale, shift = self._folded(x, ctx)
            return torch.addcmul(shift, x, scale)
        x = self.bn(x, ctx)
        return x if self.film is None else self.film(x, ctx)

    @torch.no_grad()
    def _folded(self, x: torch.Tensor, ctx: Ctx) -> tuple[torch.Tensor, torch.Tensor]:
        key = ("norm", id(self), x.dtype)
        if key not in ctx.film_cache:
            pair = self.bn.bns[ctx.width_idx]
            bn = pair[0] if (not self.bn.dual or ctx.route == "clean") else pair[1]
            a = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # BN(x) = a·x + b
            b = bn.bias - bn.running_mean * a
            mu, sigma = self.film.params(ctx.enc, x.shape[1])  # FiLM(z) = μ·z + σ, per distinct λ
            scale, shift = mu * a, sigma + mu * b
            if ctx.inverse is not None:
                scale, shift = scale[ctx.inverse], shift[ctx.inverse]
            view = (-1, x.shape[1]) + (1,) * (x.dim() - 2)
            ctx.film_cache[key] = (scale.view(view).to(x.dtype), shift.view(view).to(x.dtype))
        return ctx.film_cache[key]


def conv3x3(cin: int, cout: int, stride: int = 1, slim_in: bool = True) -> SConv2d:
    return SConv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-FiLM-ReLU-conv-BN-FiLM, plus (conv-BN) shortcut."""

    takes_ctx = True

    def __init__(self, cin: int, cout: int, stride: int, spec: Conditioning):
        super().__init__()
        self.conv1, self.n1 = conv3x3(cin, cout, stride), Norm(cout, spec)
        self.conv2, self.n2 = conv3x3(cout, cout), Norm(cout, spec)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = SConv2d(cin, cout, 1, stride=stride, bias=False)
            self.short_n = Norm(cout, spec, film=False)

    def forward(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        o = F.relu(self.n1(self.conv1(x, ctx), ctx))
        o = self.n2(self.conv2(o, ctx), ctx)
        s = x if self.short is None else self.short_n(self.short(x, ctx), ctx)
        return F.relu(o + s)


class PreActBlock(nn.Module):
    """Pre-activation block (He et al. 2016; Zagoruyko's WRN with ``dropout``).

    BN-FiLM-ReLU-conv-BN-FiLM-ReLU-(dropout)-conv; the shortcut convolves the
    pre-activated input when the shape changes.
    """

    takes_ctx = True

    def __init__(self, cin: int, cout: int, stride: int, spec: Conditioning, dropout: float = 0.0):
        super().__init__()
        self.n1, self.conv1 = Norm(cin, spec), conv3x3(cin, cout, stride)
        self.n2, self.conv2 = Norm(cout, spec), conv3x3(cout, cout)
        self.dropout = dropout
        self.short = SConv2d(cin, cout, 1, stride=stride, bias=False) if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        o = F.relu(self.n1(x, ctx))
        s = x if self.short is None else self.short(o, ctx)
        o = F.relu(self.n2(self.conv1(o, ctx), ctx))
        if self.dropout:
            o = F.dropout(o, self.dropout, self.training)
        return self.conv2(o, ctx) + s


class Stage(nn.Module):
    """A sequence of blocks, the first one possibly strided."""

    takes_ctx = True

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        for b in self.blocks:
            x = b(x, ctx)
        return x
