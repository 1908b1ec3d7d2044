"""torchrun + DDP on the CPU (gloo, 2 processes): ranks in sync after every step, disjoint
covering shards, the λ = 0 share of the global batch, accuracy of a 2-process run against a
1-process one, its checkpoint in a 1-process evaluation, and a killed rank ending the job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from oat.cli.main import main
from oat.conditioning import PAPER_LAMS, Conditioning
from oat.data.arrays import ArrayDataset
from oat.data.device_loader import DeviceLoader
from oat.errors import ConfigError
from oat.models import create_model
from oat.train import distributed as ddp
from oat.train.sampling import sample_lams, zero_share

ARGS = ["--data", "digits", "--batch-size", "64", "--no-eval", "--no-progress", "attack_steps=2"]


def torchrun(run: Path, *extra: str, env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "oat",
           "train", "--out", str(run), *ARGS, *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _failure_lines(out: str) -> str:
    """What a failed torchrun printed that names the cause (a rank's own error, an abort), then its tail:
    torchrun's summary alone only says which rank died."""
    keys = ("error", "terminate", "abort", "exception", "what()", "traceback", "nonfinite", "sync")
    causes = [ln for ln in out.splitlines() if any(k in ln.lower() for k in keys) and "elastic" not in ln]
    return "\n".join(causes[:40]) + "\n---\n" + out[-1500:]


# --------------------------------------------------------------------------- in-process
def test_shards_disjoint_and_covering():
    ds = ArrayDataset(torch.zeros(103, 1, 2, 2, dtype=torch.uint8), torch.zeros(103, dtype=torch.int64), 10)
    for epoch in (0, 1):
        seen = []
        for rank in range(2):
            loader = DeviceLoader(ds, 8, rank=rank, world_size=2, drop_last=True, seed=3)
            loader.set_epoch(epoch)
            seen.append(torch.cat(loader.shard()).tolist())
        assert len(seen[0]) == len(seen[1]) == 6 * 8  # same number of steps on every rank
        assert not set(seen[0]) & set(seen[1])
        assert len(set(seen[0]) | set(seen[1])) == 103 // 16 * 16  # all but the dropped partial batch


@pytest.mark.parametrize("batch,world", [(128, 2), (64, 2), (96, 4), (100, 2)])
def test_zero_share_of_the_global_batch(batch, world):
    k = len(PAPER_LAMS)
    gens = [torch.Generator().manual_seed(r) for r in range(world)]
    zeros = sum(int((sample_lams(batch // world, PAPER_LAMS, g)[0] == 0).sum()) for g in gens)
    assert zero_share(batch, k) <= zeros <= zero_share(batch, k) + world - 1  # the documented bound
    if batch % (world * k) == 0 or (batch, world) == (128, 2):
        assert zeros == zero_share(batch, k)  # exact, e.g. 22 of 128 on 2 ranks


def test_global_batch_must_split_evenly():
    assert ddp.local_batch_size(128, 2) == 64
    with pytest.raises(ConfigError, match="divisible"):
        ddp.local_batch_size(127, 2)


def test_unreachable_bn_branch_is_frozen():
    model = create_model("small-cnn", Conditioning(lams=(0.5, 1.0)), in_channels=1)
    ddp.freeze_unreachable_bn(model)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(".0." in n for n in frozen)  # only the clean BN of each pair


# --------------------------------------------------------------------------- 2 processes
def mean_rows(run: Path) -> tuple[float, float]:
    rows = [r for r in json.loads((run / "results.json").read_text())["rows"] if r["attack"] == "pgd20"]
    return sum(r["sa"] for r in rows) / len(rows), sum(r["ra"] for r in rows) / len(rows)


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    proc = torchrun(two, "--epochs", "5", env_extra={"OAT_CHECK_SYNC": "1"})
    torch.set_num_threads(1)
    assert main(["train", "--out", str(one), "--epochs", "5", *ARGS]) == 0  # meanwhile, 1 process
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, _failure_lines(out)
    meta = json.loads((two / "config.json").read_text())
    assert meta["world_size"] == 2 and meta["distributed"]["batch_per_rank"] == 32
    log = (two / "log.jsonl").read_text().splitlines()
    assert len(log) == 5  # rank 0 alone writes
    steps = json.loads(log[-1]) and 5 * ((1437 - 180) // 64)
    checks = (two / "sync-check.log").read_text().splitlines()
    assert len(checks) == steps  # every step: all ranks' parameter digests equal (else the run fails)
    for run in (one, two):  # the 2-process checkpoint loads in a 1-process evaluation
        assert main(["evaluate", str(run), "--no-progress", "--attacks", "pgd20"]) == 0
    (sa1, ra1), (sa2, ra2) = mean_rows(one), mean_rows(two)
    print(f"1 process: SA {sa1:.4f} RA {ra1:.4f}; 2 processes: SA {sa2:.4f} RA {ra2:.4f}")
    assert sa2 >= sa1 - 0.03 and ra2 >= ra1 - 0.03


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.slow
def test_killed_rank_ends_the_job(tmp_path):
    run, timeout = tmp_path / "run", 30
    proc = torchrun(run, "--epochs", "50", "--dist-timeout", str(timeout))
    t0 = time.monotonic()
    while not ((run / "log.jsonl").exists() and len(children(proc.pid)) == 2):
        assert proc.poll() is None and time.monotonic() - t0 < 300, proc.stdout.read()[-2000:]
        time.sleep(0.05)
    victim = max(children(proc.pid))
    os.kill(victim, signal.SIGKILL)
    t_kill = time.monotonic()
    out, _ = proc.communicate(timeout=timeout + 60)
    assert proc.returncode != 0
    assert time.monotonic() - t_kill < timeout + 60
    assert "oat train" in out or "exitcode" in out or "Signal 9" in out, out[-2000:]
