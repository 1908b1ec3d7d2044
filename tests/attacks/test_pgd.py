"""PGD and FGSM as pure functions: in the ball, in [0, 1], loss-raising, side-effect free."""

import pytest
import torch
import torch.nn.functional as F

from oat.attacks import cw_margin_loss, eval_step_size, fgsm, pgd, train_step_size
from oat.errors import ConfigError


@pytest.fixture(scope="module")
def setup(trained_digits_model, digits):
    _, _, x, y = digits
    model = trained_digits_model
    return model.at(0.0), x[:96], y[:96]


def _ce(predict, x, y):
    with torch.no_grad():
        return F.cross_entropy(predict(x), y, reduction="none")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 0.5)])
def test_stays_in_the_ball_and_in_unit_range(setup, norm, eps):
    predict, x, y = setup
    for keep_best in (True, False):
        xa = pgd(predict, x, y, eps=eps, steps=5, norm=norm, keep_best=keep_best, generator=_gen())
        d = (xa - x).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert (size <= eps + 1e-5).all()
        assert xa.min() >= 0 and xa.max() <= 1
        assert not xa.requires_grad


def test_digits_hit_the_pixel_bounds(setup):
    """Digits have many pixels at exactly 0 and 1: the clamp matters, and is applied."""
    _, x, _ = setup
    assert (x == 0).float().mean() > 0.2


def test_raises_the_loss_over_the_clean_input(setup):
    predict, x, y = setup
    clean = _ce(predict, x, y)
    with torch.no_grad():
        acc = (predict(x).argmax(1) == y).float().mean()
    assert acc > 0.8  # the model is trained: the attack has something to do
    xa = pgd(predict, x, y, eps=0.15, steps=10, generator=_gen())
    adv = _ce(predict, xa, y)
    assert adv.mean() > clean.mean() + 0.5
    assert (adv >= clean - 1e-4).float().mean() > 0.95
    with torch.no_grad():
        assert (predict(xa).argmax(1) == y).float().mean() < acc - 0.2


def test_gradients_only_wrt_the_perturbation(setup, trained_digits_model):
    predict, x, y = setup
    trained_digits_model.zero_grad(set_to_none=True)
    xin = x.clone().requires_grad_(True)
    pgd(predict, xin, y, eps=0.1, steps=3, generator=_gen())
    assert all(p.grad is None for p in trained_digits_model.parameters())
    assert xin.grad is None


def test_input_tensor_not_modified(setup):
    predict, x, y = setup
    x0, y0 = x.clone(), y.clone()
    pgd(predict, x, y, eps=0.1, steps=3, generator=_gen())
    fgsm(predict, x, y, eps=0.1)
    assert torch.equal(x, x0) and torch.equal(y, y0)


def test_generator_reproducible_and_global_rng_untouched(setup):
    predict, x, y = setup
    state = torch.get_rng_state()
    a = pgd(predict, x, y, eps=0.1, steps=2, generator=_gen(5))
    b = pgd(predict, x, y, eps=0.1, steps=2, generator=_gen(5))
    c = pgd(predict, x, y, eps=0.1, steps=2, generator=_gen(6))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Zero steps return the random start itself: where the generator shows most directly.
    s1 = pgd(predict, x, y, eps=0.1, steps=0, keep_best=False, generator=_gen(1))
    s2 = pgd(predict, x, y, eps=0.1, steps=0, keep_best=False, generator=_gen(1))
    assert torch.equal(s1, s2) and not torch.equal(s1, x)
    assert ((s1 - x).abs() <= 0.1 + 1e-6).all()


def test_keep_best_never_worse_than_last_iterate(setup):
    predict, x, y = setup
    kw = dict(eps=0.1, steps=6, step_size=0.05)
    last = pgd(predict, x, y, keep_best=False, generator=_gen(3), **kw)
    best = pgd(predict, x, y, keep_best=True, generator=_gen(3), **kw)  # same trajectory
    with torch.no_grad():
        wrong_last, wrong_best = predict(last).argmax(1) != y, predict(best).argmax(1) != y
    l_last, l_best = _ce(predict, last, y), _ce(predict, best, y)
    assert (wrong_best | ~wrong_last).all()  # a fooled last iterate implies a fooled best
    assert ((l_best >= l_last - 1e-5) | wrong_best).all()
    assert wrong_best.sum() >= wrong_last.sum()


def test_restarts_fool_a_superset(setup):
    predict, x, y = setup
    kw = dict(eps=0.08, steps=3)
    one = pgd(predict, x, y, restarts=1, generator=_gen(4), **kw)
    three = pgd(predict, x, y, restarts=3, generator=_gen(4), **kw)  # first restart is `one`'s run
    with torch.no_grad():
        w1, w3 = predict(one).argmax(1) != y, predict(three).argmax(1) != y
    assert (w3 | ~w1).all()


def test_fgsm_is_one_signed_step(setup):
    predict, x, y = setup
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(predict(xg), y, reduction="sum"), xg)
    expected = (x + 0.1 * g.sign()).clamp(0, 1)
    torch.testing.assert_close(fgsm(predict, x, y, eps=0.1), expected)


def test_zero_eps_returns_the_input(setup):
    predict, x, y = setup
    assert torch.equal(pgd(predict, x, y, eps=0.0, steps=5), x)


def test_cw_loss_and_bad_names(setup):
    predict, x, y = setup
    logits = torch.tensor([[2.0, 1.0, -1.0], [0.0, 3.0, 1.0]])
    torch.testing.assert_close(cw_margin_loss(logits, torch.tensor([0, 0])), torch.tensor([-1.0, 3.0]))
    xa = pgd(predict, x, y, eps=0.1, steps=3, loss="cw", generator=_gen())
    assert ((xa - x).abs() <= 0.1 + 1e-6).all()
    with pytest.raises(ConfigError, match="loss"):
        pgd(predict, x, y, eps=0.1, steps=1, loss="mse")
    with pytest.raises(ConfigError, match="threat"):
        pgd(predict, x, y, eps=0.1, steps=1, norm="l1")


def test_step_size_rules():
    # Training (the OAT reference): min(1.25ε, ε + 4/255) / steps.
    assert train_step_size(8 / 255, 7) == pytest.approx(10 / 255 / 7)
    assert train_step_size(0.3, 7) == pytest.approx((0.3 + 4 / 255) / 7)
    # Evaluation (Madry et al.): 2.5ε / k, e.g. 1/255 for PGD-20 at 8/255.
    assert eval_step_size(8 / 255, 20) == pytest.approx(1 / 255)
    assert eval_step_size(0.1, 100) == pytest.approx(0.0025)


def test_default_step_is_the_evaluation_rule(setup):
    """Without ``step_size``, PGD-1 with no random start moves every unclamped pixel 2.5ε."""
    predict, x, y = setup
    xa = pgd(predict, x, y, eps=0.04, steps=1, random_start=False, keep_best=False)
    d = (xa - x).abs()
    inner = (x > 0.2) & (x < 0.8) & (d > 0)
    # 2.5ε per step, then projected back to ε: every moved inner pixel sits on the boundary.
    torch.testing.assert_close(d[inner], torch.full_like(d[inner], 0.04))
