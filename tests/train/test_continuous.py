"""Continuous λ end to end: encoding smoothness, the sampler's shares, and ``at`` on a trained model."""

import math

import pytest
import torch

import oat
from oat.conditioning import ENCODINGS, PAPER_LAMS, Conditioning
from oat.errors import LamError
from oat.models import create_model
from oat.train.config import TrainConfig
from oat.train.runner import build_objective, build_spec
from oat.train.sampling import sample_lams, zero_share


def _enc(lams, dim=128):
    return ENCODINGS["continuous"].make(torch.tensor(lams, dtype=torch.float32), dim)


@pytest.mark.parametrize("dim", [16, 128])
def test_continuous_encoding_is_lipschitz_unit_norm_and_distinct(dim):
    grid = torch.linspace(0, 1, 101)
    e = _enc(grid.tolist(), dim)
    assert torch.allclose(e.norm(dim=1), torch.ones(101), atol=1e-5)
    # Smooth: |e(a) - e(b)| <= L |a - b| with L = π sqrt(mean f²), the derivative's norm bound.
    f = torch.arange(1, dim // 2 + 1, dtype=torch.float32)
    lip = math.pi * f.pow(2).mean().sqrt().item()
    a = torch.rand(200, generator=torch.Generator().manual_seed(0))
    b = (a + 1e-3 * torch.randn(200, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    d = (_enc(a.tolist(), dim) - _enc(b.tolist(), dim)).norm(dim=1)
    assert (d <= lip * (a - b).abs() + 1e-5).all()
    # Distinct: every pair of grid points (0.01 apart or more) is clearly separated.
    dist = torch.cdist(e, e) + 10 * torch.eye(101)
    assert dist.min() > 0.05


def test_nearby_lams_are_nearer_than_far_ones():
    e = _enc([0.25, 0.251, 0.7])
    assert (e[0] - e[1]).norm() < 0.2 < (e[0] - e[2]).norm()


@pytest.mark.parametrize("batch", [64, 100, 128])
def test_continuous_sampler_keeps_the_papers_clean_share(batch):
    g = torch.Generator().manual_seed(0)
    lam_c, n0_c = sample_lams(batch, PAPER_LAMS, g, continuous=True)
    _, n0_i = sample_lams(batch, PAPER_LAMS, g)
    assert n0_c == n0_i == zero_share(batch, len(PAPER_LAMS))
    assert (lam_c[:n0_c] == 0).all() and (lam_c[n0_c:] > 0).all() and (lam_c <= 1).all()


def test_continuous_sampler_is_uniform_over_zero_to_max():
    g = torch.Generator().manual_seed(0)
    lam = torch.cat([sample_lams(128, (0.0, 0.2, 0.5), g, continuous=True)[0][43:] for _ in range(200)])
    assert lam.max() <= 0.5 and abs(lam.mean().item() - 0.25) < 0.01
    assert abs((lam < 0.1).float().mean().item() - 0.2) < 0.02
    assert lam.unique().numel() > 0.9 * lam.numel()


@pytest.mark.parametrize(
    "encoding,continuous", [("continuous", True), ("scalar", True), ("random-orthogonal", False), ("one-hot", False)]
)
def test_objective_picks_the_sampler_from_the_encoding(encoding, continuous):
    cfg = TrainConfig(encoding=encoding)
    assert build_objective(cfg, build_spec(cfg), 0.1).continuous is continuous


@pytest.mark.parametrize("encoding", ["random-orthogonal", "one-hot", "dct"])
def test_index_encodings_refuse_a_lam_outside_the_set(encoding):
    model = create_model("small-cnn", Conditioning(encoding=encoding, dim=8), base=4).eval()
    assert model.at(0.2) is not None
    with pytest.raises(LamError, match="continuous"):
        model.at(0.25)


def test_trained_continuous_model_answers_any_lam_after_loading(tmp_path):
    cfg = TrainConfig(
        data="digits",
        model="small-cnn",
        model_kwargs={"base": 4},
        encoding="continuous",
        enc_dim=16,
        epochs=1,
        batch_size=128,
        eps=0.3,
        attack_steps=2,
    )
    run = oat.fit(cfg, tmp_path / "run", progress=False, evaluate=False, log=lambda *_: None)
    model = oat.load(run)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        out = model.at(0.25)(x)
        assert torch.allclose(out, model(x, 0.25), atol=1e-5)
        assert not torch.allclose(out, model(x, 0.2))
        # A per-example λ tensor mixing seen and unseen values routes each example on its own.
        mixed = model(x, torch.tensor([0.0, 0.05, 0.25, 0.7, 1.0]))
        assert torch.allclose(mixed[2], out[2], atol=1e-5)
