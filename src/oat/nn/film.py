"""FiLM: feature-wise linear modulation by the λ encoding (OAT, Sec. 3.1).

As the reference: ``Linear(d, 2C) -> LeakyReLU -> Linear(2C, 2C)``, split into (μ, σ),
leaky_relu on both, output ``x * μ + σ`` per channel (μ the scale, σ the shift).
Slimmable (OATS): at width w only the first C_w channels exist; μ and σ are sliced
*separately* (rows [:C_w] and [C:C+C_w]) so channel c keeps its own scale and shift at
every width; the reference's slice of the concatenated output would hand σ rows that
are μ rows at full width.

Forms (``Conditioning.film_form``):

* ``"reference"`` — the authors' ``leaky_relu(μ)`` scale. With a default-initialised MLP
  about 40% of a small CNN's channels start with μ < 0 at every λ, are scaled by ≤ 0.005
  and never recover (measured: zeroing them after training changes accuracy by 0.00), so
  a small OAT model is effectively narrower than its dedicated twin.
* ``"identity"`` — scale ``1 + Δ``, shift ``σ``, no leaky_relu on either, and the MLP's last
  layer initialised at zero: FiLM starts as the identity at every λ (no channel starts
  switched off) and learns its λ dependence from there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from oat.nn.context import Ctx


class FiLM(nn.Module):
    """FiLM layer for ``channels`` feature maps conditioned on a ``enc_dim`` encoding."""

    def __init__(self, channels: int, enc_dim: int, form: str = "reference"):
        super().__init__()
        self.channels, self.form = channels, form
        self.fc1 = nn.Linear(enc_dim, 2 * channels)
        self.fc2 = nn.Linear(2 * channels, 2 * channels)
        if form == "identity":
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)

    def params(self, enc: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and shift ``(U, c)`` for the distinct encodings ``enc`` at ``c`` channels."""
        return self.table(enc, c).split(c, dim=1)

    def table(self, enc: torch.Tensor, c: int) -> torch.Tensor:
        """``[scale | shift]``, ``(U, 2c)``, for the distinct encodings ``enc``."""
        full = self.channels
        if c == full:  # no slices at full width: a slice's backward writes into a zero tensor
            w1, b1, w2, b2 = self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias
        else:
            rows = torch.cat([torch.arange(c), torch.arange(full, full + c)]).to(enc.device)
            w1, b1 = self.fc1.weight[: 2 * c], self.fc1.bias[: 2 * c]
            w2, b2 = self.fc2.weight[rows, : 2 * c], self.fc2.bias[rows]
        out = F.linear(F.leaky_relu(F.linear(enc, w1, b1)), w2, b2)
        if self.form == "identity":
            return out + torch.cat([out.new_ones(c), out.new_zeros(c)])  # (1 + Δ, σ)
        return F.leaky_relu(out)

    def table_of(self, ctx: Ctx, c: int) -> torch.Tensor:
        """The table for ``ctx``'s encodings: from its step's shared tables when it has them.

        A table stored without a graph (first computed under ``no_grad``) is recomputed when
        gradients are wanted, so a pass that trains never gets a detached one. Tables are kept per
        autocast state: the training attack runs in fp32 outside the loop's autocast (as the
        authors' code) and must not read the bf16 table of the passes around it.
        """
        if ctx.step is None:
            return self.table(ctx.enc, c)
        device = ctx.enc.device.type
        amp = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        key = (id(self), c, amp)
        table = ctx.step.tables.get(key)
        if table is None or (torch.is_grad_enabled() and not table.requires_grad and self.fc2.weight.requires_grad):
            table = ctx.step.tables[key] = self.table(ctx.enc, c)
        return table

    def forward(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        c = x.shape[1]
        cache = ctx.film_cache
        if cache is not None and id(self) in cache:
            table = cache[id(self)]
        elif cache is not None:
            with torch.no_grad():
                table = self.table_of(ctx, c).detach()  # the step's table may carry a graph
            cache[id(self)] = table
        else:
            table = self.table_of(ctx, c)
        if ctx.inverse is not None:
            table = table[ctx.inverse]  # computed once per distinct λ, gathered per example
        mu, sigma = table.to(x.dtype).view((-1, 2 * c) + (1,) * (x.dim() - 2)).split(c, dim=1)
        return x * mu + sigma
