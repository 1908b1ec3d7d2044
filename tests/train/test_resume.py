"""Resume continues the same run: stopped after epoch 1 and resumed == uninterrupted, bit for bit."""

import json

import pytest
import torch

from oat.checkpoint import load_model, read_tensors, resolve_checkpoint
from oat.cli.main import main
from oat.train import runner
from oat.train.config import TrainConfig

CFG = dict(data="digits", model="small-cnn", model_kwargs={"base": 8}, objective="oat", eps=0.3, epochs=2,
           batch_size=128, attack_steps=2, seed=3, deterministic=True, device="cpu", amp="off",
           keep_checkpoints=3)


class Stop(Exception):
    pass


def _train(out, **kw):
    return runner.train(TrainConfig.from_dict(CFG), out, progress=False, log=lambda *a: None, **kw)


def _as_written_by_an_earlier_version(run):
    """Add the keys earlier versions saved: an unused ``lam`` beside ``lams``, and ``eval_*``."""
    legacy = {"lam": 1.0, "eval_attacks": ["pgd20"], "eval_split": "val", "eval_subset": None}
    for f in [run / "config.json", *run.glob("checkpoints/epoch-*/state.json")]:
        doc = json.loads(f.read_text())
        doc["config"] = {**doc["config"], **legacy}
        f.write_text(json.dumps(doc))


@pytest.mark.parametrize("legacy", [False, True])
def test_resume_after_an_interruption_gives_the_same_weights(tmp_path, monkeypatch, legacy):
    straight = _train(tmp_path / "a")

    real_save = runner.save_checkpoint

    def save_then_die(root, name, *a, **k):
        real_save(root, name, *a, **k)
        if name == "epoch-0001":
            raise Stop  # the process dies right after the first checkpoint

    monkeypatch.setattr(runner, "save_checkpoint", save_then_die)
    with pytest.raises(Stop):
        _train(tmp_path / "b")
    monkeypatch.undo()
    assert resolve_checkpoint(tmp_path / "b").name == "epoch-0001"
    if legacy:  # a run folder of an earlier version resumes, and evaluates, the same
        _as_written_by_an_earlier_version(tmp_path / "b")
    # Continue through the command line, as a user would.
    assert main(["train", "--out", str(tmp_path / "b"), "--resume", "--no-eval", "--no-progress"]) == 0

    a = read_tensors(resolve_checkpoint(straight) / "model.safetensors")
    b = read_tensors(resolve_checkpoint(tmp_path / "b") / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    oa = read_tensors(resolve_checkpoint(straight) / "optimizer.safetensors")
    ob = read_tensors(resolve_checkpoint(tmp_path / "b") / "optimizer.safetensors")
    assert all(torch.equal(oa[k], ob[k]) for k in oa)
    # The resumed run went on from epoch 1 (one log line per epoch, not a restart).
    logs = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logs] == [1, 2]
    straight_logs = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in logs] == [r["loss"] for r in straight_logs]
    state = load_model(tmp_path / "b").checkpoint_state
    assert state["epoch"] == 2 and state["finished"]
    if legacy:
        from oat.evaluate.api import evaluate_run

        rows = evaluate_run(tmp_path / "b", subset=16, checks=False, report=False, log=lambda *_: None)
        assert {r["lam"] for r in rows} == set(load_model(tmp_path / "b").spec.lams)
    # Not vacuous: the second epoch moved the weights.
    first = read_tensors(straight / "checkpoints" / "epoch-0001" / "model.safetensors")
    assert not torch.equal(first["fc.weight"], a["fc.weight"])

