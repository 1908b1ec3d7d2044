"""Dual BN (OAT Sec. 3.2): routing per example from λ, never from batch position."""

import copy

import pytest
import torch

from oat.nn import Ctx, DualBN


def _bn_pairs(model):
    return [m.bns[0] for m in model.modules() if isinstance(m, DualBN)]


def _stats(model, which):
    return [torch.cat([p[which].running_mean, p[which].running_var]).clone() for p in _bn_pairs(model)]


def _changed(before, after):
    return [not torch.equal(a, b) for a, b in zip(before, after)]


def _mixed_batch(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    lam = torch.tensor([0.0, 0.3, 1.0, 0.0, 0.1, 0.0, 0.2, 1.0, 0.4, 0.0])[:n]
    return x, lam


@pytest.mark.parametrize("lam, changed, unchanged", [(0.0, 0, 1), (0.4, 1, 0)])
def test_float_lam_updates_only_its_bn(tiny_model, lam, changed, unchanged):
    x, _ = _mixed_batch()
    tiny_model.train()
    clean0, adv0 = _stats(tiny_model, 0), _stats(tiny_model, 1)
    tiny_model(x, lam)
    after = {0: _stats(tiny_model, 0), 1: _stats(tiny_model, 1)}
    before = {0: clean0, 1: adv0}
    assert all(_changed(before[changed], after[changed]))
    assert not any(_changed(before[unchanged], after[unchanged]))


def test_zero_lam_examples_change_only_the_clean_bn(tiny_model):
    """In a mixed batch, λ=0 examples set the clean BN's statistics exactly as if they were
    run alone, and λ>0 examples the adversarial BN's."""
    x, lam = _mixed_batch()
    clean = lam == 0
    ref = copy.deepcopy(tiny_model).train()
    tiny_model.train()
    out = tiny_model(x, lam)
    out_clean = ref(x[clean], 0.0)
    out_adv = ref(x[~clean], lam[~clean])
    for a, b in zip(_stats(tiny_model, 0), _stats(ref, 0)):
        torch.testing.assert_close(a, b)
    for a, b in zip(_stats(tiny_model, 1), _stats(ref, 1)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(out[clean], out_clean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[~clean], out_adv, atol=1e-5, rtol=1e-5)


def test_only_clean_examples_leave_adv_bn_untouched(tiny_model):
    x, _ = _mixed_batch()
    tiny_model.train()
    adv0 = _stats(tiny_model, 1)
    tiny_model(x, torch.zeros(10))
    assert not any(_changed(adv0, _stats(tiny_model, 1)))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_permuting_the_batch_permutes_the_logits(tiny_model, mode):
    x, lam = _mixed_batch()
    # Give the running stats something other than their initial values first.
    tiny_model.train()
    tiny_model(x, lam)
    getattr(tiny_model, mode)()
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    a = copy.deepcopy(tiny_model)
    with torch.no_grad():
        out = a(x, lam)
        out_p = tiny_model(x[perm], lam[perm])
    torch.testing.assert_close(out_p, out[perm], atol=1e-5, rtol=1e-5)
    if mode == "train":  # the running statistics end the same too
        for s, t in zip(_stats(a, 0) + _stats(a, 1), _stats(tiny_model, 0) + _stats(tiny_model, 1)):
            torch.testing.assert_close(s, t)


def test_dual_bn_layer_routes_by_index():
    torch.manual_seed(0)
    bn = DualBN(3, dual=True).eval()
    with torch.no_grad():  # make the two BNs visibly different
        bn.bns[0][0].running_mean.fill_(1.0)
        bn.bns[0][1].running_mean.fill_(-1.0)
    x = torch.zeros(4, 3, 2, 2)
    ctx = Ctx(enc=None, inverse=None, route="mixed", clean_idx=torch.tensor([1, 3]), adv_idx=torch.tensor([0, 2]))
    out = bn(x, ctx)
    assert (out[[1, 3]] < 0).all() and (out[[0, 2]] > 0).all()
    torch.testing.assert_close(bn(x, Ctx(enc=None, inverse=None, route="clean")), out[[1, 1, 3, 3]])
    single = DualBN(3, dual=False)
    assert len(single.bns[0]) == 1
    assert single(x, ctx).shape == x.shape


def test_clean_prefix_slices_equal_the_gather_route(tiny_model):
    # The OAT sampler puts λ = 0 first: the slice + cat route must equal the index route exactly
    # (outputs, parameter gradients and running statistics), in training mode.
    import dataclasses

    x, lam = _mixed_batch()
    order = torch.argsort((lam > 0).int(), stable=True)
    x, lam = x[order], lam[order]
    ctx = tiny_model.condition(lam, None, x.shape[0])
    assert ctx.route == "mixed" and ctx.n_clean_prefix == int((lam == 0).sum())
    shuffled = tiny_model.condition(lam[torch.tensor([9, *range(1, 9), 0])], None, 10)
    assert shuffled.n_clean_prefix is None  # a λ > 0 example before a λ = 0 one: the gather route
    results = []
    k = ctx.n_clean_prefix
    gather = dataclasses.replace(ctx, n_clean_prefix=None, clean_idx=torch.arange(k), adv_idx=torch.arange(k, 10))
    for c in (ctx, gather):
        m = copy.deepcopy(tiny_model).train()
        out = m.forward_ctx(x, c)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in m.parameters() if p.grad is not None],
                        _stats(m, 0) + _stats(m, 1)))
    (o1, g1, s1), (o2, g2, s2) = results
    torch.testing.assert_close(o1, o2)
    assert len(g1) == len(g2) > 0
    for a, b in zip(g1 + s1, g2 + s2):
        torch.testing.assert_close(a, b)
