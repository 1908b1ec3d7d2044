"""Settings beyond the paper: the identity FiLM form, the λ draw, and warm start."""

from __future__ import annotations

import pytest
import torch

import oat
from oat.conditioning import PAPER_LAMS, Conditioning
from oat.errors import ConfigError
from oat.nn import FiLM
from oat.train.sampling import LamSampling, sample_lams
from oat.train.warm_start import init_from_run

TRAIN = dict(data="digits", val_size=300, epochs=1, batch_size=64, attack_steps=1, eps=0.1, seed=0)


def _dead_share(form: str) -> float:
    """Share of FiLM channels whose scale is ≤ 0.005 in magnitude at every λ, at initialisation."""
    torch.manual_seed(0)
    model = oat.create_model("small-cnn", Conditioning(film_form=form), in_channels=1, num_classes=10, base=16)
    dead, total = 0, 0
    for m in model.modules():
        if isinstance(m, FiLM):
            scale, _ = m.params(model.lam_table, m.channels)
            dead += int((scale.abs() <= 0.005).all(0).sum())
            total += m.channels
    return dead / total


def test_identity_film_starts_no_channel_dead_where_the_reference_does():
    assert _dead_share("reference") > 0.2  # the measured cause: channels switched off at init
    assert _dead_share("identity") == 0.0


def test_identity_film_is_the_identity_at_init(batch):
    x, _ = batch
    torch.manual_seed(0)
    film = FiLM(8, 16, "identity")
    z = torch.randn(3, 8, 4, 4)
    enc = torch.randn(1, 16)
    from oat.nn.context import Ctx

    ctx = Ctx(enc=enc, inverse=None, route="adv", width=1.0, width_idx=0)
    assert torch.equal(film(z, ctx), z)


def test_unknown_film_form_is_refused():
    with pytest.raises(ConfigError, match="film_form"):
        oat.TrainConfig(film_form="magic")
    with pytest.raises(ConfigError, match="FiLM form"):
        Conditioning(film_form="magic")


def test_old_specs_load_as_the_reference_form():
    d = Conditioning().to_dict()
    d.pop("film_form")
    assert Conditioning.from_dict(d).film_form == "reference"


def test_zero_share_and_weights_are_honoured():
    g = torch.Generator().manual_seed(0)
    sampling = LamSampling(zero_share=0.5, weights=(0, 0, 0, 1, 3))
    draws = [sample_lams(100, PAPER_LAMS, g, sampling=sampling) for _ in range(50)]
    assert all(n0 == 50 and bool((lam[:50] == 0).all()) and bool((lam[50:] > 0).all()) for lam, n0 in draws)
    rest = torch.cat([lam[50:] for lam, _ in draws])
    assert {round(v, 6) for v in rest.tolist()} == {0.4, 1.0}
    assert 0.70 < float((rest == 1.0).float().mean()) < 0.80  # weight 3 of 4


def test_default_sampling_is_the_reference_draw():
    a = sample_lams(128, PAPER_LAMS, torch.Generator().manual_seed(3))
    b = sample_lams(128, PAPER_LAMS, torch.Generator().manual_seed(3), sampling=LamSampling())
    assert a[1] == b[1] == 22 and torch.equal(a[0], b[0])


@pytest.mark.parametrize("overrides, match", [
    ({"lam_weights": [1, 1]}, "5 finite non-negative"),
    ({"lam_weights": [0, 0, 0, 0, 0]}, "not all zero"),
    ({"zero_share": 1.5}, r"\[0, 1\]"),
    ({"objective": "pgdat", "zero_share": 0.3}, "pgdat"),
    ({"encoding": "continuous", "lam_weights": [1, 1, 1, 1, 1]}, "continuous"),
])
def test_bad_sampling_settings_are_refused(overrides, match):
    with pytest.raises(ConfigError, match=match):
        oat.TrainConfig.from_dict(overrides)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("warm") / "clean"
    oat.fit({**TRAIN, "objective": "pgdat", "lam": 0.0}, out, progress=False, evaluate=False, log=lambda *_: None)
    return out


def test_warm_started_identity_oat_computes_the_source_model_at_every_lam(clean_run, digits):
    x = digits[2][:32].view(-1, 1, 8, 8)
    src = oat.load(clean_run)
    model = oat.create_model("small-cnn", Conditioning(film_form="identity"), in_channels=1, num_classes=10)
    copied, fresh = init_from_run(model, clean_run)
    assert copied > 0 and fresh > 0
    model.eval()
    want = src(x, 0.0)
    for lam in PAPER_LAMS:
        torch.testing.assert_close(model(x, lam), want)


def test_warm_start_refuses_another_architecture(clean_run):
    other = oat.create_model("small-cnn", Conditioning(), in_channels=1, num_classes=10, base=8)
    with pytest.raises(ConfigError, match="does not fit"):
        init_from_run(other, clean_run)


def test_every_new_setting_trains_on_digits(clean_run, tmp_path):
    cfg = {**TRAIN, "film_form": "identity", "zero_share": 0.3, "lam_weights": [1, 1, 1, 1, 4],
           "init_from": str(clean_run)}
    run = oat.fit(cfg, tmp_path / "run", progress=False, log=lambda *_: None)
    model = oat.load(run)
    assert model.spec.film_form == "identity"
    rows = __import__("json").loads((run / "results.json").read_text())["rows"]
    assert {round(r["lam"], 6) for r in rows} == {round(v, 6) for v in PAPER_LAMS}
    assert all(0.0 <= r["ra"] <= r["sa"] <= 1.0 for r in rows)


def test_film_off_trains_oat_without_film_layers(tmp_path):
    # The ablation (and the one-model benchmark's floor): OAT's λ draw and loss, no FiLM.
    run = oat.fit({**TRAIN, "film": False, "dual_bn": False}, tmp_path / "r", progress=False, evaluate=False,
                  log=lambda *_: None)
    model = oat.load(run)
    assert not model.spec.film and not any(isinstance(m, FiLM) for m in model.modules())
    assert set(model.spec.lams) == set(PAPER_LAMS)


def test_film_lr_scale_puts_film_in_a_group_with_a_scaled_lr(tmp_path):
    from oat.checkpoint import read_state, resolve_checkpoint

    run = oat.fit({**TRAIN, "film_form": "identity", "film_lr_scale": 10.0, "epochs": 1}, tmp_path / "r",
                  progress=False, evaluate=False, log=lambda *_: None)
    groups = read_state(resolve_checkpoint(run))["optimizer"]["param_groups"]
    assert len(groups) == 2 and groups[1]["lr_scale"] == 10.0
    assert groups[0]["lr"] > 0 and groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])
    with pytest.raises(ConfigError, match="film_lr_scale"):
        oat.TrainConfig(film_lr_scale=0.0)
