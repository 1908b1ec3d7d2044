"""A tiny trained OAT-form run folder (λ ∈ {0, 1}, small-cnn on digits) for evaluation tests.

Built by hand (clean training for a few epochs, ~2 s) rather than through ``oat train``,
so each test copies a ready run folder instead of training.
"""

import json
import shutil

import pytest
import torch

from clean_training import train_clean
from oat.checkpoint import save_checkpoint
from oat.conditioning import Conditioning
from oat.data import load_data
from oat.models import create_model

EPS = 0.1


@pytest.fixture(scope="session")
def run_template(tmp_path_factory):
    data = load_data("digits", seed=0)
    x, y = data.train.images.float() / 255.0, data.train.labels
    torch.manual_seed(0)
    model = create_model("small-cnn", Conditioning(lams=(0.0, 1.0), dim=16), in_channels=1, num_classes=10, base=16)
    # Alternating λ per example: both BN/FiLM routes learn.
    train_clean(model, x, y, lambda n: (torch.arange(n) % 2).float())
    run = tmp_path_factory.mktemp("run") / "run"
    cfg = {"data": "digits", "model": "small-cnn", "objective": "oat", "seed": 0, "lams": [0.0, 1.0]}
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": cfg, "eps": EPS}))
    save_checkpoint(
        run / "checkpoints", "epoch-0004", model, state={"epoch": 4, "finished": True, "config": cfg, "eps": EPS}
    )
    return run


@pytest.fixture
def eval_run(run_template, tmp_path):
    """A fresh copy of the trained run folder."""
    dst = tmp_path / "run"
    shutil.copytree(run_template, dst)
    return dst
