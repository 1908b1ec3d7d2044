"""AutoAttack through the authors' package (pyautoattack): the adapter and a sanity comparison."""

import pytest
import torch

from oat.attacks.autoattack import autoattack
from oat.attacks.pgd import pgd
from oat.attacks.registry import BATCHABLE, get_attack
from oat.errors import ConfigError

pytest.importorskip("pyautoattack")


@torch.no_grad()
def _ra(bound, x, y):
    return float((bound(x).argmax(1) == y).float().mean())


@pytest.mark.slow
def test_standard_autoattack_is_not_weaker_than_pgd20(trained_digits_model, digits):
    # Standard AutoAttack costs about a minute even on 16 images on a CPU (Square's 5,000
    # queries and FAB-T's 9 targets on every still-robust example), hence the small n.
    _, _, xt, yt = digits
    x, y, eps = xt[:16], yt[:16], 0.1
    bound = trained_digits_model.at(0.0)
    x_pgd = pgd(bound, x, y, eps=eps, steps=20, generator=torch.Generator().manual_seed(0))
    x_aa = get_attack("autoattack")(bound, x, y, eps=eps, generator=torch.Generator().manual_seed(0))
    assert (x_aa - x).abs().max() <= eps + 1e-6 and x_aa.min() >= 0 and x_aa.max() <= 1
    ra_pgd, ra_aa = _ra(bound, x_pgd, y), _ra(bound, x_aa, y)
    assert ra_aa <= ra_pgd, f"AutoAttack RA {ra_aa:.3f} > PGD-20 RA {ra_pgd:.3f}"
    assert _ra(bound, x, y) > ra_aa  # it broke something


def test_adapter_is_seeded_and_leaves_input_and_global_rng_alone(trained_digits_model, digits):
    _, _, xt, yt = digits
    x, y = xt[:24].clone(), yt[:24]
    x0, bound = x.clone(), trained_digits_model.at(0.0)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = get_attack("apgd-ce")(bound, x, y, eps=0.1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.random.get_rng_state(), state), "the authors' code reseeds the global RNG"
    assert torch.equal(x, x0)
    b = get_attack("apgd-ce")(bound, x, y, eps=0.1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert _ra(bound, a, y) < _ra(bound, x, y)
    l2 = get_attack("apgd-ce")(bound, x, y, eps=0.5, norm="l2", generator=torch.Generator().manual_seed(5))
    assert (l2 - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-4


def test_fewer_than_ten_classes_use_fewer_targets(digits):
    # The standard version's 9 target classes do not exist for 4 classes; the adapter caps them.
    _, _, xt, _ = digits
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)).eval()
    x = xt[:8]
    y = net(x).argmax(1).detach()
    out = autoattack(net, x, y, eps=0.2, version="custom", attacks=("apgd-ce", "apgd-t"),
                     generator=torch.Generator().manual_seed(0), apgd_restarts=1)
    assert out.shape == x.shape and (out - x).abs().max() <= 0.2 + 1e-6


def test_registry_entries():
    assert "autoattack" not in BATCHABLE and "apgd-ce" not in BATCHABLE  # run λ by λ on model.at
    assert {"pgd20", "pgd100-r5", "cw-pgd"} <= BATCHABLE
    with pytest.raises(ConfigError):
        autoattack(torch.nn.Identity(), torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long), eps=0.1,
                   norm="l1")
