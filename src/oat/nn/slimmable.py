"""Slimmable convolution and linear layers (OATS; Yu et al., "Slimmable Neural Networks").

A width w uses the first ``int(C·w)`` output channels; the input channel count is read
from the input itself, so a layer needs no mutable "active width" attribute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from oat.conditioning import scaled
from oat.nn.context import Ctx


class SConv2d(nn.Conv2d):
    """Conv2d whose output channels are sliced to the context's width (unless ``slim_out=False``)."""

    def __init__(self, *args, slim_out: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.slim_out = slim_out

    def forward(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        cin = x.shape[1]
        cout = scaled(self.out_channels, ctx.width) if self.slim_out else self.out_channels
        w = self.weight
        if cout != self.out_channels or cin != self.in_channels:
            w = w[:cout, :cin]
        b = None if self.bias is None else self.bias[:cout]
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)


class SLinear(nn.Linear):
    """Linear layer reading only the input features present at the context's width."""

    def forward(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        w = self.weight if x.shape[1] == self.in_features else self.weight[:, : x.shape[1]]
        return F.linear(x, w, self.bias)
