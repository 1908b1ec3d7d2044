"""export(): a (λ, width) of a conditioned model as a standalone dense network of sliced copies;
shrink_to_widths(): a dedicated slim model stores only its width's channels."""

import copy

import pytest
import torch
import torch.nn.functional as F

from oat.checkpoint import load_model, save_checkpoint
from oat.conditioning import Conditioning
from oat.errors import WidthError
from oat.models import MODELS, create_model
from oat.models.export import SlimNet, export, shrink_to_widths
from oat.nn import DualBN, FiLM, SConv2d, SLinear
from random_bn import randomise_bn

WIDTHS = (0.5, 0.75, 1.0)
# (name, kwargs, image channels, image size): a plain CNN, a pre-activation WRN, a basic-block ResNet.
ARCHS = [("small-cnn", {"base": 8}, 1, 8), ("wrn-16-1", {}, 3, 8), ("resnet18", {"base": 8}, 3, 8)]




def _oats(name, kw, cin, widths=WIDTHS, spec=None):
    torch.manual_seed(0)
    spec = spec or Conditioning(widths=widths, dim=16)
    return randomise_bn(create_model(name, spec, in_channels=cin, **kw)).eval()


@pytest.mark.parametrize("name,kw,cin,size", ARCHS)
def test_exported_network_equals_the_slim_forward(name, kw, cin, size):
    model = _oats(name, kw, cin)
    x = torch.rand(5, cin, size, size)
    for w in WIDTHS:
        for lam in (0.0, 0.2, 1.0):
            slim = export(model, lam, w)
            torch.testing.assert_close(slim(x), model(x, lam, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,kw,cin,size", ARCHS)
def test_exported_network_is_dense_and_smaller_with_width(name, kw, cin, size):
    model = _oats(name, kw, cin)
    counts = []
    for w in WIDTHS:
        slim = export(model, 1.0, w)
        kinds = {type(m) for m in slim.modules()}
        assert not kinds & {SConv2d, SLinear, FiLM, DualBN}
        counts.append(sum(p.numel() for p in slim.parameters()))
    assert counts[0] < counts[1] < counts[2]


def test_exported_parameters_are_sliced_copies():
    model = _oats("small-cnn", {"base": 8}, 1)
    slim = export(model, 0.3, 0.5)
    conv = slim.net.convs[1]
    assert conv.weight.shape == (8, 4, 3, 3)
    assert torch.equal(conv.weight, model.convs[1].weight[:8, :4])
    assert slim.net.fc.weight.shape == (10, 16)
    with torch.no_grad():
        conv.weight.zero_()  # a copy: the parent is untouched
    assert model.convs[1].weight.abs().sum() > 0


def test_export_folds_film_into_the_chosen_bn():
    # λ = 0 picks the clean BN of the width, λ > 0 the adversarial one; FiLM folded into its affine.
    model = _oats("small-cnn", {"base": 8}, 1)
    widx = model.spec.width_index(0.75)
    for lam, branch in ((0.0, 0), (0.4, 1)):
        bn = export(model, lam, 0.75).net.norms[0].bn
        src = model.norms[0].bn.bns[widx][branch]
        assert torch.equal(bn.running_mean, src.running_mean)
        mu, sigma = model.norms[0].film.params(model.condition(lam).enc, bn.num_features)
        torch.testing.assert_close(bn.weight, src.weight * mu[0])
        torch.testing.assert_close(bn.bias, src.bias * mu[0] + sigma[0])


def test_hand_built_dense_network_from_sliced_weights():
    """Independent of export(): the slim forward equals convolutions with sliced weights."""
    model = _oats("small-cnn", {"base": 8}, 1)
    x, lam, w = torch.rand(4, 1, 8, 8), 0.3, 0.5
    widx = model.spec.width_index(w)
    enc = model.condition(lam).enc
    h, cin = x, 1
    for conv, norm in zip(model.convs, model.norms):
        c = int(conv.out_channels * w)
        h = F.conv2d(h, conv.weight[:c, :cin], None, conv.stride, conv.padding)
        bn = norm.bn.bns[widx][1]
        h = F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        mu, sigma = norm.film.params(enc, c)
        h, cin = F.relu(h * mu[0].view(1, -1, 1, 1) + sigma[0].view(1, -1, 1, 1)), c
    logits = F.linear(h.mean((2, 3)), model.fc.weight[:, :cin], model.fc.bias)
    torch.testing.assert_close(model(x, lam, w), logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(export(model, lam, w)(x), logits, rtol=1e-5, atol=1e-5)


def test_export_keeps_train_mode_and_matches_batch_statistics():
    model = _oats("small-cnn", {"base": 8}, 1).train()
    slim = export(model, 1.0, 0.75)
    assert isinstance(slim, SlimNet) and slim.training
    x = torch.rand(6, 1, 8, 8)
    torch.testing.assert_close(slim(x), model(x, 1.0, 0.75), rtol=1e-5, atol=1e-5)


def test_export_refuses_an_untrained_width():
    with pytest.raises(WidthError, match="not trained"):
        export(_oats("small-cnn", {"base": 8}, 1), 0.0, 0.6)


@pytest.mark.parametrize("name,kw,cin,size", ARCHS)
def test_dedicated_slim_model_stores_only_its_width(name, kw, cin, size, tmp_path):
    slim = create_model(name, Conditioning.dedicated(1.0, widths=(0.5,)), in_channels=cin, **kw)
    two = _oats(name, kw, cin, spec=Conditioning.dedicated(1.0, widths=(1.0, 0.5)))
    n_slim = sum(p.numel() for p in slim.parameters())
    assert n_slim == sum(p.numel() for p in export(two, 1.0, 0.5).parameters())
    assert n_slim < 0.4 * sum(p.numel() for p in two.parameters())
    x = torch.rand(3, cin, size, size)
    slim.eval()
    # width None means its own width; any other width is refused
    assert torch.equal(slim(x, 1.0), slim.at(1.0, 0.5)(x))
    with pytest.raises(WidthError):
        slim(x, 1.0, 1.0)
    save_checkpoint(tmp_path / "checkpoints", "epoch-0001", slim, None, {"epoch": 1, "step": 0})
    loaded = load_model(tmp_path)
    assert loaded.spec.widths == (0.5,)
    assert torch.equal(loaded(x, 1.0), slim(x, 1.0))


def test_slim_oats_model_without_full_width_stores_its_largest():
    # widths (0.5, 0.75): only 0.75's channels are stored, and both widths compute what the
    # same network with full-width storage computes.
    spec = Conditioning(widths=(0.5, 0.75), dim=16)
    torch.manual_seed(0)
    full = randomise_bn(MODELS["small-cnn"](spec, in_channels=1, base=8)).eval()
    full.arch = {"in_channels": 1}
    small = shrink_to_widths(copy.deepcopy(full))
    assert full.convs[1].weight.shape == (16, 8, 3, 3) and small.convs[1].weight.shape == (12, 6, 3, 3)
    assert small.norms[2].film.fc2.weight.shape == (48, 48)
    x = torch.rand(4, 1, 8, 8)
    for w in (0.5, 0.75):
        for lam in (0.0, 0.2):
            torch.testing.assert_close(small(x, lam, w), full(x, lam, w), rtol=1e-5, atol=1e-5)
