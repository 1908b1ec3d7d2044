"""Objectives: OAT's efficient mode and loss, PGD-AT's passes, crafting in eval mode."""

import copy

import pytest
import torch
import torch.nn.functional as F

from oat.attacks import train_step_size
from oat.conditioning import Conditioning
from oat.nn import FiLM
from oat.train import objectives
from oat.train.objectives import OAT, PGDAT, AttackConfig


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def spy(monkeypatch):
    """Records every training-attack call: its inputs, λ, the model's mode, and its output."""
    calls = []
    real = objectives.pgd

    def wrapped(predict, x, y, **kw):
        out = real(predict, x, y, **kw)
        calls.append({"x": x.clone(), "y": y.clone(), "kw": kw, "out": out, "training": spy.model.training})
        return out

    class Spy:
        model = None

    spy = Spy()
    spy.calls = calls
    monkeypatch.setattr(objectives, "pgd", wrapped)
    real_craft = AttackConfig.craft

    def craft(self, model, x, y, lam, width=None, generator=None, like=None):
        spy.model = model
        calls.append({"lam": lam.clone() if torch.is_tensor(lam) else lam})
        return real_craft(self, model, x, y, lam, width, generator, like)

    monkeypatch.setattr(AttackConfig, "craft", craft)
    return spy


def _xy(n=24, seed=0):
    g = _gen(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_oat_attacks_only_the_nonzero_lam_examples(tiny_model, spy):
    x, y = _xy()
    obj = OAT(tiny_model.spec, AttackConfig(eps=0.1, steps=2))
    tiny_model.train()
    loss, m = obj(tiny_model, x, y, generator=_gen())
    lam_call, pgd_call = spy.calls
    assert len(spy.calls) == 2  # one attack for the whole batch
    n0 = 4  # ceil(24 / 6)
    assert lam_call["lam"].shape == (24 - n0,) and (lam_call["lam"] > 0).all()
    assert torch.equal(pgd_call["x"], x[n0:]) and torch.equal(pgd_call["y"], y[n0:])
    assert m["n_adv"] == 24 - n0 and m["n_clean"] == 24 and torch.isfinite(loss)


def test_oat_with_only_clean_examples_never_attacks(tiny_model, spy):
    x, y = _xy()
    obj = OAT(Conditioning(lams=(0.0,)), AttackConfig(eps=0.1, steps=2))
    loss, m = obj(tiny_model, x, y, generator=_gen())
    assert spy.calls == [] and "n_adv" not in m


def test_oat_loss_equals_the_hand_formula(tiny_model, spy):
    x, y = _xy()
    lam = torch.tensor([0.0] * 4 + [0.1, 0.2, 0.3, 0.4, 1.0] * 4)
    obj = OAT(tiny_model.spec, AttackConfig(eps=0.1, steps=2))
    tiny_model.train()
    loss, _ = obj.loss(tiny_model, x, y, lam, 4, _gen())
    x_adv = spy.calls[1]["out"]
    # By hand: mean_i (1-λ_i)·CE(f(x_i; λ_i)) + λ_i·CE(f(x_adv_i; λ_i)), no adversarial term for λ=0.
    ce_c = F.cross_entropy(tiny_model(x, lam), y, reduction="none")
    ce_a = F.cross_entropy(tiny_model(x_adv, lam[4:]), y[4:], reduction="none")
    terms = [(1 - lam[i]) * ce_c[i] + (lam[i] * ce_a[i - 4] if i >= 4 else 0.0) for i in range(24)]
    torch.testing.assert_close(loss, torch.stack([torch.as_tensor(t) for t in terms]).mean())
    # λ = 1 examples contribute their adversarial loss only.
    assert loss.requires_grad


def test_crafting_in_eval_mode_with_own_lam_and_the_training_step(tiny_model, spy):
    x, y = _xy()
    att = AttackConfig(eps=0.1, steps=3)
    tiny_model.train()
    OAT(tiny_model.spec, att)(tiny_model, x, y, generator=_gen())
    pgd_call = spy.calls[1]
    assert pgd_call["training"] is False
    assert tiny_model.training  # restored
    assert pgd_call["kw"]["step_size"] == pytest.approx(train_step_size(0.1, 3))
    assert pgd_call["kw"]["keep_best"] is False and pgd_call["kw"]["steps"] == 3
    # A model that was in eval mode stays there.
    tiny_model.eval()
    OAT(tiny_model.spec, att)(tiny_model, x, y, generator=_gen())
    assert not tiny_model.training


def test_crafting_leaves_no_parameter_gradients(tiny_model):
    x, y = _xy()
    tiny_model.train()
    att = AttackConfig(eps=0.1, steps=2)
    x_adv = att.craft(tiny_model, x, y, 0.4, generator=_gen())
    assert all(p.grad is None for p in tiny_model.parameters())
    assert ((x_adv - x).abs() <= 0.1 + 1e-6).all() and not x_adv.requires_grad


def test_crafting_restores_mode_after_an_error(tiny_model, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(objectives, "pgd", boom)
    tiny_model.train()
    with pytest.raises(RuntimeError):
        AttackConfig(eps=0.1, steps=1).craft(tiny_model, *_xy(), 0.4)
    assert tiny_model.training


def _count_forwards(model, monkeypatch):
    seen = []
    real = type(model).forward

    def fwd(self, x, lam, width=None):
        seen.append(x.detach().clone())
        return real(self, x, lam, width)

    monkeypatch.setattr(type(model), "forward", fwd)
    return seen


@pytest.mark.parametrize("lam, attacks, clean_pass", [(0.0, False, True), (1.0, True, False), (0.5, True, True)])
def test_pgdat_passes(make_tiny, spy, monkeypatch, lam, attacks, clean_pass):
    model = make_tiny(Conditioning.dedicated(lam)).train()
    seen = _count_forwards(model, monkeypatch)
    x, y = _xy()
    loss, m = PGDAT(Conditioning.dedicated(lam), AttackConfig(eps=0.1, steps=2))(model, x, y, generator=_gen())
    assert bool(spy.calls) == attacks
    assert any(torch.equal(s, x) for s in seen) == clean_pass
    assert len(seen) == int(attacks) + int(clean_pass)
    assert ("n_clean" in m) == clean_pass and ("n_adv" in m) == attacks
    # The loss is (1-λ)·CE_clean + λ·CE_adv with batch means.
    with torch.no_grad():
        expect = 0.0
        if clean_pass:
            expect += (1 - lam) * F.cross_entropy(model(x, lam), y)
        if attacks:
            expect += lam * F.cross_entropy(model(spy.calls[1]["out"], lam), y)
    torch.testing.assert_close(loss.detach(), torch.as_tensor(expect, dtype=loss.dtype))


def test_pgdat_with_zero_eps_skips_the_attack(make_tiny, spy):
    model = make_tiny(Conditioning.dedicated(1.0))
    x, y = _xy()
    loss, _ = PGDAT(Conditioning.dedicated(1.0), AttackConfig(eps=0.0, steps=7))(model, x, y)
    assert [c for c in spy.calls if "kw" in c] == []


# ------------------------------------------------ where ours differs from the authors: settings
def test_pgdat_clean_pass_at_1_runs_the_clean_pass_with_weight_zero(make_tiny, spy, monkeypatch):
    model = make_tiny(Conditioning.dedicated(1.0)).train()
    x, y = _xy()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    seen = _count_forwards(model, monkeypatch)
    loss, m = PGDAT(Conditioning.dedicated(1.0), AttackConfig(eps=0.1, steps=2), clean_pass_at_1=True)(
        model, x, y, generator=_gen())
    assert any(torch.equal(s, x) for s in seen) and len(seen) == 2 and "n_clean" in m
    assert not torch.equal(bn.running_mean, before)  # the clean pass moved the BN statistics
    with torch.no_grad():  # ... and has weight 0: the loss is the adversarial term alone
        expect = F.cross_entropy(model(spy.calls[-1]["out"], 1.0), y)
    torch.testing.assert_close(loss.detach(), expect)


@pytest.mark.parametrize("precision, inside", [("fp32", False), ("amp", True)])
def test_training_attack_precision(tiny_model, monkeypatch, precision, inside):
    seen = []
    real = objectives.pgd

    def wrapped(predict, x, y, **kw):
        seen.append(torch.is_autocast_enabled("cpu"))
        return real(predict, x, y, **kw)

    monkeypatch.setattr(objectives, "pgd", wrapped)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        AttackConfig(eps=0.1, steps=1, precision=precision).craft(tiny_model, *_xy(), 0.4)
    assert seen == [inside]


def test_scalar_encoding_can_draw_from_the_discrete_set():
    spec = Conditioning(encoding="scalar")
    att = AttackConfig(eps=0.1, steps=1)
    lam, _ = OAT(spec, att, discrete_draw=True).sample(600, _gen())
    assert all(min(abs(v - t) for t in spec.lams) < 1e-6 for v in lam.tolist())
    lam, _ = OAT(spec, att).sample(600, _gen())
    assert len(set(lam.tolist())) > len(spec.lams)  # the default: U(0, max λ]


def test_oats_trains_one_width_when_asked(make_tiny):
    from oat.train.objectives import OATS

    model = make_tiny(Conditioning(widths=(1.0, 0.5))).train()
    x, y = _xy()
    obj = OATS(model.spec, AttackConfig(eps=0.1, steps=1))
    both = obj(model, x, y, generator=_gen())[0]
    one = obj(model, x, y, generator=_gen(), width=0.5)[0]
    assert one.item() < both.item()


def test_an_oat_step_computes_each_film_table_once(tiny_model, monkeypatch):
    # The clean pass computes FiLM's tables; the attack and the adversarial pass reuse them.
    calls, real = [], FiLM.table
    monkeypatch.setattr(FiLM, "table", lambda self, enc, c: calls.append(id(self)) or real(self, enc, c))
    films = sorted(id(m) for m in tiny_model.modules() if isinstance(m, FiLM))
    tiny_model.train()
    OAT(tiny_model.spec, AttackConfig(eps=0.1, steps=2))(tiny_model, *_xy(), generator=_gen())
    assert films and sorted(calls) == films


def test_shared_film_tables_leave_the_loss_and_gradients_as_unshared(tiny_model, monkeypatch):
    x, y = _xy()
    lam = torch.tensor([0.0] * 4 + [0.1, 0.2, 0.3, 0.4, 1.0] * 4)
    obj = OAT(tiny_model.spec, AttackConfig(eps=0.1, steps=2))
    tiny_model.train()
    params = [p for p in tiny_model.parameters() if p.requires_grad]
    state = copy.deepcopy(tiny_model.state_dict())

    def step():
        tiny_model.load_state_dict(state)  # the same BN statistics for both
        loss, _ = obj.loss(tiny_model, x, y, lam, 4, _gen())
        return loss, torch.autograd.grad(loss, params)

    shared = step()
    real = type(tiny_model).condition
    monkeypatch.setattr(type(tiny_model), "condition",
                        lambda self, *a, step=False, like=None, **kw: real(self, *a, **kw))
    unshared = step()
    torch.testing.assert_close(shared, unshared)


def test_under_autocast_the_fp32_attack_uses_fp32_film_tables(tiny_model, spy, monkeypatch):
    # The passes around the attack run under bf16 autocast; the attack (fp32, as the authors')
    # must craft exactly what it crafts with tables of its own, not read the passes' bf16 ones.
    x, y = _xy()
    lam = torch.tensor([0.0] * 4 + [0.1, 0.2, 0.3, 0.4, 1.0] * 4)
    obj = OAT(tiny_model.spec, AttackConfig(eps=0.1, steps=2))
    tiny_model.train()
    state = copy.deepcopy(tiny_model.state_dict())

    def x_adv():
        tiny_model.load_state_dict(state)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            obj.loss(tiny_model, x, y, lam, 4, _gen())
        return spy.calls[-1]["out"]

    shared = x_adv()
    real = type(tiny_model).condition
    monkeypatch.setattr(type(tiny_model), "condition",
                        lambda self, *a, step=False, like=None, **kw: real(self, *a, **kw))
    assert torch.equal(shared, x_adv())
