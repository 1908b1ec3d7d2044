"""The model registry: every model in both forms, parameter counts, ``model(x, lam)`` and ``at``."""

import pytest
import torch
from torch import nn

from oat.conditioning import Conditioning
from oat.errors import ConfigError, LamError
from oat.models import BoundModel, ConditionedNet, create_model, list_models
from oat.nn import FiLM, Norm

# Dedicated (plain) parameter counts of the architectures in the literature, 10 classes.
KNOWN_PARAMS = {
    "resnet18": 11.17e6,
    "resnet34": 21.28e6,
    "preact-resnet18": 11.17e6,
    "wrn-16-8": 10.96e6,
    "wrn-40-2": 2.24e6,
    "wrn-34-10": 46.16e6,
}
FORMS = {"dedicated": Conditioning.dedicated(1.0), "oat": Conditioning()}


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _cin(name: str) -> int:
    return 1 if name == "small-cnn" else 3


def test_registry_lists_the_papers_models():
    assert {"small-cnn", "resnet18", "resnet34", "preact-resnet18", "wrn-16-8", "wrn-40-2",
            "wrn-34-10"} <= set(list_models())
    assert list_models() == sorted(list_models())


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model 'resnet99'") as e:
        create_model("resnet99")
    assert "\n" not in str(e.value) and "resnet34" in str(e.value)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", list_models())
def test_every_model_forwards_in_both_forms(name, form):
    spec = FORMS[form]
    model = create_model(name, spec, in_channels=_cin(name), num_classes=7)
    assert isinstance(model, ConditionedNet)
    assert model.arch["name"] == name
    if name in KNOWN_PARAMS and form == "dedicated":
        assert _count(model) == pytest.approx(KNOWN_PARAMS[name], rel=0.01)
    # A few models at 32x32 (CIFAR); the rest at 8x8: the same code path, 16x cheaper on a CPU.
    size = 32 if name in ("resnet18", "wrn-40-2", "wrn-16-1") else 8
    x = torch.rand(2, _cin(name), size, size)
    lam = 1.0 if form == "dedicated" else torch.tensor([0.0, 0.4])
    with torch.no_grad():
        out = model.eval()(x, lam)
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_film_adds_about_12m_to_resnet34():
    ded = _count(create_model("resnet34", FORMS["dedicated"]))
    oat = create_model("resnet34", FORMS["oat"])
    film = sum(_count(m) for m in oat.modules() if isinstance(m, FiLM))
    assert film == pytest.approx(12.0e6, rel=0.02)
    assert _count(oat) - ded == pytest.approx(12.0e6, rel=0.02)


def test_film_after_main_path_bns_only():
    """ResNet-34: stem + 2 per basic block (16) = 33 FiLM layers; shortcut BNs have none."""
    model = create_model("resnet34", Conditioning(dim=8))
    norms = [m for m in model.modules() if isinstance(m, Norm)]
    assert sum(n.film is not None for n in norms) == 33
    assert sum(n.film is None for n in norms) == 3  # the three projection shortcuts
    wrn = create_model("wrn-16-1", Conditioning(dim=8))
    assert wrn.final_n.film is None  # as the reference: no FiLM after the final BN


def test_dedicated_form_has_no_film_and_single_bn():
    model = create_model("resnet18", FORMS["dedicated"])
    assert not any(isinstance(m, FiLM) for m in model.modules())
    assert all(len(m.bn.bns[0]) == 1 for m in model.modules() if isinstance(m, Norm))
    oat = create_model("resnet18", Conditioning(dim=8))
    assert all(len(m.bn.bns[0]) == 2 for m in oat.modules() if isinstance(m, Norm))


def test_wrn_16_8_has_dropout_by_default():
    model = create_model("wrn-16-8", FORMS["dedicated"])
    assert all(b.dropout == 0.3 for s in model.stages for b in s.blocks)


@pytest.mark.parametrize("lam", [0.0, 0.4, 1.0])
def test_float_lam_equals_constant_tensor(tiny_model, batch, lam):
    x, _ = batch
    tiny_model.eval()
    with torch.no_grad():
        a = tiny_model(x, lam)
        b = tiny_model(x, torch.full((x.shape[0],), lam))
        c = tiny_model(x, torch.tensor(lam))  # a 0-d tensor is a float
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


def test_float_lam_equals_constant_tensor_in_train_mode(tiny_model, batch):
    x, _ = batch
    tiny_model.train()
    torch.testing.assert_close(tiny_model(x, 0.2), tiny_model(x, torch.full((12,), 0.2)))


def test_at_is_a_plain_module_equal_to_forward(tiny_model, batch):
    x, _ = batch
    tiny_model.eval()
    for lam in tiny_model.spec.lams:
        bound = tiny_model.at(lam)
        assert isinstance(bound, nn.Module) and isinstance(bound, BoundModel)
        with torch.no_grad():
            torch.testing.assert_close(bound(x), tiny_model(x, lam))
    # It shares storage with its parent: no copy of the weights.
    bound = tiny_model.at(0.3)
    assert {p.data_ptr() for p in bound.parameters()} == {p.data_ptr() for p in tiny_model.parameters()}
    assert bound.lam == 0.3 and tiny_model.at(0.1 + 0.2).lam == 0.3


def test_at_refuses_untrained_or_out_of_range_lam(tiny_model):
    with pytest.raises(LamError):
        tiny_model.at(0.25)
    with pytest.raises(LamError):
        tiny_model.at(1.5)
    with pytest.raises(LamError):
        tiny_model(torch.rand(2, 1, 8, 8), torch.tensor([0.0, 0.25]))


def test_lam_tensor_must_match_the_batch(tiny_model):
    with pytest.raises(LamError, match=r"\(N,\)"):
        tiny_model(torch.rand(3, 1, 8, 8), torch.zeros(2))


def test_dedicated_model_refuses_another_lam(make_tiny, batch):
    x, _ = batch
    model = make_tiny(Conditioning.dedicated(0.3)).eval()
    assert model.at(0.3)(x).shape == (12, 10)
    for call in (lambda: model.at(0.4), lambda: model(x, 1.0), lambda: model(x, torch.zeros(12))):
        with pytest.raises(LamError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg and "dedicated" in msg and "0.3" in msg


def test_continuous_model_takes_any_lam(make_tiny, batch):
    x, _ = batch
    model = make_tiny(Conditioning(encoding="continuous", dim=16)).eval()
    with torch.no_grad():
        a, b = model(x, 0.25), model(x, 0.26)
    assert not torch.equal(a, b)
    torch.testing.assert_close(model.at(0.77)(x), model(x, 0.77))
