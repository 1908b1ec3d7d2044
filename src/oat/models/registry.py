"""One model registry (timm-style): a decorator registers a tiny entry function per model."""

from __future__ import annotations

from collections.abc import Callable

from oat.conditioning import Conditioning
from oat.errors import ConfigError
from oat.models.base import ConditionedNet
from oat.models.conversion import CONVERTED, rebuild
from oat.models.export import shrink_to_widths
from oat.models.nets import PreActNet, ResNet, SmallCNN, wide_resnet

MODELS: dict[str, Callable[..., ConditionedNet]] = {}
DESCRIPTIONS: dict[str, str] = {}
# Models built from other trained models (oat mix), not architectures to train: create_model and
# checkpoints know them, list_models (and so `oat models`, --model) does not.
COMPOSITES: set[str] = set()


def register_model(name: str, description: str = "", composite: bool = False):
    def deco(fn):
        MODELS[name] = fn
        DESCRIPTIONS[name] = description or (fn.__doc__ or "").strip().splitlines()[0]
        if composite:
            COMPOSITES.add(name)
        return fn

    return deco


def list_models() -> list[str]:
    """The architectures one can train (composites of trained models excluded)."""
    return sorted(set(MODELS) - COMPOSITES)


def create_model(name: str, spec: Conditioning | None = None, *, in_channels: int = 3,
                 num_classes: int = 10, **kwargs) -> ConditionedNet:
    """Build a registered model.

    Args:
        name: registry name (see :func:`list_models`).
        spec: conditioning spec; default the paper's OAT spec.
        in_channels: image channels (1 for digits/MNIST, 3 for CIFAR/SVHN/STL-10).
        num_classes: number of classes.
        **kwargs: architecture options (``None`` values are dropped).
    """
    if name == CONVERTED:
        raise ConfigError(f"model {CONVERTED!r} is your own network: train it with model_file (oat train --model-file "
                          "FILE.py[:FACTORY]) or build it with oat.convert")
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    spec = spec or Conditioning()
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    model = MODELS[name](spec, in_channels=in_channels, num_classes=num_classes, **kwargs)
    model.arch = {"name": name, "in_channels": in_channels, "num_classes": num_classes, "kwargs": kwargs}
    # A model whose largest width is w < 1 (a dedicated slim baseline) stores only w's channels.
    return shrink_to_widths(model)


def build_model(arch: dict, spec: Conditioning, module=None) -> ConditionedNet:
    """The network a checkpoint's ``arch`` record describes, without weights: a registered model, or a
    converted one (rebuilt from its recorded source, or from ``module``; see :func:`oat.models.conversion.rebuild`)."""
    if arch["name"] == CONVERTED:
        return rebuild(arch, spec, module)
    if module is not None:
        raise ConfigError(f"module= rebuilds a network converted with oat.convert; this checkpoint holds the "
                          f"registered model {arch['name']!r}")
    return create_model(arch["name"], spec, in_channels=arch["in_channels"], num_classes=arch["num_classes"],
                        **arch.get("kwargs", {}))


@register_model("small-cnn", "3-layer CNN for tiny images (8x8 digits, 28x28 MNIST); CPU-friendly")
def small_cnn(spec, **kw):
    return SmallCNN(spec, **kw)


@register_model("resnet18", "CIFAR ResNet-18 (11.2M)")
def resnet18(spec, **kw):
    return ResNet(spec, (2, 2, 2, 2), **kw)


@register_model("resnet34", "CIFAR ResNet-34 (21.3M), the paper's CIFAR-10 model")
def resnet34(spec, **kw):
    return ResNet(spec, (3, 4, 6, 3), **kw)


@register_model("preact-resnet18", "Pre-activation ResNet-18 (11.2M)")
def preact_resnet18(spec, **kw):
    return PreActNet(spec, [64, 128, 256, 512], [2, 2, 2, 2], 64, **kw)


@register_model("wrn-16-8", "WideResNet-16-8 with dropout 0.3 (11.0M), the paper's SVHN model")
def wrn_16_8(spec, dropout: float = 0.3, **kw):
    return wide_resnet(spec, 16, 8, dropout, **kw)


@register_model("wrn-40-2", "WideResNet-40-2 with dropout 0.3 (2.2M), the paper's STL-10 model")
def wrn_40_2(spec, dropout: float = 0.3, **kw):  # 0.3: the authors' STL-10 model file
    return wide_resnet(spec, 40, 2, dropout, **kw)


@register_model("wrn-34-10", "WideResNet-34-10 (46.2M), the common robustness reference")
def wrn_34_10(spec, dropout: float = 0.0, **kw):
    return wide_resnet(spec, 34, 10, dropout, **kw)


@register_model("wrn-16-1", "WideResNet-16-1 (0.18M), a small CPU-friendly residual net")
def wrn_16_1(spec, dropout: float = 0.0, **kw):
    return wide_resnet(spec, 16, 1, dropout, **kw)


@register_model("mix-outputs", "two trained models mixed by α on their probabilities or logits", composite=True)
def mix_outputs(spec, **kw):
    from oat.models.mixture import OutputMixture

    return OutputMixture(spec, **kw)


@register_model("interp-weights", "one network with two trained models' weights interpolated by α", composite=True)
def interp_weights(spec, **kw):
    from oat.models.mixture import WeightInterpolation

    return WeightInterpolation(spec, **kw)
