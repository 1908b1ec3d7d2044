"""``--deterministic`` is bit-reproducible on the CPU; run folders record their provenance;
a non-finite loss stops (naming the step, the last good checkpoint kept) or is skipped."""

from __future__ import annotations

import json

import torch
from run_weights import final_weights as weights
from run_weights import on_objective_call

from oat.checkpoint import resolve_checkpoint
from oat.cli.main import main

ARGS = ["--data", "digits", "--epochs", "2", "--batch-size", "64", "--no-eval", "--no-progress",
        "attack_steps=1", "val_size=1000"]



def test_deterministic_runs_are_bit_identical(tmp_path):
    for name in ("a", "b"):
        assert main(["train", "--out", str(tmp_path / name), "--deterministic", "--seed", "3", *ARGS]) == 0
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    meta = json.loads((tmp_path / "a" / "config.json").read_text())
    for key in ("config", "oat_version", "git_commit", "torch_version", "device", "world_size"):
        assert key in meta
    assert meta["config"]["deterministic"] is True and meta["config"]["seed"] == 3
    assert meta["torch_version"] == torch.__version__ and meta["world_size"] == 1


def nan_at(call: int, monkeypatch):
    on_objective_call(monkeypatch, call, after=lambda loss: loss * float("nan"))


def test_nonfinite_loss_stops_naming_the_step(tmp_path, monkeypatch, capsys):
    nan_at(10, monkeypatch)  # epoch 2, step 10 (7 steps an epoch)
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite" in err[0] and "step 10" in err[0] and "epoch 2" in err[0]
    assert resolve_checkpoint(run).name == "epoch-0001"  # the last good state is kept
    assert all(torch.isfinite(v.float()).all() for v in weights(run).values())


def test_nonfinite_skip(tmp_path, monkeypatch):
    nan_at(3, monkeypatch)
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *ARGS, "nonfinite=skip"]) == 0
    log = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert [e["skipped_steps"] for e in log] == [1, 0]
    assert all(torch.isfinite(v.float()).all() for v in weights(run).values())
