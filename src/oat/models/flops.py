"""Forward FLOPs of a model or sub-network, counted by PyTorch's own FLOP counter.

``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per multiply-accumulate of
the matrix products and convolutions (BN, activations and additions are not counted, as
in the usual "FLOPs = 2 × MACs" tables). Counting needs only shapes, so a model built on
the ``meta`` device is counted without allocating or initialising its weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from oat.conditioning import Conditioning


def _device_of(fn) -> torch.device:
    if isinstance(fn, nn.Module):
        for t in fn.parameters():
            return t.device
        for t in fn.buffers():
            return t.device
    return torch.device("cpu")


def count_flops(module_or_callable: nn.Module | Callable, input_shape, *, lam: float | None = None,
                width: float | None = None) -> int:
    """Forward FLOPs (2 × MACs) of one call on a zero input of ``input_shape``.

    Args:
        module_or_callable: an ``x -> logits`` module or callable (e.g. ``model.at(lam, width)``),
            or a :class:`~oat.models.ConditionedNet`, which is bound to ``(lam, width)`` first.
        input_shape: ``(C, H, W)`` (one image) or ``(N, C, H, W)``.
        lam: λ for a conditioned model (default its largest trained λ).
        width: width multiplier for a slimmable model (default full width).

    Returns:
        The total FLOPs as an int. Modules are counted in eval mode (their mode is restored).
    """
    from oat.models.base import ConditionedNet

    fn = module_or_callable
    if isinstance(fn, ConditionedNet):
        fn = fn.at(fn.spec.lams[-1] if lam is None else lam, width)
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    x = torch.zeros(shape, device=_device_of(fn))
    was = fn.training if isinstance(fn, nn.Module) else None
    if was:
        fn.eval()  # batch statistics of a single image would fail, and are not what is counted
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn(x)
    finally:
        if was:
            fn.train()
    return int(counter.get_total_flops())


def describe(name: str, spec: Conditioning, in_channels: int, size: int, num_classes: int = 10) -> tuple[int, int]:
    """``(parameters, FLOPs at size×size)`` of a registered model, built on the meta device."""
    from oat.models.registry import create_model

    with torch.device("meta"):
        model = create_model(name, spec, in_channels=in_channels, num_classes=num_classes)
    params = sum(p.numel() for p in model.parameters())
    return params, count_flops(model, (in_channels, size, size))
