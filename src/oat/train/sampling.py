"""Per-example λ sampling for OAT training (the reference's rule).

In a batch of B with a λ set of K values containing 0, ceil(B/K) examples get λ = 0 and
are put first; the rest draw λ uniformly from the non-zero values. Zeros first lets the
objective slice the attacked part (``x[n0:]``) without an index gather.
The continuous sampler keeps the same share at 0 and draws the rest from U(0, 1].
"""

from __future__ import annotations

import math

import torch


def zero_share(batch_size: int, num_lams: int) -> int:
    """Number of λ = 0 examples in a batch: ceil(B / K) (22 of 128 for 6 values)."""
    return math.ceil(batch_size / num_lams)


def sample_lams(batch_size: int, lams: tuple[float, ...], generator: torch.Generator | None = None,
                continuous: bool = False) -> tuple[torch.Tensor, int]:
    """Draw per-example λ for one batch.

    Args:
        batch_size: B.
        lams: the trained λ set.
        generator: RNG (CPU generator).
        continuous: draw non-zero λ from U(0, max λ] instead of the set.

    Returns:
        ``(lam, n0)``: ``(B,)`` float tensor with the ``n0`` zeros first.
    """
    nonzero = [v for v in lams if v > 0]
    n0 = zero_share(batch_size, len(lams)) if 0.0 in lams else 0
    if not nonzero:
        return torch.zeros(batch_size), batch_size
    n0 = min(n0, batch_size)
    rest = batch_size - n0
    if continuous:
        # 1 - U[0,1) lies in (0, 1]: a λ of exactly 0 stays reserved for the clean share.
        vals = (1.0 - torch.rand(rest, generator=generator)) * max(nonzero)
    else:
        idx = torch.randint(len(nonzero), (rest,), generator=generator)
        vals = torch.tensor(nonzero)[idx]
    return torch.cat([torch.zeros(n0), vals]), n0
