"""AutoAttack through the authors' package (pyautoattack): the adapter, its progress reports,
equality with the package's own evaluation loop, and a sanity comparison."""

import pytest
import torch

from oat.attacks import autoattack as aa_mod
from oat.attacks.autoattack import autoattack, build, run_components
from oat.attacks.pgd import pgd
from oat.attacks.registry import BATCHABLE, REPORTS, get_attack
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
    assert {"autoattack", "apgd-ce"} <= REPORTS and "pgd20" not in REPORTS
    assert {"pgd20", "pgd100-r5", "cw-pgd"} <= BATCHABLE
    with pytest.raises(ConfigError):
        autoattack(torch.nn.Identity(), torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long), eps=0.1,
                   norm="l1")


def _shrunk(aa):
    """Every component at a twentieth of its standard work (the loop, not the attacks, is under test)."""
    aa.apgd.n_iter = aa.apgd_targeted.n_iter = aa.fab.n_iter = 5
    aa.square.n_queries = 50
    return aa


def test_driven_components_equal_the_packages_own_evaluation(trained_digits_model, digits):
    # The adapter drives the package's attack objects itself (to report progress); on several
    # batches and all four standard components it must give what run_standard_evaluation gives.
    _, _, xt, yt = digits
    x, y, bound = xt[:18], yt[:18], trained_digits_model.at(0.0)
    with torch.random.fork_rng():
        ref, _ = _shrunk(build(bound, eps=0.1, norm="linf", seed=7, x=x)).run_standard_evaluation(x, y, batch_size=6)
    events = []
    with torch.random.fork_rng():
        ours = run_components(_shrunk(build(bound, eps=0.1, norm="linf", seed=7, x=x)), x, y, batch_size=6,
                              progress=events.append)
    assert torch.equal(ours, ref)
    with torch.no_grad():
        robust = bound(ours).argmax(1) == y
    assert 0 < int(robust.sum()) < int((bound(x).argmax(1) == y).sum())  # some broken, some not
    assert events[-1].event == "end" and events[-1].robust == int(robust.sum())


def test_progress_per_component_and_batch_with_falling_robust_counts(trained_digits_model, digits):
    _, _, xt, yt = digits
    x, y, bound = xt[:12], yt[:12], trained_digits_model.at(0.0)
    events = []
    out = autoattack(bound, x, y, eps=0.1, version="custom", attacks=("apgd-ce", "apgd-t"), apgd_restarts=1,
                     batch_size=4, generator=torch.Generator().manual_seed(1), progress=events.append)
    main = [e for e in events if e.event != "pass"]
    assert [e.attack for e in main if e.event == "attack"] == ["apgd-ce", "apgd-t"]
    for name in ("apgd-ce", "apgd-t"):
        mine = [e for e in main if e.attack == name]
        batches = mine[0].batches
        assert [e.event for e in mine] == ["attack"] + ["batch"] * batches + ["end"]
        assert [e.batch for e in mine if e.event == "batch"] == list(range(1, batches + 1))
        assert mine[-1].eta is None or mine[-1].eta == 0
    assert main[0].batches == 3  # 12 clean-correct examples in batches of 4
    robust = [e.robust for e in events]
    assert robust == sorted(robust, reverse=True) and robust[-1] < robust[0]  # never up, and down
    passes = [e.passes for e in events]
    assert passes == sorted(passes) and passes[-1] > 100  # the pass counter sees APGD's iterations
    with torch.no_grad():
        assert events[-1].robust == int(((bound(out).argmax(1) == y) & (bound(x).argmax(1) == y)).sum())
    assert "apgd-t 2/2: batch" in main[-1].describe() and f"robust {robust[-1]}/12" in main[-1].describe()


def test_reports_keep_coming_while_one_batch_runs(trained_digits_model, digits, monkeypatch):
    # One batch of one component can run for minutes: the pass counter reports meanwhile.
    monkeypatch.setattr(aa_mod, "TICK_SECONDS", 0.0)
    _, _, xt, yt = digits
    events = []
    autoattack(trained_digits_model.at(0.0), xt[:8], yt[:8], eps=0.1, version="custom", attacks=("apgd-ce",),
               apgd_restarts=1, generator=torch.Generator().manual_seed(1), progress=events.append)
    between = [e for e in events if e.event == "pass" and e.batch == 0]
    assert len(between) > 50 and between[-1].passes > between[0].passes


@pytest.mark.slow
def test_standard_autoattack_equals_the_packages_run(trained_digits_model, digits):
    # The library's call at the standard settings, against the package's own method.
    from pyautoattack import AutoAttack

    # On the cached predictor, as the sweep attacks (half the time of model.at here).
    _, _, xt, yt = digits
    x, y, predict = xt[:4], yt[:4], trained_digits_model.eval().predictor(0.0)
    seed = aa_mod._seed_from(torch.Generator().manual_seed(3))
    with torch.random.fork_rng():
        pkg = AutoAttack(predict, eps=0.1, norm="Linf", seed=seed, version="standard")
        pkg.verbose = False
        ref, _ = pkg.run_standard_evaluation(x, y, batch_size=4)
    ours = get_attack("autoattack")(predict, x, y, eps=0.1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(ours, ref)
