"""Two-model alternatives to OAT, as conditioned models whose knob is a mixing weight α.

A user weighing OAT would otherwise train a clean model and a robust one and blend them at
test time. Two blends, each one :class:`~oat.models.ConditionedNet` whose "λ" is α (α = 0:
the first member, α = 1: the second), so every sweep, attack, report and export that takes
an OAT model takes these too, and the blend is attacked end to end as the one model a user
deploys (attacking a member alone over-reports robustness):

* :class:`OutputMixture` — ``combine="probs"``: ``log((1-α)·softmax(f_a) + α·softmax(f_b))``
  (the mixed classifier of adaptive smoothing / MixedNUTS, Bai et al. 2024), or
  ``combine="logits"``: ``(1-α)·f_a + α·f_b``. Two forward passes per image.
* :class:`WeightInterpolation` — one network with weights ``(1-α)·θ_a + α·θ_b`` (model soups,
  Wortsman et al. 2022; meaningful when ``b`` was fine-tuned from ``a``, e.g. with
  ``init_from``). BN running statistics are interpolated too, or re-estimated on training
  images at each α of a grid (``bn="reestimate"``; α is then limited to that grid).

Members are any trained models, each evaluated at its own λ (``member_lams``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from oat.conditioning import LAM_TOL, Conditioning
from oat.errors import ConfigError, LamError
from oat.models.base import ConditionedNet

COMBINES = ("probs", "logits", "weights")


def alpha_spec(alphas) -> Conditioning:
    """The spec of a blend: any α in [0, 1] is accepted (the scalar encoding's rule); ``alphas``
    is the default sweep grid. The blend itself has no FiLM layer and no dual BN."""
    return Conditioning(lams=tuple(alphas), encoding="scalar", film=True, dual_bn=False)


def _build_member(m: dict) -> ConditionedNet:
    from oat.models.registry import build_model

    return build_model(m["arch"], Conditioning.from_dict(m["conditioning"]))


class _Blend(ConditionedNet):
    """Members, their own λ, and α handling shared by both blends."""

    def __init__(self, spec: Conditioning, members: list, member_lams: list, in_channels: int, num_classes: int):
        super().__init__(spec)
        if len(members) != 2 or len(member_lams) != 2:
            raise ConfigError("a blend takes exactly two member models")
        self.members = nn.ModuleList(_build_member(m) for m in members)
        self.member_lams = [float(v) for v in member_lams]
        for net, lam in zip(self.members, self.member_lams):
            net.spec.check_lam(lam)

    def alphas_of(self, lam, n: int) -> torch.Tensor:
        """α per example, ``(n,)``, from a float or a per-example tensor (each in [0, 1])."""
        if isinstance(lam, torch.Tensor) and lam.dim() == 1:
            if lam.shape[0] != n:
                raise LamError(f"a λ tensor must have shape (N,) matching the batch; got {tuple(lam.shape)}")
            for v in torch.unique(lam).tolist():
                self.spec.check_lam(v)
            return lam.float()
        return torch.full((n,), self.spec.check_lam(float(lam)))

    def predictor(self, lam, width: float | None = None, n: int | None = None, *, like=None):
        self.spec.width_index(width)
        return lambda x: self(x, lam, width)


class OutputMixture(_Blend):
    """``(1-α)·a + α·b`` on the members' probabilities (output: log-probabilities) or logits."""

    def __init__(self, spec, *, members, member_lams, combine: str = "probs", in_channels=3, num_classes=10):
        super().__init__(spec, members, member_lams, in_channels, num_classes)
        if combine not in ("probs", "logits"):
            raise ConfigError(f"an output mixture combines probs or logits; got {combine!r}")
        self.combine = combine

    def forward(self, x: torch.Tensor, lam, width: float | None = None) -> torch.Tensor:
        self.spec.width_index(width)
        a = self.alphas_of(lam, x.shape[0]).to(x.device).view(-1, 1)
        za, zb = (net(x, v) for net, v in zip(self.members, self.member_lams))
        if self.combine == "logits":
            return (1 - a) * za + a * zb
        # log of the mixed probabilities, computed stably: logsumexp of the weighted log-softmaxes.
        la, lb = F.log_softmax(za.float(), 1), F.log_softmax(zb.float(), 1)
        w = torch.stack([torch.log1p(-a.clamp(max=1 - 1e-12)) + la, torch.log(a.clamp(min=1e-12)) + lb])
        out = torch.logsumexp(w, 0)
        # α exactly 0 or 1: the member itself (log(1e-12)-weighted terms vanish only approximately).
        out = torch.where(a <= LAM_TOL, la, out)
        return torch.where(a >= 1 - LAM_TOL, lb, out)


class WeightInterpolation(_Blend):
    """One network with weights ``(1-α)·θ_a + α·θ_b`` (the members must share an architecture)."""

    def __init__(self, spec, *, members, member_lams, bn: str = "interpolate", bn_alphas=(), in_channels=3,
                 num_classes=10):
        super().__init__(spec, members, member_lams, in_channels, num_classes)
        a, b = (dict(net.named_parameters()) | dict(net.named_buffers()) for net in self.members)
        if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
            raise ConfigError("weight interpolation needs two members of the same architecture and spec")
        if bn not in ("interpolate", "reestimate"):
            raise ConfigError(f"bn must be interpolate or reestimate; got {bn!r}")
        self.bn, self.bn_alphas = bn, [float(v) for v in bn_alphas]
        # Re-estimated BN statistics, one set per α of the grid (filled by reestimate_bn, saved with the weights).
        for i, _ in enumerate(self.bn_alphas):
            for k in self._bn_keys():
                self.register_buffer(_stat_name(i, k), torch.zeros_like(a[k]))

    def _bn_keys(self) -> list[str]:
        return [k for k, _ in self.members[0].named_buffers() if k.endswith(("running_mean", "running_var"))]

    def interpolated(self, alpha: float) -> dict[str, torch.Tensor]:
        """Every parameter and buffer of the first member's network, interpolated at ``alpha``."""
        a = dict(self.members[0].named_parameters()) | dict(self.members[0].named_buffers())
        b = dict(self.members[1].named_parameters()) | dict(self.members[1].named_buffers())
        return {k: (torch.lerp(a[k], b[k], alpha) if a[k].is_floating_point() else a[k]) for k in a}

    def weights_at(self, alpha: float) -> dict[str, torch.Tensor]:
        """The network's tensors at ``alpha``: interpolated, with the re-estimated BN statistics if any."""
        out = self.interpolated(alpha)
        if self.bn == "reestimate":
            i = next((j for j, v in enumerate(self.bn_alphas) if abs(v - alpha) <= LAM_TOL), None)
            if i is None:
                grid = ", ".join(f"{v:g}" for v in self.bn_alphas)
                raise LamError(f"α={alpha:g}: BN statistics were re-estimated at α = {grid} only")
            out.update({k: getattr(self, _stat_name(i, k)) for k in self._bn_keys()})
        return out

    def predictor(self, lam, width: float | None = None, n: int | None = None, *, like=None):
        """For one α the weights are interpolated once (without parameter gradients) and reused by
        every attack step, as ``ConditionedNet.predictor`` caches FiLM."""
        self.spec.width_index(width)
        if isinstance(lam, torch.Tensor) and lam.dim() == 1:
            return super().predictor(lam, width, n, like=like)
        alpha = self.spec.check_lam(float(lam))
        with torch.no_grad():
            weights = self.weights_at(alpha)
        net, lam0 = self.members[0], self.member_lams[0]
        return lambda x: functional_call(net, weights, (x, lam0))

    def forward(self, x: torch.Tensor, lam, width: float | None = None) -> torch.Tensor:
        self.spec.width_index(width)
        alphas = self.alphas_of(lam, x.shape[0])
        uniq = torch.unique(alphas)
        if len(uniq) == 1:
            return self._at(x, float(uniq[0]))
        out = None
        for v in uniq.tolist():
            idx = (alphas == v).nonzero().squeeze(1).to(x.device)
            z = self._at(x[idx], v)
            out = z.new_empty(x.shape[0], z.shape[1]) if out is None else out
            out[idx] = z
        return out

    def _at(self, x: torch.Tensor, alpha: float) -> torch.Tensor:
        net = self.members[0]
        return functional_call(net, self.weights_at(alpha), (x, self.member_lams[0]))

    @torch.no_grad()
    def reestimate_bn(self, images: torch.Tensor, batch_size: int = 256) -> None:
        """Set the BN statistics of every α of the grid from ``images`` (in [0, 1]): the
        cumulative average over one pass in training mode, as Wortsman et al. do for soups."""
        net = self.members[0]
        for i, alpha in enumerate(self.bn_alphas):
            weights = {k: v.clone() for k, v in self.interpolated(alpha).items()}
            bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            names = {id(m): n for n, m in net.named_modules()}
            saved = [(m.momentum, m.training) for m in bns]
            for m in bns:
                m.momentum = None  # cumulative average
                m.train()
                key = names[id(m)]
                weights[f"{key}.running_mean"].zero_()
                weights[f"{key}.running_var"].fill_(1.0)
                weights[f"{key}.num_batches_tracked"].zero_()
            for s in range(0, len(images), batch_size):
                functional_call(net, weights, (images[s:s + batch_size], self.member_lams[0]))
            for m, (mom, tr) in zip(bns, saved):
                m.momentum = mom
                m.train(tr)
            for k in self._bn_keys():
                getattr(self, _stat_name(i, k)).copy_(weights[k])


def _stat_name(i: int, key: str) -> str:
    return f"bn_stat_{i}__{key.replace('.', '__')}"
