"""Slimmable layers (OATS): slices are the first int(C·w) channels, per-width dual BN, width errors."""

import pytest
import torch
import torch.nn.functional as F

from oat.conditioning import Conditioning
from oat.errors import WidthError
from oat.models import create_model
from oat.nn import FiLM, SConv2d, SLinear
from oat.nn.context import Ctx

WIDTHS = (0.5, 0.75, 1.0)


def _ctx(width, widx=0, enc=None):
    return Ctx(enc=enc, inverse=None, route="clean", width=width, width_idx=widx)


def test_sconv_uses_the_first_channels():
    conv = SConv2d(8, 16, 3, padding=1, bias=True)
    x = torch.rand(2, 4, 5, 5)  # 4 of 8 input channels present: width 0.5 upstream
    out = conv(x, _ctx(0.5))
    ref = F.conv2d(x, conv.weight[:8, :4], conv.bias[:8], padding=1)
    assert out.shape == (2, 8, 5, 5) and torch.equal(out, ref)


def test_sconv_keeps_all_outputs_when_not_slim():
    conv = SConv2d(8, 10, 1, slim_out=False)
    assert conv(torch.rand(1, 4, 3, 3), _ctx(0.5)).shape[1] == 10


def test_slinear_reads_only_present_features():
    fc = SLinear(16, 10)
    x = torch.rand(3, 8)
    assert torch.equal(fc(x, _ctx(0.5)), F.linear(x, fc.weight[:, :8], fc.bias))


def test_film_slices_scale_and_shift_separately():
    # fc2 = 0 and a known bias: μ and σ are then leaky_relu(bias rows), so the rows used
    # at a slim width show whether channel c keeps its own scale and shift.
    film = FiLM(8, 4)
    with torch.no_grad():
        film.fc2.weight.zero_()
        film.fc2.bias.copy_(torch.arange(16.0))
    mu, sigma = film.params(torch.rand(1, 4), 4)
    assert torch.equal(mu[0], torch.arange(4.0)) and torch.equal(sigma[0], torch.arange(8.0, 12.0))


@pytest.fixture
def oats_model():
    torch.manual_seed(0)
    return create_model("small-cnn", Conditioning(widths=WIDTHS, dim=16), in_channels=1, base=8)


def _bn_buffers(model):
    return {n: b.clone() for n, b in model.named_buffers() if "running_mean" in n}


def _bn_key(name):
    # ...bn.bns.<width index>.<0 clean | 1 adv>.running_mean
    parts = name.split(".")
    i = parts.index("bns")
    return int(parts[i + 1]), int(parts[i + 2])


def test_a_training_step_at_one_width_changes_only_its_bn_statistics(oats_model):
    before = _bn_buffers(oats_model)
    oats_model.train()
    lam = torch.tensor([0.0] * 4 + [0.3] * 4)
    loss = F.cross_entropy(oats_model(torch.rand(8, 1, 8, 8), lam, 0.5), torch.arange(8))
    loss.backward()
    widx = oats_model.spec.width_index(0.5)
    for name, b in _bn_buffers(oats_model).items():
        changed = not torch.equal(b, before[name])
        assert changed == (_bn_key(name)[0] == widx), name


@pytest.mark.parametrize("lam,branch", [(0.0, 0), (1.0, 1)])
def test_each_branch_of_a_width_has_its_own_statistics(oats_model, lam, branch):
    before = _bn_buffers(oats_model)
    oats_model.train()
    oats_model(torch.rand(8, 1, 8, 8), lam, 0.75)
    widx = oats_model.spec.width_index(0.75)
    for name, b in _bn_buffers(oats_model).items():
        assert (not torch.equal(b, before[name])) == (_bn_key(name) == (widx, branch)), name


def test_bn_of_each_width_has_that_widths_channels(oats_model):
    bns = oats_model.norms[0].bn.bns
    assert [pair[0].num_features for pair in bns] == [8, 6, 4]  # widths sorted largest first


@pytest.mark.parametrize("width", [0.6, 0.25, 2.0])
def test_untrained_width_is_a_clear_error(oats_model, width):
    x = torch.rand(2, 1, 8, 8)
    for call in (lambda: oats_model(x, 0.0, width), lambda: oats_model.at(0.0, width)):
        with pytest.raises(WidthError, match="trained widths: 1, 0.75, 0.5") as e:
            call()
        assert "\n" not in str(e.value)


def test_width_none_is_the_largest(oats_model):
    x = torch.rand(2, 1, 8, 8)
    oats_model.eval()
    assert torch.equal(oats_model(x, 0.3), oats_model(x, 0.3, 1.0))


def test_at_computes_only_the_slim_network(oats_model):
    # at() shares storage with the parent but convolves only the width's channels.
    seen = []
    oats_model.convs[1].register_forward_hook(lambda m, a, out: seen.append(out.shape[1]))
    oats_model.eval().at(0.3, 0.5)(torch.rand(2, 1, 8, 8))
    assert seen == [8]
    assert oats_model.at(0.3, 0.5).parent is oats_model
