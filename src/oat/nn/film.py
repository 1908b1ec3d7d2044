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
        full = self.channels
        h = F.leaky_relu(F.linear(enc, self.fc1.weight[: 2 * c], self.fc1.bias[: 2 * c]))
        if c == full:
            w2, b2 = self.fc2.weight, self.fc2.bias
        else:
            rows = torch.cat([torch.arange(c), torch.arange(full, full + c)]).to(enc.device)
            w2, b2 = self.fc2.weight[rows, : 2 * c], self.fc2.bias[rows]
        mu, sigma = F.linear(h, w2, b2).split(c, dim=1)
        if self.form == "identity":
            return 1.0 + mu, sigma
        return F.leaky_relu(mu), F.leaky_relu(sigma)

    def forward(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:
        c = x.shape[1]
        cache = ctx.film_cache
        if cache is not None and id(self) in cache:
            mu, sigma = cache[id(self)]
        elif cache is not None:
            with torch.no_grad():
                mu, sigma = self.params(ctx.enc, c)
            cache[id(self)] = (mu, sigma)
        else:
            mu, sigma = self.params(ctx.enc, c)
        if ctx.inverse is not None:
            # Computed once per distinct λ, then gathered per example.
            mu, sigma = mu[ctx.inverse], sigma[ctx.inverse]
        shape = (-1, c) + (1,) * (x.dim() - 2)
        return x * mu.to(x.dtype).view(shape) + sigma.to(x.dtype).view(shape)
