"""``oat.convert``: a user's own CNN as an OAT model (OAT, Sec. 3.1–3.2: dual BN + FiLM).

Every ``BatchNorm2d`` of the user's module becomes an :class:`oat.nn.Norm` (dual BN, and FiLM
after it unless its name matches ``no_film``: by default, as the reference, none after a
shortcut's BN), initialised from that BN (weights, statistics, ε, momentum). The result is a
:class:`ConvertedNet`, an ordinary :class:`~oat.models.ConditionedNet`, so training, the λ
sweep, ``at(λ)``, export and checkpoints treat it as any registered architecture.

The user's ``forward`` stays as written: it calls each replaced layer with the features alone.
The λ context reaches those layers through a slot of the network's own: for the duration of
one forward, :meth:`ConvertedNet.forward_ctx` puts its :class:`~oat.nn.context.Ctx` there and
each :class:`ConvertedNorm` reads it. The slot is a per-thread stack (a nested or concurrent
forward sees its own context) owned by one network (a copy gets a fresh one), never global.

What is refused, in one line: a module without ``BatchNorm2d``; other normalisation layers
(BatchNorm1d/3d, SyncBatchNorm, InstanceNorm, GroupNorm, LayerNorm); a ``BatchNorm2d`` without
affine parameters or running statistics; a batch norm computed in ``forward`` without a
``BatchNorm2d`` module (``F.batch_norm``); slimmable widths (OATS: the user's convolutions are
not made slimmable). Functional batch norm is detected by running one eval-mode forward pass
of an example input and watching every batch-norm call of torch's Python API it makes
(``F.batch_norm``, ``torch.batch_norm``, ``torch.native_batch_norm``): one made outside a
``BatchNorm2d`` module is refused. Not seen: a branch of ``forward`` this pass does not take
(one taken only in training mode, say), and a batch norm written out by hand (mean, var, …).
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import threading
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from oat.conditioning import Conditioning
from oat.errors import ConvertError
from oat.models.base import ConditionedNet
from oat.models.source import ModelSource, json_kwargs
from oat.nn import Norm
from oat.nn.context import Ctx

CONVERTED = "converted"  # the architecture name of a converted network in checkpoints and configs
# torchvision names a residual shortcut ``downsample``, the CIFAR ResNets ``shortcut``: the
# reference puts no FiLM after a shortcut's BN.
DEFAULT_NO_FILM = ("*downsample*", "*shortcut*")
PROBE_SIZE = 32  # height and width of the example input when none is given
# Normalisation layers that are not converted (each is refused, naming the layer).
_OTHER_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


@dataclass(frozen=True)
class ConvertOptions:
    """How a module is converted.

    Attributes:
        no_film: ``fnmatch`` patterns of BN names (as in ``named_modules()``) that get no FiLM.
        input_shape: ``(C, H, W)`` of the example image the module is checked with; None: the
            first ``Conv2d``'s input channels at 32×32.
    """

    no_film: tuple[str, ...] = DEFAULT_NO_FILM
    input_shape: tuple[int, int, int] | None = None


class _CtxSlot:
    """Where one converted network's forward leaves its context for the replaced BNs: a stack per thread."""

    def __init__(self):
        self._local = threading.local()

    def __reduce__(self):  # a (deep) copy of the network gets a slot of its own, never a shared one
        return (_CtxSlot, ())

    @contextlib.contextmanager
    def use(self, ctx: Ctx):
        stack = self._local.__dict__.setdefault("stack", [])
        stack.append(ctx)
        try:
            yield
        finally:
            stack.pop()

    def current(self) -> Ctx:
        stack = self._local.__dict__.get("stack")
        if not stack:
            raise RuntimeError("a converted network's BatchNorm ran outside the network's forward; call "
                               "model(x, lam) or model.at(lam)(x), not the inner module")
        return stack[-1]


class ConvertedNorm(nn.Module):
    """A user's ``BatchNorm2d`` replaced: an :class:`oat.nn.Norm` called with the network's current context."""

    def __init__(self, norm: Norm, slot: _CtxSlot):
        super().__init__()
        self.norm = norm
        self._slot = slot

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x, self._slot.current())


class ConvertedNet(ConditionedNet):
    """A user's module with its BNs converted; ``forward_ctx`` runs the user's own ``forward``."""

    def __init__(self, spec: Conditioning, net: nn.Module, slot: _CtxSlot, arch: dict):
        super().__init__(spec)
        self.net = net
        self._slot = slot
        self.arch = arch

    def forward_ctx(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        with self._slot.use(ctx):
            return self.net(x)

    @property
    def source(self) -> ModelSource | None:
        """How the network is rebuilt (None: converted from an instance, in memory only)."""
        rec = self.arch["converted"]["source"]
        return None if rec is None else ModelSource.from_dict(rec)


def convert(module, conditioning: Conditioning | None = None, options: ConvertOptions | None = None, *,
            kwargs: dict | None = None) -> ConvertedNet:
    """Turn a user's CNN into an OAT model: each ``BatchNorm2d`` becomes dual BN + FiLM.

    Args:
        module: an ``nn.Module`` (copied; the original is left as it was), or a factory: a function
            or class defined at the top level of a file, called with ``kwargs``. A factory's file is
            recorded (text and SHA-256) so that :func:`oat.load` rebuilds the network from a run;
            the network is built from that recorded text, the code a later load runs. A converted
            instance has no record: it serves in memory (sweep, ``at``, export) but a run cannot
            rebuild it (``oat.fit`` refuses it).
        conditioning: the λ set and its settings (default: the paper's OAT spec); one width only.
        options: :class:`ConvertOptions` (FiLM placement, the example input's shape).
        kwargs: the factory's keyword arguments (JSON values).

    Returns:
        A :class:`ConvertedNet` in the mode the module was in.

    Raises:
        ConvertError: the module cannot be converted (one line saying why).
    """
    spec = conditioning or Conditioning()
    options = options or ConvertOptions()
    if spec.slimmable:
        raise ConvertError("oat.convert keeps your convolutions as they are, so it cannot make them slimmable "
                           f"(widths {', '.join(f'{w:g}' for w in spec.widths)}); OATS needs a registered model")
    net, source = _resolve(module, kwargs)
    bns = _check_layers(net)
    shape, num_classes = _probe(net, options.input_shape)
    slot = _CtxSlot()
    _replace(net, bns, spec, options.no_film, slot)
    arch = {"name": CONVERTED, "in_channels": shape[0], "num_classes": num_classes, "kwargs": {},
            "converted": {"no_film": list(options.no_film), "input_shape": list(shape),
                          "source": None if source is None else source.to_dict()}}
    out = ConvertedNet(spec, net, slot, arch)
    out.lam_table = out.lam_table.to(_device(net))
    return out.train(net.training)


def rebuild(arch: dict, spec: Conditioning, module=None) -> ConvertedNet:
    """The converted network a checkpoint's ``arch`` describes (no weights).

    ``module`` (an instance, factory or :class:`ModelSource`) replaces the recorded source; it must
    build the same layers (the weights that follow are checked by name and shape). Rebuilding
    from the record runs the recorded Python file (see :mod:`oat.models.source`).
    """
    rec = arch.get("converted")
    if not (isinstance(rec, dict) and isinstance(rec.get("no_film"), list)
            and all(isinstance(p, str) for p in rec["no_film"]) and _shape_ok(rec.get("input_shape"))):
        raise ConvertError("the checkpoint's record of the converted network is malformed")
    options = ConvertOptions(no_film=tuple(rec["no_film"]), input_shape=tuple(rec["input_shape"]))
    if module is None:
        if rec.get("source") is None:
            raise ConvertError("this network was converted from a module instance, so its run records no source "
                               "to rebuild it from; load it with oat.load(path, module=<the same nn.Module>)")
        module = ModelSource.from_dict(rec["source"])
    net = convert(module, spec, options)
    found = (net.arch["in_channels"], net.arch["num_classes"])
    if found != (arch.get("in_channels"), arch.get("num_classes")):
        raise ConvertError(f"the rebuilt network takes {found[0]} channels and gives {found[1]} classes; the "
                           f"checkpoint's took {arch.get('in_channels')} and gave {arch.get('num_classes')}")
    return net


# --------------------------------------------------------------------------- the steps
def _resolve(module, kwargs) -> tuple[nn.Module, ModelSource | None]:
    if isinstance(module, ConditionedNet):
        raise ConvertError("this is already an oat model; oat.convert takes your own nn.Module")
    if isinstance(module, ModelSource):
        if kwargs:
            raise ConvertError("a model source carries its own factory arguments; give kwargs to the source")
        return module.build(), module
    if isinstance(module, nn.Module):
        if kwargs:
            raise ConvertError("kwargs are a factory's arguments; this is a module instance")
        return copy.deepcopy(module), None
    if callable(module):
        source = ModelSource.of_factory(module, json_kwargs(kwargs or {}, getattr(module, "__name__", "factory")))
        return source.build(), source
    raise ConvertError(f"oat.convert takes an nn.Module or a factory returning one; got a {type(module).__name__}")


def _check_layers(net: nn.Module) -> dict[int, tuple[str, nn.BatchNorm2d]]:
    """Every ``BatchNorm2d`` by identity (its first name), refusing what cannot be converted."""
    bns: dict[int, tuple[str, nn.BatchNorm2d]] = {}
    for name, m in net.named_modules(remove_duplicate=False):
        where = name or "the module"
        if isinstance(m, (Norm, ConvertedNorm)):
            raise ConvertError(f"{where} is already one of oat's conditioned layers; convert the original module")
        if type(m) is nn.BatchNorm2d:
            if not (m.affine and m.track_running_stats):
                what = "affine parameters" if not m.affine else "running statistics (track_running_stats)"
                raise ConvertError(f"{where} is a BatchNorm2d without {what}; oat.convert needs both (FiLM folds "
                                   "into the affine map, evaluation uses the statistics)")
            bns.setdefault(id(m), (name, m))
        elif isinstance(m, _OTHER_NORMS):
            raise ConvertError(f"{where} is a {type(m).__name__}: oat.convert turns BatchNorm2d layers into dual BN "
                               "+ FiLM and converts no other normalisation layer")
    if not bns:
        raise ConvertError("the module has no BatchNorm2d: OAT conditions a network through its batch norms (dual "
                           "BN + FiLM), so there is nothing to convert")
    return bns


class _BatchNormWatch(TorchFunctionMode):
    """Records batch-norm calls (``F.batch_norm``, ``torch.batch_norm`` …) made while no ``BatchNorm2d``
    module is running. A function mode, not a dispatch mode: the latter makes the first convolution
    import torch._dynamo (seconds, in every process that loads a converted run)."""

    def __init__(self):
        super().__init__()
        self.inside_bn = 0
        self.stack: list[str] = []
        self.found: str | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.inside_bn == 0 and self.found is None and "batch_norm" in getattr(func, "__name__", ""):
            self.found = next((n for n in reversed(self.stack) if n), "the module's forward")
        return func(*args, **(kwargs or {}))


def _probe(net: nn.Module, input_shape) -> tuple[tuple[int, int, int], int]:
    """One eval-mode forward pass of an example input: its shape, the number of classes, and no
    batch norm computed outside a ``BatchNorm2d`` module. The module's state is left as it was."""
    shape = _input_shape(net, input_shape)
    watch = _BatchNormWatch()
    hooks = []
    for name, m in net.named_modules():
        is_bn = type(m) is nn.BatchNorm2d
        hooks.append(m.register_forward_pre_hook(_enter(watch, name, is_bn)))
        hooks.append(m.register_forward_hook(_leave(watch, is_bn)))
    modes = [(m, m.training) for m in net.modules()]
    p = next(iter(net.parameters()))  # a module with a BatchNorm2d has parameters
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0)).to(p.device, p.dtype)
    try:
        net.eval()
        with torch.no_grad(), watch:
            out = net(x)
    except Exception as e:
        msg = str(e).strip().splitlines()
        hint = "; give the shape of your images: ConvertOptions(input_shape=(C, H, W))" if input_shape is None else ""
        raise ConvertError(f"a forward pass of a {tuple(x.shape)} example failed ({type(e).__name__}: "
                           f"{msg[0][:160] if msg else ''}){hint}") from e
    finally:
        for h in hooks:
            h.remove()
        for m, flag in modes:
            m.training = flag
    if watch.found is not None:
        raise ConvertError(f"{watch.found} computes a batch norm without a BatchNorm2d module (F.batch_norm?); "
                           "oat.convert replaces BatchNorm2d modules only, so that one would stay unconditioned")
    if not (isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == x.shape[0]):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConvertError(f"the module's forward must return logits of shape (N, classes); got {got}")
    return shape, int(out.shape[1])


def _enter(watch: _BatchNormWatch, name: str, is_bn: bool):
    def hook(_mod, _args):
        watch.stack.append(name)
        watch.inside_bn += is_bn
    return hook


def _leave(watch: _BatchNormWatch, is_bn: bool):
    def hook(_mod, _args, _out):
        watch.stack.pop()
        watch.inside_bn -= is_bn
    return hook


def _input_shape(net: nn.Module, given) -> tuple[int, int, int]:
    if given is not None:
        if not _shape_ok(list(given)):
            raise ConvertError(f"input_shape must be (C, H, W), three positive whole numbers; got {given!r}")
        return tuple(int(v) for v in given)
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ConvertError("the module has no Conv2d to read its image channels from; give "
                           "ConvertOptions(input_shape=(C, H, W))")
    return (conv.in_channels, PROBE_SIZE, PROBE_SIZE)


def _shape_ok(v) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) == 3
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in v))


def _replace(net: nn.Module, bns: dict, spec: Conditioning, no_film, slot: _CtxSlot) -> None:
    """Put a :class:`ConvertedNorm` wherever a BN was registered (a BN shared by two places stays shared)."""
    new = {key: ConvertedNorm(_norm_from(bn, spec, film=not any(fnmatch.fnmatchcase(name, p) for p in no_film)),
                              slot)
           for key, (name, bn) in bns.items()}
    places = [(parent, key, id(child)) for _, parent in net.named_modules(remove_duplicate=False)
              for key, child in parent._modules.items() if child is not None and id(child) in new]
    for parent, key, ident in places:
        parent._modules[key] = new[ident]


@torch.no_grad()
def _norm_from(bn: nn.BatchNorm2d, spec: Conditioning, film: bool) -> Norm:
    """A Norm whose every BN (clean and adversarial) starts as ``bn``: its weights, statistics, ε and momentum."""
    norm = Norm(bn.num_features, spec, film=film).to(device=bn.weight.device, dtype=bn.weight.dtype)
    for b in norm.bn.modules():
        if isinstance(b, nn.BatchNorm2d):
            b.eps, b.momentum = bn.eps, bn.momentum
            for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                getattr(b, key).copy_(getattr(bn, key))
    return norm


def _device(net: nn.Module) -> torch.device:
    t = next(iter(net.parameters()), None)
    return t.device if t is not None else torch.device("cpu")
