"""The training config: one λ field, refusals in one line, saved configs of earlier versions."""

from __future__ import annotations

import dataclasses

import pytest

from oat.conditioning import PAPER_LAMS, Conditioning
from oat.errors import ConfigError
from oat.train.config import TrainConfig


@pytest.mark.parametrize("kw, match", [
    (dict(objective="oat", lam=0.3), "lam is the one λ of a pgdat model"),
    (dict(objective="oats", lam=0.3), "lam is the one λ of a pgdat model"),
    (dict(objective="pgdat", lams=[0.1, 0.2]), "a pgdat model trains at one λ"),
    (dict(objective="pgdat", lam=0.1, lams=[0.1]), "give lam or lams, not both"),
    (dict(train_attack_precision="bf16"), "fp32 or amp"),
    (dict(scalar_draw="sometimes"), "continuous or discrete"),
])
def test_conflicting_or_wrong_lam_is_refused_in_one_line(kw, match):
    with pytest.raises(ConfigError, match=match) as e:
        TrainConfig(**kw)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_dict(kw)


def test_lam_is_lams_of_one():
    assert TrainConfig(objective="pgdat", lam=0.3).lams == [0.3]
    assert TrainConfig(objective="pgdat").lams == [1.0]
    assert TrainConfig().lams == list(PAPER_LAMS)
    assert "lam" not in TrainConfig(objective="pgdat", lam=0.3).to_dict()
    assert TrainConfig(objective="pgdat", lam=0.3).replace(lam=0.4).lams == [0.4]


def test_conditioning_defaults_are_read_from_the_spec():
    spec = {f.name: f.default for f in dataclasses.fields(Conditioning)}
    cfg = TrainConfig()
    assert (cfg.encoding, cfg.enc_dim, cfg.dual_bn, cfg.film, cfg.film_form) == (
        spec["encoding"], spec["dim"], spec["dual_bn"], spec["film"], spec["film_form"])
    assert tuple(cfg.widths) == spec["widths"] and tuple(cfg.lams) == spec["lams"]


def test_evaluation_keys_are_not_training_keys():
    with pytest.raises(ConfigError, match="evaluation plan"):
        TrainConfig.from_dict({"eval_split": "test"})
    with pytest.raises(ConfigError, match="unknown config key"):
        TrainConfig.from_dict({"epochz": 3})


def test_a_saved_config_of_an_earlier_version_translates():
    old = {**TrainConfig().to_dict(), "objective": "pgdat", "lam": 0.4, "eval_attacks": ["pgd20"],
           "eval_split": "val", "eval_subset": None}
    cfg = TrainConfig.from_saved(old)
    assert cfg.lams == [0.4] and cfg.objective == "pgdat"
    oat_old = {**TrainConfig().to_dict(), "lam": 1.0, "eval_split": "val"}
    assert TrainConfig.from_saved(oat_old).lams == list(PAPER_LAMS)
    with pytest.raises(ConfigError, match="unknown config key"):
        TrainConfig.from_saved({**old, "epochz": 1})


def test_scalar_draw():
    assert TrainConfig(encoding="scalar").continuous_draw
    assert not TrainConfig(encoding="scalar", scalar_draw="discrete").continuous_draw
    assert TrainConfig(encoding="continuous", scalar_draw="discrete").continuous_draw
    assert not TrainConfig().continuous_draw


def test_drop_last_drops_the_partial_batch(tmp_path):
    import math

    import oat
    from oat.checkpoint import read_state, resolve_checkpoint
    from oat.data import load_data

    n = len(load_data("digits", None, val_size=300, seed=0).train)
    cfg = dict(data="digits", val_size=300, model_kwargs={"base": 4}, epochs=1, batch_size=100, attack_steps=0,
               seed=0, device="cpu", amp="off")
    steps = {}
    for drop in (False, True):
        run = oat.fit({**cfg, "drop_last": drop}, tmp_path / str(drop), evaluate=False, progress=False,
                      log=lambda *_: None)
        steps[drop] = read_state(resolve_checkpoint(run))["step"]
    assert n % 100 and steps == {False: math.ceil(n / 100), True: n // 100}
