"""The architectures: a small CNN for tiny images, CIFAR ResNets, PreAct-ResNet, WideResNets.

All take pixels in [0, 1] (no normalisation layer, as the reference) and a
:class:`~oat.conditioning.Conditioning` spec that decides OAT/OATS vs dedicated form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from oat.conditioning import Conditioning
from oat.models.base import ConditionedNet
from oat.models.blocks import BasicBlock, PreActBlock, Stage, conv3x3
from oat.nn import Norm, SConv2d, SLinear
from oat.nn.context import Ctx


def _pool_fc(net, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
    return net.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), ctx)


class SmallCNN(ConditionedNet):
    """Three conv-BN-FiLM-ReLU layers (the last two strided) and a linear head.

    Made for 8×8 digits and 28×28 MNIST on a CPU: ~0.1M parameters at ``base=32``.
    """

    def __init__(self, spec: Conditioning, in_channels: int = 1, num_classes: int = 10, base: int = 32):
        super().__init__(spec)
        chans = [base, 2 * base, 4 * base]
        self.convs = torch.nn.ModuleList()
        self.norms = torch.nn.ModuleList()
        cin = in_channels
        for i, c in enumerate(chans):
            self.convs.append(SConv2d(cin, c, 3, stride=1 if i == 0 else 2, padding=1, bias=False))
            self.norms.append(Norm(c, spec))
            cin = c
        self.fc = SLinear(chans[-1], num_classes)

    def forward_ctx(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x, ctx), ctx))
        return _pool_fc(self, x, ctx)


class ResNet(ConditionedNet):
    """CIFAR ResNet with basic blocks (ResNet-18: [2,2,2,2], ResNet-34: [3,4,6,3])."""

    def __init__(self, spec: Conditioning, layers=(2, 2, 2, 2), in_channels: int = 3,
                 num_classes: int = 10, base: int = 64):
        super().__init__(spec)
        self.stem, self.stem_n = conv3x3(in_channels, base), Norm(base, spec)
        stages, cin = [], base
        for i, n in enumerate(layers):
            cout = base * 2**i
            blocks = [BasicBlock(cin if j == 0 else cout, cout, (1 if i == 0 else 2) if j == 0 else 1, spec)
                      for j in range(n)]
            stages.append(Stage(blocks))
            cin = cout
        self.stages = torch.nn.ModuleList(stages)
        self.fc = SLinear(cin, num_classes)

    def forward_ctx(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        x = F.relu(self.stem_n(self.stem(x, ctx), ctx))
        for s in self.stages:
            x = s(x, ctx)
        return _pool_fc(self, x, ctx)


class PreActNet(ConditionedNet):
    """Pre-activation ResNet / WideResNet: stages of :class:`PreActBlock`, final BN-ReLU.

    As the reference's wide ResNets, no FiLM follows the final BN before pooling.
    """

    def __init__(self, spec: Conditioning, stage_channels, stage_blocks, stem_channels: int,
                 in_channels: int = 3, num_classes: int = 10, dropout: float = 0.0):
        super().__init__(spec)
        self.stem = conv3x3(in_channels, stem_channels)
        stages, cin = [], stem_channels
        for i, (cout, n) in enumerate(zip(stage_channels, stage_blocks)):
            blocks = [PreActBlock(cin if j == 0 else cout, cout, (1 if i == 0 else 2) if j == 0 else 1,
                                  spec, dropout) for j in range(n)]
            stages.append(Stage(blocks))
            cin = cout
        self.stages = torch.nn.ModuleList(stages)
        self.final_n = Norm(cin, spec, film=False)
        self.fc = SLinear(cin, num_classes)

    def forward_ctx(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        x = self.stem(x, ctx)
        for s in self.stages:
            x = s(x, ctx)
        return _pool_fc(self, F.relu(self.final_n(x, ctx)), ctx)


def wide_resnet(spec: Conditioning, depth: int, widen: int, dropout: float = 0.0, **kw) -> PreActNet:
    """WRN-depth-widen (Zagoruyko & Komodakis): 3 stages of (depth-4)/6 pre-activation blocks."""
    if (depth - 4) % 6:
        raise ValueError(f"WideResNet depth must be 6n+4; got {depth}")
    n = (depth - 4) // 6
    return PreActNet(spec, [16 * widen, 32 * widen, 64 * widen], [n, n, n], 16, dropout=dropout, **kw)
