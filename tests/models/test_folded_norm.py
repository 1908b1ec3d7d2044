"""The attack path folds eval-mode BN + FiLM into one affine map: same logits and input gradients."""

import pytest
import torch

from oat.conditioning import PAPER_LAMS, Conditioning
from oat.models import create_model


def _trained_stats_model(name, widths=(1.0,), **kw):
    torch.manual_seed(0)
    m = create_model(name, Conditioning(lams=PAPER_LAMS, widths=widths), in_channels=3, **kw)
    m.train()
    with torch.no_grad():  # non-trivial running statistics in both BN branches
        for _ in range(2):
            m(torch.rand(12, 3, 16, 16), torch.tensor(PAPER_LAMS * 2))
    return m.eval()


@pytest.mark.parametrize("name,kw", [("small-cnn", {}), ("resnet18", {"base": 4}), ("wrn-16-8", {"dropout": 0.0})])
def test_predictor_matches_forward(name, kw):
    m = _trained_stats_model(name, **kw)
    x = torch.rand(5, 3, 16, 16)
    lam = torch.tensor([0.1, 0.2, 0.3, 0.4, 1.0])
    for lam_arg in (lam, 0.3, 0.0):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ref, got = m(xa, lam_arg), m.predictor(lam_arg, None, 5)(xb)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
        (ga,), (gb,) = torch.autograd.grad(ref.sum(), xa), torch.autograd.grad(got.sum(), xb)
        torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-7)


def test_predictor_matches_forward_at_a_slim_width():
    m = _trained_stats_model("small-cnn", widths=(0.5, 1.0))
    x = torch.rand(4, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    lam = torch.tensor([0.1, 1.0, 0.4, 0.1])
    with torch.no_grad():
        torch.testing.assert_close(m.predictor(lam, 0.5, 4)(x), m(x, lam, 0.5), rtol=1e-5, atol=1e-6)


def test_training_mode_keeps_batch_statistics():
    m = _trained_stats_model("small-cnn")
    x = torch.rand(4, 3, 16, 16)
    m.train()
    out = m.predictor(0.2)(x)  # training mode: BN normalises with the batch, nothing is folded
    m.eval()
    assert not torch.allclose(out, m(x, 0.2))


@pytest.mark.parametrize("name,kw", [("small-cnn", {}), ("resnet18", {"base": 4})])
def test_dedicated_predictor_folds_bn(name, kw, monkeypatch):
    """A dedicated model (no FiLM, one BN) folds its eval-mode BN on the attack path too: same
    logits and input gradients as its forward, and no BatchNorm module runs while attacking."""
    torch.manual_seed(0)
    m = create_model(name, Conditioning.dedicated(1.0), in_channels=3, **kw)
    m.train()
    with torch.no_grad():
        for _ in range(2):
            m(torch.rand(12, 3, 16, 16), 1.0)
    m.eval()
    x = torch.rand(5, 3, 16, 16)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = m(xa, 1.0)
    predict = m.predictor(1.0, None, 5)
    calls = []
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            monkeypatch.setattr(mod, "forward", lambda *a, _c=calls: _c.append(1))
    got = predict(xb)
    assert not calls  # every BN was folded
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    (ga,), (gb,) = torch.autograd.grad(ref.sum(), xa), torch.autograd.grad(got.sum(), xb)
    torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-7)


def test_single_bn_film_model_folds_a_batch_mixing_clean_and_adversarial_lams():
    """With one BN (the single-BN ablation) a batch mixing λ = 0 and λ > 0 takes one BN, so it folds too."""
    torch.manual_seed(0)
    m = create_model("small-cnn", Conditioning(lams=PAPER_LAMS, dual_bn=False), in_channels=3)
    m.train()
    with torch.no_grad():
        m(torch.rand(12, 3, 16, 16), torch.tensor(PAPER_LAMS * 2))
    m.eval()
    x = torch.rand(6, 3, 16, 16)
    lam = torch.tensor([0.0, 1.0, 0.1, 0.0, 0.4, 1.0])
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref, got = m(xa, lam), m.predictor(lam, None, 6)(xb)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    (ga,), (gb,) = torch.autograd.grad(ref.sum(), xa), torch.autograd.grad(got.sum(), xb)
    torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-7)
