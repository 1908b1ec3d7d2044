"""SIGKILL at random moments (including while a checkpoint is half written), resume each
time: the final weights equal an uninterrupted run's (``--deterministic``, CPU)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from run_weights import final_weights

from oat.checkpoint import load_model, resolve_checkpoint
from oat.cli.main import main

ARGS = ["--data", "digits", "--epochs", "4", "--batch-size", "64", "--deterministic", "--no-eval",
        "--no-progress", "attack_steps=1", "val_size=1000"]



def start(run: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OAT_CKPT_WRITE_DELAY": "0.4"}
    return subprocess.Popen([sys.executable, "-m", "oat", "train", "--out", str(run), *ARGS, *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (polled every 10 ms)."""
    t0 = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"training ended before the kill: {proc.stderr.read().decode()[-500:]}"
        assert time.monotonic() - t0 < timeout, "the moment to kill never came"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def writing(run: Path, prefix: str):
    """True while a checkpoint whose name starts with ``prefix`` is being written (temporary folder)."""
    return lambda: any(p.name.startswith(f".{prefix}") for p in (run / "checkpoints").glob(".*.tmp"))


def latest_is(run: Path, name: str):
    f = run / "checkpoints" / "latest"
    return lambda: f.exists() and f.read_text().strip() == name


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_matches_uninterrupted(tmp_path):
    ref = tmp_path / "ref"
    assert main(["train", "--out", str(ref), *ARGS]) == 0
    reference = final_weights(ref)
    torch.use_deterministic_algorithms(False)

    run, rng = tmp_path / "run", random.Random(8)
    # 1. killed while writing the very first checkpoint: nothing to resume from but config.json
    kill_when(start(run), writing(run, "epoch-0001"))
    assert not (run / "checkpoints" / "latest").exists()
    # 2. killed at a random moment after epoch 1 is saved (mid-epoch 2, or while saving it)
    proc, t = start(run, "--resume"), rng.uniform(0.0, 1.0)
    kill_when(proc, lambda: latest_is(run, "epoch-0001")() and time.sleep(t) is None)
    # 3. killed while epoch 3's checkpoint is half written: the previous one must survive intact
    proc = start(run, "--resume")
    kill_when(proc, writing(run, "epoch-0003"))
    good = resolve_checkpoint(run)
    assert good.name == "epoch-0002"
    load_model(run)  # readable and complete
    # 4. resume to the end in this process
    assert main(["train", "--out", str(run), "--resume", "--no-eval", "--no-progress"]) == 0
    got = final_weights(run)
    assert got.keys() == reference.keys()
    assert all(torch.equal(got[k], reference[k]) for k in got)
    assert len((run / "log.jsonl").read_text().splitlines()) == 4
