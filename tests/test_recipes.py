"""YAML recipes: the paper's runs, each headed by the command that runs it; overrides on top."""

import json

import pytest
import yaml

from oat.cli.main import build_parser, main
from oat.cli.train import config_from_args
from oat.errors import ConfigError
from oat.recipes import _recipe_files, list_recipes, load_recipe
from oat.train.config import TrainConfig

PAPER = ["cifar10-resnet34-oat", "cifar10-resnet34-pgdat", "svhn-wrn16-8-oat", "stl10-wrn40-2-oat"]
ALL = PAPER + ["fashion-mnist-small-oat", "digits-small-oat"]


def test_every_recipe_is_bundled_and_listed():
    assert set(ALL) <= set(_recipe_files())
    assert [n for n, _ in list_recipes()] == sorted(_recipe_files())


@pytest.mark.parametrize("name", ALL)
def test_recipe_is_headed_by_its_command_and_valid(name):
    text = _recipe_files()[name].read_text()
    first = text.splitlines()[0]
    assert first.startswith(f"# oat train --recipe {name}")
    if not name.startswith("digits"):
        assert "--data-dir PATH" in first
    cfg = TrainConfig.from_dict(yaml.safe_load(text))
    assert name.startswith(cfg.data + "-")
    # The header command parses as a real `oat train` command line.
    argv = first.lstrip("# ").split()[1:]
    args = build_parser().parse_args(argv)
    assert args.recipe == name and config_from_args(args).model == cfg.model


@pytest.mark.parametrize("name", PAPER)
def test_paper_settings(name):
    cfg = TrainConfig.from_dict(load_recipe(name))
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.epochs) == (0.1, 0.9, 5e-4, 200)
    assert cfg.attack_steps == 7 and cfg.attack_norm == "linf" and cfg.eps == pytest.approx(8 / 255)
    assert cfg.batch_size == (256 if name.endswith("pgdat") else 128)
    model = {"cifar10": "resnet34", "svhn": "wrn-16-8", "stl10": "wrn-40-2"}[cfg.data]
    assert cfg.model == model
    if cfg.objective == "oat":
        assert cfg.lams == [0.0, 0.1, 0.2, 0.3, 0.4, 1.0] and cfg.encoding == "random-orthogonal"
        assert cfg.enc_dim == 128 and cfg.dual_bn
        # Faithful whatever the library's defaults become: the authors' FiLM and λ draw, pinned.
        assert "film_form: reference" in _recipe_files()[name].read_text()
        assert (cfg.film_form, cfg.zero_share, cfg.lam_weights, cfg.init_from) == ("reference", None, None, None)
    else:
        assert cfg.objective == "pgdat"
    if cfg.data in ("svhn", "stl10"):
        assert cfg.model_kwargs == {"dropout": 0.3}  # both wide ResNets of the authors' code
    # Where our defaults differ from the authors' code, the paper recipes pin the authors'.
    assert (cfg.scalar_draw, cfg.train_attack_precision, cfg.drop_last) == ("discrete", "fp32", True)
    assert cfg.pgdat_clean_pass_at_1 == (cfg.objective == "pgdat")


def _cfg(argv):
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_override_precedence_recipe_flags_key_value():
    assert _cfg(["--recipe", "digits-small-oat"]).epochs == 30
    assert _cfg(["--recipe", "digits-small-oat", "--epochs", "5"]).epochs == 5
    assert _cfg(["--recipe", "digits-small-oat", "--epochs", "5", "epochs=7"]).epochs == 7
    cfg = _cfg(["--recipe", "cifar10-resnet34-pgdat", "--lam", "0.2", "eps=4/255", "model-kwargs={dropout: 0.1}"])
    assert cfg.lams == [0.2] and cfg.eps == pytest.approx(4 / 255) and cfg.model_kwargs == {"dropout": 0.1}
    assert cfg.batch_size == 256  # untouched recipe keys stay
    assert _cfg(["--recipe", "digits-small-oat", "--lams", "0", "1"]).lams == [0.0, 1.0]


@pytest.mark.parametrize("argv, match", [
    (["--recipe", "missing"], "unknown recipe 'missing'"),
    (["--recipe", "digits-small-oat", "bogus=1"], "unknown config key"),
    (["--recipe", "digits-small-oat", "epochs=abc"], "expects int"),
    (["--recipe", "digits-small-oat", "epochs=2.5"], "expects int"),
    (["--recipe", "digits-small-oat", "lams=0.5"], "expects list"),
    (["epochs"], "key=value"),
])
def test_bad_recipe_or_override_is_one_line(argv, match, capsys, tmp_path):
    with pytest.raises(ConfigError, match=match):
        _cfg(argv)
    assert main(["train", *argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("oat: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_recipe_from_a_yaml_path_and_bad_yaml(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("# oat train --recipe mine.yaml\nepochs: 3\nmodel: wrn-16-1\n")
    assert _cfg(["--recipe", str(f)]).model == "wrn-16-1"
    f.write_text("epochs: [3\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(str(f))
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_recipe(str(f))


def test_oat_recipes_lists_and_shows(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == sorted(_recipe_files())
    assert all("oat train --recipe" in ln for ln in lines)
    assert main(["recipes", "--show", "svhn-wrn16-8-oat"]) == 0
    assert "wrn-16-8" in capsys.readouterr().out
    assert main(["recipes", "--show", "nope"]) == 2


def test_recipe_run_writes_the_resolved_config(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--recipe", "digits-small-oat", "--out", str(out), "--epochs", "1", "--no-eval",
            "--no-progress", "--device", "cpu", "attack_steps=1", "model_kwargs={base: 8}"]
    assert main(argv) == 0
    cfg = json.loads((out / "config.json").read_text())["config"]
    recipe = load_recipe("digits-small-oat")
    assert cfg["epochs"] == 1 and cfg["attack_steps"] == 1 and cfg["model_kwargs"] == {"base": 8}
    assert cfg["eps"] == recipe["eps"] == 0.3 and cfg["batch_size"] == recipe["batch_size"] == 64
    assert cfg["amp"] in ("bf16", "off")  # amp=auto is resolved (and recorded) before training
    assert TrainConfig.from_dict(cfg) == TrainConfig.from_dict({**recipe, **{k: cfg[k] for k in (
        "epochs", "attack_steps", "model_kwargs", "device", "amp")}})
