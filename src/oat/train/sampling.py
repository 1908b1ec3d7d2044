"""Per-example λ sampling for OAT training: the reference's rule, and the settings around it.

The reference (Wang et al. 2020, Alg. 1): in a batch of B with a λ set of K values containing 0,
ceil(B/K) examples get λ = 0 and are put first; the rest draw λ uniformly from the non-zero
values. Zeros first lets the objective slice the attacked part (``x[n0:]``) without a gather.
The continuous sampler keeps the same share at 0 and draws the rest from U(0, max λ].

Two settings go beyond the reference (:class:`LamSampling`), both aimed at what a small OAT
model lacks: with the reference's draw the mean λ of a batch is about 0.33 and ~1/6 of it is
at λ = 1, so the shared layers see a third of a PGD-AT model's adversarial signal, and the
λ = 0 branch learns from ~1/6 of each batch.

* ``zero_share``: the fraction of each batch at λ = 0 (None: the reference's ceil(B/K)).
* ``weights``: relative weights of the non-zero λ values, in increasing λ order (None: uniform).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from oat.errors import ConfigError


@dataclass(frozen=True)
class LamSampling:
    """How an OAT batch's λ values are drawn; the defaults are the reference's rule."""

    zero_share: float | None = None
    weights: tuple[float, ...] | None = None

    def check(self, lams: tuple[float, ...], continuous: bool) -> None:
        """Refuse settings that do not fit the λ set, in one line."""
        if self.zero_share is not None and not 0.0 <= self.zero_share <= 1.0:
            raise ConfigError(f"zero_share is a fraction of the batch in [0, 1]; got {self.zero_share}")
        if self.zero_share is not None and 0.0 not in lams:
            raise ConfigError("zero_share needs λ = 0 in the λ set")
        if self.weights is None:
            return
        nonzero = [v for v in lams if v > 0]
        if continuous:
            raise ConfigError("lam_weights weigh the values of a discrete λ set; a continuous encoding draws "
                              "λ ~ U(0, max λ]")
        if len(self.weights) != len(nonzero) or any(not (w >= 0 and math.isfinite(w)) for w in self.weights) \
                or sum(self.weights) <= 0:
            raise ConfigError(f"lam_weights needs {len(nonzero)} finite non-negative weights, not all zero, one "
                              f"per non-zero λ ({', '.join(f'{v:g}' for v in nonzero)}); got {list(self.weights)}")


def zero_share(batch_size: int, num_lams: int) -> int:
    """Number of λ = 0 examples in a batch: ceil(B / K) (22 of 128 for 6 values)."""
    return math.ceil(batch_size / num_lams)


def sample_lams(batch_size: int, lams: tuple[float, ...], generator: torch.Generator | None = None,
                continuous: bool = False, sampling: LamSampling = LamSampling()) -> tuple[torch.Tensor, int]:
    """Draw per-example λ for one batch.

    Args:
        batch_size: B.
        lams: the trained λ set.
        generator: RNG (CPU generator).
        continuous: draw non-zero λ from U(0, max λ] instead of the set.
        sampling: the λ = 0 share and the weights of the non-zero values.

    Returns:
        ``(lam, n0)``: ``(B,)`` float tensor with the ``n0`` zeros first.
    """
    lams = tuple(sorted(lams))
    nonzero = [v for v in lams if v > 0]
    if not nonzero:
        return torch.zeros(batch_size), batch_size
    n0 = 0
    if 0.0 in lams:
        share = sampling.zero_share
        n0 = zero_share(batch_size, len(lams)) if share is None else round(share * batch_size)
    n0 = min(n0, batch_size)
    rest = batch_size - n0
    if continuous:
        # 1 - U[0,1) lies in (0, 1]: a λ of exactly 0 stays reserved for the clean share.
        vals = (1.0 - torch.rand(rest, generator=generator)) * max(nonzero)
    elif sampling.weights is None:
        idx = torch.randint(len(nonzero), (rest,), generator=generator)
        vals = torch.tensor(nonzero)[idx]
    else:
        probs = torch.tensor(sampling.weights, dtype=torch.float64)
        idx = torch.multinomial(probs, rest, replacement=True, generator=generator) if rest else \
            torch.zeros(0, dtype=torch.long)
        vals = torch.tensor(nonzero)[idx]
    return torch.cat([torch.zeros(n0), vals]), n0
