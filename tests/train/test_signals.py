"""SIGINT/SIGTERM during training: finish the step, save a mid-epoch checkpoint, exit 130/143,
and a resume from it ends with the same weights as an uninterrupted run (bit-exact, CPU)."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from run_weights import final_weights, on_objective_call

from oat.cli.main import main

ARGS = ["--data", "digits", "--epochs", "2", "--batch-size", "64", "--deterministic", "--no-eval",
        "--no-progress", "attack_steps=1", "val_size=1000", "keep_checkpoints=3"]



@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("sig") / "ref"
    assert main(["train", "--out", str(run), *ARGS]) == 0
    torch.use_deterministic_algorithms(False)
    return final_weights(run)


def signalling_objective(signum: int, at_call: int, monkeypatch):
    """Make the objective send ``signum`` to this process during its ``at_call``-th call."""
    return on_objective_call(monkeypatch, at_call, before=lambda: os.kill(os.getpid(), signum))


@pytest.mark.parametrize("signum,at_call,code", [(signal.SIGINT, 3, 130), (signal.SIGTERM, 10, 143)])
def test_signal_saves_and_resume_is_exact(tmp_path, monkeypatch, capsys, reference, signum, at_call, code):
    run = tmp_path / "run"
    calls = signalling_objective(signum, at_call, monkeypatch)
    assert main(["train", "--out", str(run), *ARGS]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"oat train --out {run} --resume" in err[0], err
    assert calls["n"] == at_call  # the step in flight finished; no further step ran
    latest = (run / "checkpoints" / "latest").read_text().strip()
    assert "-step-" in latest  # a mid-epoch safe point, not the previous epoch's checkpoint
    monkeypatch.undo()
    assert main(["train", "--out", str(run), "--resume", "--no-eval", "--no-progress"]) == 0
    got = final_weights(run)
    assert got.keys() == reference.keys()
    assert all(torch.equal(got[k], reference[k]) for k in got)
    lines = (run / "log.jsonl").read_text().splitlines()
    assert len(lines) == 2  # one line per epoch, none lost or doubled by the interruption


def test_default_handlers_restored(tmp_path):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert main(["train", "--out", str(tmp_path / "r"), *ARGS[:-3], "epochs=1", "attack_steps=0",
                 "val_size=1000"]) == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
