"""The Python API a user scripts against: build, train, call, bind, save, load, evaluate, report."""

import json

import pytest
import torch
from torch import nn

import oat
from oat.errors import LamError

CFG = dict(data="digits", model="small-cnn", model_kwargs={"base": 8}, epochs=1, attack_steps=1, eps=0.3,
           device="cpu", amp="off")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return oat.fit(CFG, tmp_path_factory.mktemp("api") / "run", progress=False, evaluate=False,
                     log=lambda *a: None)


def test_public_names():
    for name in ("load", "fit", "evaluate_run", "report", "run_demo", "create_model", "list_models", "Conditioning",
                 "TrainConfig", "PAPER_LAMS"):
        assert hasattr(oat, name), name
    assert oat.PAPER_LAMS == (0.0, 0.1, 0.2, 0.3, 0.4, 1.0)


def test_build_and_call_a_conditioned_model():
    model = oat.create_model("small-cnn", oat.Conditioning(), in_channels=1).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        a = model(x, 0.2)
        b = model(x, torch.tensor([0.2, 0.2, 0.2, 0.2]))
        c = model(x, torch.tensor([0.0, 0.2, 1.0, 0.4]))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(c[1], a[1])
    assert c.shape == (4, 10)


def test_load_returns_the_trained_model_in_eval_mode(run):
    model = oat.load(run)
    assert isinstance(model, oat.models.ConditionedNet) and not model.training
    assert model.spec.lams == oat.PAPER_LAMS
    clf = model.at(1.0)
    assert isinstance(clf, nn.Module)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(clf(x), model(x, 1.0))
    with pytest.raises(LamError):
        model.at(0.5)


def test_train_accepts_a_config_object_and_a_dict(tmp_path):
    cfg = oat.TrainConfig.from_dict({**CFG, "objective": "pgdat", "lam": 0.4})
    out = oat.fit(cfg, tmp_path / "ded", progress=False, evaluate=False, log=lambda *a: None)
    model = oat.load(out)
    assert not model.spec.film and model.spec.lams == (0.4,)
    assert model.at(0.4)(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(LamError, match="dedicated"):
        model.at(1.0)


def test_evaluate_and_report(run):
    rows = oat.evaluate_run(run, split="test", lams=[0.0, 1.0], subset=20, checks=False, log=lambda *a: None)
    assert {(r["lam"], r["attack"]) for r in rows} == {(0.0, "pgd20"), (1.0, "pgd20")}
    doc = json.loads((run / "results.json").read_text())
    assert len([r for r in doc["rows"] if r["split"] == "test"]) == 2
    report = oat.report([run])
    assert report.exists() and report.name == "report.md"


def test_api_functions_and_subpackages_coexist():
    import importlib

    for name in ("oat.train.runner", "oat.evaluate.api", "oat.demo"):
        importlib.import_module(name)
    assert callable(oat.fit) and callable(oat.evaluate_run) and callable(oat.run_demo)
    import oat.train.objectives as objectives  # a plain submodule import works too

    assert objectives.OAT is not None
