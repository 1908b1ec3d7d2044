"""FiLM (OAT Sec. 3.1): ``x * μ + σ`` per channel, computed once per distinct λ."""

import pytest
import torch
import torch.nn.functional as F

from oat.nn import Ctx, FiLM


def _hand_params(film: FiLM, enc: torch.Tensor):
    # The reference: Linear(d, 2C) -> LeakyReLU -> Linear(2C, 2C), split, leaky_relu on both.
    h = F.leaky_relu(film.fc1(enc))
    out = film.fc2(h)
    c = film.channels
    return F.leaky_relu(out[:, :c]), F.leaky_relu(out[:, c:])


def test_film_is_x_times_mu_plus_sigma():
    torch.manual_seed(0)
    film = FiLM(channels=4, enc_dim=6)
    enc = torch.randn(1, 6)
    x = torch.randn(3, 4, 5, 5)
    mu, sigma = _hand_params(film, enc)
    out = film(x, Ctx(enc=enc, inverse=None, route="adv"))
    expected = x * mu.view(1, 4, 1, 1) + sigma.view(1, 4, 1, 1)
    torch.testing.assert_close(out, expected)
    # μ is the scale, σ the shift: a zero input leaves exactly σ.
    zero = film(torch.zeros(1, 4, 2, 2), Ctx(enc=enc, inverse=None, route="adv"))
    torch.testing.assert_close(zero[0, :, 0, 0], sigma[0])


def test_film_params_have_the_reference_shape():
    film = FiLM(channels=8, enc_dim=128)
    assert film.fc1.weight.shape == (16, 128) and film.fc2.weight.shape == (16, 16)
    mu, sigma = film.params(torch.randn(3, 128), 8)
    assert mu.shape == sigma.shape == (3, 8)


def test_film_on_flat_features():
    torch.manual_seed(1)
    film = FiLM(channels=5, enc_dim=3)
    enc, x = torch.randn(1, 3), torch.randn(2, 5)
    mu, sigma = _hand_params(film, enc)
    torch.testing.assert_close(film(x, Ctx(enc=enc, inverse=None, route="adv")), x * mu + sigma)


def test_per_example_gather_equals_per_lam_calls():
    torch.manual_seed(2)
    film = FiLM(channels=3, enc_dim=4)
    enc = torch.randn(3, 4)  # three distinct λ
    inverse = torch.tensor([2, 0, 1, 0, 2, 2])
    x = torch.randn(6, 3, 4, 4)
    out = film(x, Ctx(enc=enc, inverse=inverse, route="mixed"))
    for i, k in enumerate(inverse.tolist()):
        single = film(x[i: i + 1], Ctx(enc=enc[k: k + 1], inverse=None, route="adv"))
        torch.testing.assert_close(out[i: i + 1], single)


def test_film_cache_reuses_params_without_param_grads():
    torch.manual_seed(3)
    film = FiLM(channels=3, enc_dim=4)
    ctx = Ctx(enc=torch.randn(1, 4), inverse=None, route="adv", film_cache={})
    x = torch.randn(2, 3, 2, 2, requires_grad=True)
    a = film(x, ctx)
    assert id(film) in ctx.film_cache
    with torch.no_grad():
        film.fc2.bias.add_(1.0)  # a cached call must not see this change
    b = film(x, ctx)
    torch.testing.assert_close(a, b)
    (g,) = torch.autograd.grad(b.sum(), x)
    assert g.abs().sum() > 0
    assert all(p.grad is None for p in film.parameters())


def test_per_example_lam_rows_equal_per_lam_calls_in_a_model(tiny_model):
    """``model(x, lam_tensor)`` row i equals ``model(x[i], lam_i)`` (eval mode)."""
    tiny_model.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 8, 8, generator=g)
    lam = torch.tensor([0.0, 0.1, 1.0, 0.4, 0.0, 0.2, 0.3, 1.0])
    with torch.no_grad():
        out = tiny_model(x, lam)
        for i in range(8):
            torch.testing.assert_close(out[i: i + 1], tiny_model(x[i: i + 1], float(lam[i])), atol=1e-5, rtol=1e-5)


def test_a_context_like_another_reuses_its_rows_and_gives_the_same_logits(tiny_model):
    tiny_model.eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    lam = torch.tensor([0.0, 0.0, 0.1, 0.4, 1.0, 1.0])
    step = tiny_model.condition(lam, None, 6, step=True)
    for sub, n in ((lam[2:], 4), (lam[4:], 2), (0.4, 2)):  # several λ, one λ as a tensor, one as a float
        like = tiny_model.condition(sub, None, n, like=step)
        assert like.enc is step.enc and like.step is step.step
        torch.testing.assert_close(tiny_model(x[-n:], like), tiny_model(x[-n:], sub))


def test_a_context_like_another_refuses_a_lam_the_other_lacks(tiny_model):
    step = tiny_model.condition(torch.tensor([0.0, 0.1]), None, 2, step=True)
    with pytest.raises(ValueError, match="not among"):
        tiny_model.condition(torch.tensor([0.4]), None, 1, like=step)


def test_a_step_table_first_made_without_gradients_is_remade_for_training(tiny_model):
    # An attack under no_grad may be the first to ask; the training pass must still reach FiLM.
    tiny_model.train()
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ctx = tiny_model.condition(torch.tensor([0.0, 0.1, 0.4, 1.0]), None, 4, step=True)
    with torch.no_grad():
        tiny_model(x, ctx)
    tiny_model(x, ctx).square().sum().backward()
    films = [m for m in tiny_model.modules() if isinstance(m, FiLM)]
    assert films and all(f.fc1.weight.grad is not None and f.fc1.weight.grad.abs().sum() > 0 for f in films)
