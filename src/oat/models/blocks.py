"""The residual blocks of the registered nets, built from conditioned layers (:mod:`oat.nn`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from oat.conditioning import Conditioning
from oat.nn import Norm, SConv2d
from oat.nn.context import Ctx


def conv3x3(cin: int, cout: int, stride: int = 1) -> SConv2d:
    return SConv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-FiLM-ReLU-conv-BN-FiLM, plus (conv-BN) shortcut."""

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

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        for b in self.blocks:
            x = b(x, ctx)
        return x
