"""Slim sub-networks as real, standalone modules (OATS, Sec. 3.3).

Two uses of the same slicing:

* :func:`export` turns one ``(λ, width)`` of a conditioned model into a dense network
  whose parameters *are* the slim ones (sliced copies): every convolution and linear
  layer keeps only the channels that width uses, the (clean or adversarial) BN of that
  width is the only BN left, and FiLM, a per-channel constant once λ is fixed, is folded
  into that BN's affine parameters. For ONNX, parameter counts, FLOPs and deployment.
  ``model.at(lam, width)`` stays the storage-sharing view used for attacks.
* :func:`shrink_to_widths` makes a model whose largest trained width is ``w < 1`` store
  only the channels ``w`` uses (the dedicated slim baseline, ``--widths 0.5``), so its
  checkpoint, parameter count and FLOPs are those of a network of that width.

Which input channels a layer sees at a width (the image's channels for the first conv,
sliced ones after) is read from one traced forward pass, so no architecture has to
describe its wiring.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from oat.conditioning import LAM_TOL, scaled
from oat.errors import WidthError
from oat.models.base import ConditionedNet
from oat.nn import DualBN, FiLM, Norm, SConv2d, SLinear, fold
from oat.nn.context import Ctx

TRACE_SIZE = 8  # spatial size of the tracing input: every registered net runs at 8×8


@torch.no_grad()
def trace_in_channels(model: ConditionedNet, width: float, size: int = TRACE_SIZE) -> dict[str, int]:
    """Input channels that every slimmable conv/linear and FiLM layer sees at ``width``.

    One eval-mode forward pass of a single ``size×size`` image; BN running statistics and
    the caller's training mode are left as they were. A model without slimmable layers (a
    converted one: plain ``Conv2d``/``Linear``) has nothing whose channels depend on the width,
    and its own network may not run at ``size``: nothing is traced.
    """
    seen: dict[str, int] = {}
    if not any(isinstance(m, (SConv2d, SLinear)) for m in model.modules()):
        return seen

    def record(name):
        def hook(mod, args):  # returns None: the inputs go on unchanged
            seen[name] = args[0].shape[1]
        return hook

    hooks = [m.register_forward_pre_hook(record(name))
             for name, m in model.named_modules() if isinstance(m, (SConv2d, SLinear, FiLM))]
    was = model.training
    model.eval()
    try:
        dev = next(model.parameters()).device
        x = torch.zeros(1, model.arch.get("in_channels", 3), size, size, device=dev)
        model.forward_ctx(x, model.condition(model.spec.lams[-1], width))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return seen


def _slice_param(p: nn.Parameter, *index) -> nn.Parameter:
    return nn.Parameter(p.detach()[index].clone(), requires_grad=p.requires_grad)


def _film_rows(film: FiLM, c: int) -> torch.Tensor:
    # μ rows [:c] and σ rows [C:C+c], sliced separately (see oat.nn.film).
    return torch.cat([torch.arange(c), torch.arange(film.channels, film.channels + c)])


def shrink_to_widths(model: ConditionedNet) -> ConditionedNet:
    """Keep only the channels of the model's largest trained width, in place.

    Layers keep their nominal (full-width) ``out_channels``, so slicing at a width still
    reads the same first ``int(C·w)`` channels; only the stored tensors get smaller. A
    no-op when the largest width is 1.
    """
    w = max(model.spec.widths)
    if w >= 1.0:
        return model
    cin = trace_in_channels(model, w)
    for name, m in model.named_modules():
        if isinstance(m, SConv2d):
            cout = scaled(m.out_channels, w) if m.slim_out else m.out_channels
            m.weight = _slice_param(m.weight, slice(0, cout), slice(0, cin[name]))
            if m.bias is not None:
                m.bias = _slice_param(m.bias, slice(0, cout))
        elif isinstance(m, SLinear):
            m.weight = _slice_param(m.weight, slice(None), slice(0, cin[name]))
        elif isinstance(m, FiLM):
            c = cin[name]
            rows = _film_rows(m, c)
            m.fc1.weight, m.fc1.bias = _slice_param(m.fc1.weight, slice(0, 2 * c)), _slice_param(m.fc1.bias,
                                                                                                  slice(0, 2 * c))
            m.fc2.weight = _slice_param(m.fc2.weight, rows, slice(0, 2 * c))
            m.fc2.bias = _slice_param(m.fc2.bias, rows)
            m.channels = c
    return model


# ------------------------------------------------------------------ the dense layers
class DenseConv2d(nn.Conv2d):
    """A plain convolution that accepts (and ignores) the conditioning context."""

    def forward(self, x: torch.Tensor, ctx: Ctx | None = None) -> torch.Tensor:
        return super().forward(x)


class DenseLinear(nn.Linear):
    def forward(self, x: torch.Tensor, ctx: Ctx | None = None) -> torch.Tensor:
        return super().forward(x)


class FoldedNorm(nn.Module):
    """One BN whose affine parameters already include the FiLM scale and shift of a fixed λ."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.bn = bn

    def forward(self, x: torch.Tensor, ctx: Ctx | None = None) -> torch.Tensor:
        return self.bn(x)


def _dense_conv(m: SConv2d, cin: int, width: float) -> DenseConv2d:
    cout = scaled(m.out_channels, width) if m.slim_out else m.out_channels
    d = DenseConv2d(cin, cout, m.kernel_size, m.stride, m.padding, m.dilation, m.groups, m.bias is not None)
    with torch.no_grad():
        d.weight.copy_(m.weight[:cout, :cin])
        if m.bias is not None:
            d.bias.copy_(m.bias[:cout])
    return d.to(m.weight.device)


def _dense_linear(m: SLinear, cin: int) -> DenseLinear:
    d = DenseLinear(cin, m.out_features, m.bias is not None)
    with torch.no_grad():
        d.weight.copy_(m.weight[:, :cin])
        if m.bias is not None:
            d.bias.copy_(m.bias)
    return d.to(m.weight.device)


@torch.no_grad()
def _folded_norm(norm: Norm, ctx: Ctx) -> FoldedNorm:
    """The BN of this width and λ's branch, with FiLM ``y·μ + σ`` folded into its affine."""
    bn = copy.deepcopy(norm.bn.branch(ctx))
    if norm.film is not None:
        mu, sigma = (t[0] for t in norm.film.params(ctx.enc, bn.num_features))
        if not bn.affine:  # pragma: no cover - every registered net has affine BN
            raise NotImplementedError("folding FiLM needs an affine BN")
        # Still one BN, exact in train and eval mode (see oat.nn.norm).
        weight, bias = fold(bn, mu, sigma, statistics=False)
        bn.weight.copy_(weight)
        bn.bias.copy_(bias)
    return FoldedNorm(bn)


class SlimNet(nn.Module):
    """A standalone dense network ``x -> logits`` for one (λ, width); see :func:`export`."""

    def __init__(self, net: ConditionedNet, lam: float, width: float):
        super().__init__()
        self.net = net
        self.lam, self.width = lam, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Every layer left is dense and ignores the context; only its shape is needed.
        return self.net.forward_ctx(x, Ctx(enc=None, inverse=None, route="clean", width=1.0))

    def extra_repr(self) -> str:
        return f"lam={self.lam:g}, width={self.width:g}"


def export(model: ConditionedNet, lam: float, width: float | None = None) -> SlimNet:
    """A standalone dense copy of ``model`` at ``(lam, width)``; the parent is not changed.

    Args:
        model: a conditioned (OAT/OATS or dedicated) model.
        lam: trade-off weight (checked against the model's λ set or encoding).
        width: a trained width multiplier (None: the largest).

    Returns:
        A :class:`SlimNet` (same train/eval mode as ``model``) whose every parameter is a
        sliced copy of the width's channels; its outputs equal ``model(x, lam, width)``.

    Raises:
        WidthError: ``width`` was not trained. LamError: ``lam`` is not accepted.
    """
    ctx = model.condition(float(lam), width)
    w = ctx.width
    if not 0 < w <= 1:  # pragma: no cover - the spec validates widths
        raise WidthError(f"width {w} is outside (0, 1]")
    cin = trace_in_channels(model, w)
    net = copy.deepcopy(model)
    replace_layers(net, "", cin, w, lambda norm: _folded_norm(norm, ctx))
    net.lam_table = torch.zeros(0, device=model.lam_table.device)
    lam_v = model.spec.check_lam(float(lam))
    return SlimNet(net, lam_v if lam_v > LAM_TOL else 0.0, w).train(model.training)


def replace_layers(module: nn.Module, prefix: str, cin: dict[str, int], width: float, norm_to) -> None:
    """Replace, below ``module``, convolutions and linear layers by their dense slices at ``width`` and
    every ``Norm`` by ``norm_to(norm)`` (a folded BN for one λ, or a λ-routed one for a λ-input graph)."""
    for name, child in list(module.named_children()):
        full = f"{prefix}{name}"
        if isinstance(child, SConv2d):
            new = _dense_conv(child, cin[full], width)
        elif isinstance(child, SLinear):
            new = _dense_linear(child, cin[full])
        elif isinstance(child, Norm):
            new = norm_to(child)
        elif isinstance(child, (DualBN, FiLM)):  # pragma: no cover - always inside a Norm
            raise NotImplementedError(f"{full}: a DualBN/FiLM outside a Norm cannot be exported")
        else:
            replace_layers(child, f"{full}.", cin, width, norm_to)
            continue
        setattr(module, name, new)
