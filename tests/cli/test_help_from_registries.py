"""The CLI's help lists and defaults are read from the registries and dataclasses, never restated."""

from __future__ import annotations

import argparse

import pytest

from oat.attacks import registry as attacks
from oat.cli.main import build_parser
from oat.conditioning import ENCODINGS, PAPER_LAMS, list_encodings
from oat.data import DATASETS, list_datasets
from oat.evaluate.plan import EvalPlan
from oat.models import registry as models
from oat.pipeline import AFTER_TRAINING


def _actions(command: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {a.dest: a for a in sub._actions}


def test_train_help_lists_the_registries():
    act = _actions("train")
    assert ", ".join(list_datasets()) in act["data"].help
    assert ", ".join(models.list_models()) in act["model"].help
    assert ", ".join(list_encodings()) in act["encoding"].help
    assert ", ".join(attacks.list_attacks()) in act["eval_attacks"].help
    assert " ".join(f"{v:g}" for v in PAPER_LAMS) in act["lams"].help
    assert f"default {AFTER_TRAINING.split}" in act["eval_split"].help


def test_evaluate_defaults_are_the_plan_defaults():
    act, plan = _actions("evaluate"), EvalPlan()
    assert ", ".join(attacks.list_attacks()) in act["attacks"].help
    for name in ("split", "norm", "batch_size", "device", "seed", "check_subset"):
        assert act[name].default == getattr(plan, name), name
    assert tuple(act["attacks"].default) == plan.attacks


def test_a_new_registry_entry_shows_up_in_the_help(monkeypatch):
    monkeypatch.setitem(models.MODELS, "zz-net", models.MODELS["small-cnn"])
    monkeypatch.setitem(attacks.ATTACKS, "zz-attack", attacks.ATTACKS["fgsm"])
    monkeypatch.setitem(ENCODINGS, "zz-encoding", ENCODINGS["one-hot"])
    monkeypatch.setitem(DATASETS, "zz-data", next(iter(DATASETS.values())))
    train, evaluate = _actions("train"), _actions("evaluate")
    assert "zz-net" in train["model"].help and "zz-encoding" in train["encoding"].help
    assert "zz-data" in train["data"].help and "zz-attack" in evaluate["attacks"].help


@pytest.mark.parametrize("argv, field, value", [
    (["--eval-split", "test"], "split", "test"),
    (["eval_attacks=[fgsm, pgd20]"], "attacks", ("fgsm", "pgd20")),
    (["--eval-subset", "7"], "subset", 7),
])
def test_train_flags_set_the_plan_after_training(argv, field, value):
    from oat.cli.train import configs_from_args

    args = build_parser().parse_args(["train", *argv])
    _, plan = configs_from_args(args)
    assert getattr(plan, field) == value
