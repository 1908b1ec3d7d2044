"""The reference's per-example λ sampler: ceil(B/K) zeros first, the rest uniform."""

import math

import pytest
import torch

from oat.conditioning import PAPER_LAMS
from oat.train.sampling import sample_lams, zero_share


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_zero_share_is_ceil_b_over_k():
    assert zero_share(128, 6) == 22
    assert zero_share(64, 6) == 11
    assert zero_share(256, 6) == 43
    assert zero_share(5, 6) == 1
    assert zero_share(12, 6) == 2


@pytest.mark.parametrize("batch", [128, 64, 7])
def test_zeros_first_then_nonzero_values_of_the_set(batch):
    lam, n0 = sample_lams(batch, PAPER_LAMS, _gen())
    assert n0 == math.ceil(batch / 6)
    assert lam.shape == (batch,) and lam.dtype == torch.float32
    assert (lam[:n0] == 0).all()
    assert (lam[n0:] > 0).all()
    allowed = torch.tensor([v for v in PAPER_LAMS if v > 0])
    assert torch.isclose(lam[n0:, None], allowed[None]).any(1).all()


def test_nonzero_values_are_uniform():
    """Chi-square goodness of fit over 200 batches of 128 (21,200 draws, 5 values)."""
    g = _gen(1)
    draws = torch.cat([sample_lams(128, PAPER_LAMS, g)[0][22:] for _ in range(200)])
    values = [v for v in PAPER_LAMS if v > 0]
    counts = torch.stack([torch.isclose(draws, torch.tensor(v)).sum() for v in values]).float()
    assert int(counts.sum()) == 200 * 106
    expected = counts.sum() / len(values)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 18.47  # the 0.999 quantile of chi-square with 4 degrees of freedom
    assert (counts > 0.9 * expected).all()  # and no value starved


def test_reproducible_with_a_generator_and_global_rng_untouched():
    state = torch.get_rng_state()
    a, _ = sample_lams(128, PAPER_LAMS, _gen(3))
    b, _ = sample_lams(128, PAPER_LAMS, _gen(3))
    c, _ = sample_lams(128, PAPER_LAMS, _gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)


def test_continuous_sampler_in_zero_to_max():
    g = _gen(5)
    lams = (0.0, 0.1, 0.5)
    for _ in range(50):
        lam, n0 = sample_lams(64, lams, g, continuous=True)
        assert n0 == math.ceil(64 / 3) and (lam[:n0] == 0).all()
        rest = lam[n0:]
        assert (rest > 0).all() and (rest <= 0.5).all()
    # Not stuck on the set's values: continuous really means continuous.
    assert len(set(rest.tolist())) > 30


def test_set_without_zero_has_no_clean_share():
    lam, n0 = sample_lams(32, (0.5, 1.0), _gen())
    assert n0 == 0 and ((lam == 0.5) | (lam == 1.0)).all()


def test_set_of_only_zero_is_all_clean():
    lam, n0 = sample_lams(16, (0.0,), _gen())
    assert n0 == 16 and (lam == 0).all()
