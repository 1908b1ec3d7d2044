"""The whole conditioned model at one width as one module ``(x, lam) -> logits`` (OAT Sec. 3.1-3.2).

Made for a graph exporter (ONNX): nothing in :meth:`LamInputNet.forward` branches in Python on a
tensor's value, so one traced graph serves every λ, and a batch may carry one λ per example.

* λ is clamped to [0, 1]. When the model accepts only trained λ (an index-based encoding:
  random-orthogonal, one-hot, DCT; or no FiLM) it is then snapped to the *nearest trained λ*
  (ties: the smaller one), and the example runs exactly as the model at that trained λ: its row
  of the stored encoding table and that λ's BN branch.
  A graph cannot raise, so an untrained λ is served by its nearest trained neighbour rather
  than refused; check λ before calling the graph if that matters. The continuous and scalar
  encodings are computed from λ itself inside the graph (any λ in [0, 1]).
* Dual BN is routed by the (snapped) λ: λ == 0 (within 1e-6) takes the clean BN, any other λ
  the adversarial one. Both branches are kept as per-channel affine maps (eval-mode BN with
  its running statistics) and chosen per example with ``torch.where``.
* FiLM's MLP runs in the graph on each example's encoding; its scale and shift are folded
  with the chosen BN's affine into one per-example scale and shift per layer.

Convolutions and linear layers are dense slices of the chosen width, as in the fixed-λ export.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from oat.conditioning import ENCODINGS, LAM_TOL
from oat.errors import ConfigError
from oat.models.base import ConditionedNet
from oat.nn import FiLM, Norm, bn_affine
from oat.nn.context import Ctx

from oat.models.export import replace_layers, trace_in_channels  # noqa: E402  isort: skip


@dataclass
class LamCtx(Ctx):
    """A context whose λ is a tensor: ``enc`` holds one encoding per example (or one for the
    batch) and ``clean`` the matching ``(M, 1)`` mask of examples routed to the clean BN."""

    clean: torch.Tensor | None = None


def _slim_film(film: FiLM, c: int) -> FiLM:
    """A FiLM layer for ``c`` channels whose parameters are the rows the slim FiLM uses."""
    if c == film.channels:
        return copy.deepcopy(film)
    # μ rows [:c] and σ rows [C:C+c], sliced separately (see oat.nn.film).
    rows = torch.cat([torch.arange(c), torch.arange(film.channels, film.channels + c)]).to(film.fc2.weight.device)
    new = FiLM(c, film.fc1.in_features, film.form).to(film.fc2.weight.device)
    with torch.no_grad():
        new.fc1.weight.copy_(film.fc1.weight[: 2 * c])
        new.fc1.bias.copy_(film.fc1.bias[: 2 * c])
        new.fc2.weight.copy_(film.fc2.weight[rows, : 2 * c])
        new.fc2.bias.copy_(film.fc2.bias[rows])
    return new


class LamNorm(nn.Module):
    """One width's (dual) BN and FiLM, both per-channel affine maps chosen per example from λ."""

    @torch.no_grad()
    def __init__(self, norm: Norm, width_idx: int):
        super().__init__()
        pair = norm.bn.bns[width_idx]
        self.channels = pair[0].num_features
        a, b = bn_affine(pair[0])
        self.register_buffer("clean_scale", a.clone())
        self.register_buffer("clean_shift", b.clone())
        self.dual = norm.bn.dual
        if self.dual:
            a, b = bn_affine(pair[1])
            self.register_buffer("adv_scale", a.clone())
            self.register_buffer("adv_shift", b.clone())
        self.film = None if norm.film is None else _slim_film(norm.film, self.channels)

    def forward(self, x: torch.Tensor, ctx: LamCtx) -> torch.Tensor:
        a, b = self.clean_scale, self.clean_shift
        if self.dual:
            a = torch.where(ctx.clean, self.clean_scale, self.adv_scale)
            b = torch.where(ctx.clean, self.clean_shift, self.adv_shift)
        if self.film is not None:
            mu, sigma = self.film.params(ctx.enc, self.channels)  # FiLM(a·x + b) = μa·x + (μb + σ)
            a, b = a * mu, b * mu + sigma
        view = (-1, self.channels) + (1,) * (x.dim() - 2)
        return x * a.reshape(view) + b.reshape(view)


class LamInputNet(nn.Module):
    """``(x, lam) -> logits`` for a conditioned model at one trained width, in eval mode.

    Args:
        model: a conditioned model with FiLM or dual BN (a dedicated model has nothing that λ
            changes: export it at its λ instead). Not changed.
        width: a trained width (None: the largest).

    ``lam`` is a float tensor of shape ``(N,)`` (one λ per example) or ``(1,)`` (one for the batch).
    """

    def __init__(self, model: ConditionedNet, width: float | None = None):
        super().__init__()
        spec = model.spec
        if not spec.film and not spec.dual_bn:
            raise ConfigError(f"this model has no FiLM and one BN: λ changes nothing in it; export it at "
                              f"its trained λ ({', '.join(f'{v:g}' for v in spec.lams)}) instead of --lam input")
        widx = spec.width_index(width)
        self.width = spec.widths[widx]
        cin = trace_in_channels(model, self.width)
        net = copy.deepcopy(model).eval()
        replace_layers(net, "", cin, self.width, lambda norm: LamNorm(norm, widx))
        net.lam_table = torch.zeros(0, device=model.lam_table.device)
        self.net = net.eval()
        self.film = spec.film
        self.snap = not spec.continuous  # only trained λ are accepted: serve the nearest one
        self.index_based = spec.film and ENCODINGS[spec.encoding].index_based
        self.encoding, self.dim = spec.encoding, spec.dim
        self.register_buffer("lams", torch.tensor(spec.lams, device=model.lam_table.device))
        self.register_buffer("table", model.lam_table.detach().clone() if self.index_based else torch.zeros(0))
        self.train(False)

    def forward(self, x: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        lam = lam.reshape(-1).to(torch.float32).clamp(0.0, 1.0)
        enc = None
        if self.snap:
            idx = (lam.unsqueeze(1) - self.lams.unsqueeze(0)).abs().argmin(dim=1)
            lam = self.lams[idx]
        if self.index_based:
            enc = self.table[idx]
        elif self.film:
            enc = ENCODINGS[self.encoding].make(lam, self.dim)
        ctx = LamCtx(enc=enc, inverse=None, route="mixed", width=1.0, clean=(lam <= LAM_TOL).unsqueeze(1))
        return self.net.forward_ctx(x, ctx)

    def extra_repr(self) -> str:
        return f"width={self.width:g}, lams={[round(v, 6) for v in self.lams.tolist()]}"


