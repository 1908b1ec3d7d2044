"""FLOPs counting (2 × MACs of convolutions and matrix products) and ``oat models``."""

import pytest
import torch
from torch import nn

from oat.cli.main import main
from oat.conditioning import Conditioning
from oat.models import create_model, list_models
from oat.models.flops import count_flops, describe


def test_linear_and_conv_closed_forms():
    assert count_flops(nn.Linear(20, 7), (5, 20)) == 2 * 5 * 20 * 7
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_flops(conv, (3, 10, 10)) == 2 * 8 * 3 * 9 * 100
    assert count_flops(conv, (4, 3, 10, 10)) == 4 * 2 * 8 * 3 * 9 * 100
    assert count_flops(lambda x: x @ torch.ones(6, 2), (3, 6)) == 2 * 3 * 6 * 2


def test_small_cnn_closed_form_at_28x28():
    model = create_model("small-cnn", Conditioning.dedicated(1.0), in_channels=1)
    # conv 1->32 at 28², 32->64 stride 2 at 14², 64->128 stride 2 at 7², linear 128->10.
    expected = 2 * (32 * 1 * 9 * 784 + 64 * 32 * 9 * 196 + 128 * 64 * 9 * 49 + 128 * 10)
    assert count_flops(model, (1, 28, 28)) == expected
    assert describe("small-cnn", Conditioning.dedicated(1.0), 1, 28) == (
        sum(p.numel() for p in model.parameters()), expected)


def test_known_cifar_macs():
    # CIFAR ResNet-18 ≈ 0.56 GMACs, WRN-34-10 ≈ 6.66 GMACs at 32×32.
    assert describe("resnet18", Conditioning.dedicated(1.0), 3, 32)[1] == pytest.approx(2 * 0.556e9, rel=0.01)
    assert describe("wrn-34-10", Conditioning.dedicated(1.0), 3, 32)[1] == pytest.approx(2 * 6.66e9, rel=0.01)


def test_meta_count_equals_real_count_and_mode_is_restored():
    spec = Conditioning(dim=16)
    real = create_model("wrn-16-1", spec).train()
    n = count_flops(real, (3, 32, 32), lam=0.4)
    assert real.training
    assert describe("wrn-16-1", spec, 3, 32)[1] == pytest.approx(n, rel=0.01)  # meta λ=1 vs λ=0.4: same convs
    assert count_flops(real.at(0.0), (3, 32, 32)) == pytest.approx(n, rel=0.01)
    # FiLM adds only its tiny MLP to the dedicated form's FLOPs.
    ded = count_flops(create_model("wrn-16-1", Conditioning.dedicated(1.0)), (3, 32, 32))
    assert ded < n < 1.02 * ded


def test_oat_models_lists_one_model_a_line(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    header, rows = lines[0], lines[1:]
    assert header.startswith("#") and "gflops" in header
    assert [r.split()[0] for r in rows] == list_models()
    by_name = {r.split()[0]: r.split() for r in rows}
    assert by_name["resnet34"][1] == "21.28M" and by_name["resnet34"][2] == "33.36M"
    assert float(by_name["resnet18"][3]) == pytest.approx(1.11, abs=0.01)
    assert by_name["small-cnn"][4] == "1x28x28" and by_name["resnet18"][4] == "3x32x32"
