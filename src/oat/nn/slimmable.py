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
        if self._strided_1x1_on_few_channels(x):
            # PyTorch's CPU weight gradient of a 1×1 strided conv on a channels_last input with 2–7
            # input channels corrupts the heap ("double free or corruption"; torch 2.13 on an AMD
            # EPYC, e.g. a ResNet shortcut at base 4). The same map, without that kernel: the 1×1
            # conv at stride 1 on the subsampled input.
            return F.conv2d(x[:, :, :: self.stride[0], :: self.stride[1]], w, b)
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def _strided_1x1_on_few_channels(self, x: torch.Tensor) -> bool:
        return (x.device.type == "cpu" and self.kernel_size == (1, 1) and self.stride != (1, 1)
                and self.padding == (0, 0) and self.dilation == (1, 1) and self.groups == 1
                and 1 < x.shape[1] < 8 and x.is_contiguous(memory_format=torch.channels_last))


class SLinear(nn.Linear):
    """Linear layer reading only the input features present at the context's width."""

    def forward(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        w = self.weight if x.shape[1] == self.in_features else self.weight[:, : x.shape[1]]
        return F.linear(x, w, self.bias)
