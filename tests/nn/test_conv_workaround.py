"""The 1×1 strided conv on few channels_last channels: the same map, without PyTorch's CPU kernel
whose weight gradient corrupts the heap there (a ResNet shortcut at base 4)."""

import pytest
import torch

from oat.nn import SConv2d
from oat.nn.context import Ctx


@pytest.mark.parametrize("cin", [2, 4, 7])
def test_strided_1x1_conv_on_few_channels_last_channels_equals_the_plain_conv(cin):
    torch.manual_seed(0)
    conv = SConv2d(cin, 2 * cin, 1, stride=2, bias=False)
    ctx = Ctx(enc=None, inverse=None, route="clean")
    x = torch.randn(12, cin, 15, 15)
    g = torch.randn(12, 2 * cin, 8, 8)
    assert conv._strided_1x1_on_few_channels(x.contiguous(memory_format=torch.channels_last))
    outs = []
    for fmt in (torch.contiguous_format, torch.channels_last):  # the plain kernel is safe on NCHW
        xi = x.clone().contiguous(memory_format=fmt).requires_grad_()
        conv.weight.grad = None
        for _ in range(5):  # the corruption showed within a few backward passes
            y = conv(xi, ctx)
            xi.grad = conv.weight.grad = None
            y.backward(g)
        outs.append((y.detach(), xi.grad, conv.weight.grad.clone()))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)  # sums in another order


def test_the_workaround_is_only_for_that_case():
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    assert not SConv2d(4, 8, 3, stride=2, padding=1)._strided_1x1_on_few_channels(x)
    assert not SConv2d(4, 8, 1, stride=1)._strided_1x1_on_few_channels(x)
    assert not SConv2d(4, 8, 1, stride=2)._strided_1x1_on_few_channels(x.contiguous())
    wide = torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last)
    assert not SConv2d(16, 32, 1, stride=2)._strided_1x1_on_few_channels(wide)
