"""Data-parallel scaling: training images/s with N processes (torchrun + DDP) vs 1.

Scaling efficiency = images/s with N processes ÷ (N × images/s with 1 process). On the CPU
each process gets one thread (torchrun's default), so N processes use N cores; a 1-process
run with N threads is shown beside it for reference. On one GPU only the 1-process figure
exists (DDP needs one GPU per process); on a multi-GPU machine run with ``--procs 1 2 4 8``.

    python benchmarks/bench_scaling.py                 # digits, small-cnn, OAT, 2 CPU processes
    python benchmarks/bench_scaling.py --epochs 4 --batch-size 128 --procs 1 2

Writes benchmarks/results/bench_scaling.json and prints a table. The machine may be shared:
the load average at the start and end is recorded with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import write_result  # noqa: E402


def run(procs: int, threads: int, args, folder: Path) -> dict:
    out = folder / f"p{procs}-t{threads}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    train = ["train", "--out", str(out), "--data", args.data, "--model", args.model, "--epochs", str(args.epochs),
             "--batch-size", str(args.batch_size), "--no-eval", "--no-progress", f"attack_steps={args.steps}",
             f"device={args.device}"]
    if procs == 1:
        cmd = [sys.executable, "-m", "oat", *train]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               "-m", "oat", *train]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    log = [json.loads(ln) for ln in (out / "log.jsonl").read_text().splitlines()]
    ips = [e["img_per_s"] for e in log[1:]] or [log[0]["img_per_s"]]  # the first epoch warms up
    return {"procs": procs, "threads_per_proc": threads, "img_per_s": round(statistics.median(ips), 1),
            "epochs_timed": len(ips), "final_train_sa": log[-1].get("train_sa"),
            "final_train_ra": log[-1].get("train_ra")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=7, help="PGD steps of the training attack")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    load0 = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for procs in args.procs:
            rows.append(run(procs, 1, args, Path(tmp)))
        if args.device == "cpu" and max(args.procs) > 1:
            rows.append(run(1, max(args.procs), args, Path(tmp)))
    base = next(r["img_per_s"] for r in rows if r["procs"] == 1 and r["threads_per_proc"] == 1)
    for r in rows:
        r["scaling_efficiency"] = round(r["img_per_s"] / (r["procs"] * base), 3)
    doc = {"settings": {**vars(args)}, "load_average_start": load0, "load_average_end": os.getloadavg(),
           "rows": rows,
           "note": "global batch fixed (per-rank batch = B / procs); images/s are global, from the run's "
                   "log.jsonl (median over epochs after the first). The machine was shared with other "
                   "jobs: see the load averages. One GPU can only show the 1-process figure."}
    write_result("bench_scaling", doc)  # adds machine, versions (git commit), date and command
    print(f"{'procs':>5} {'threads':>7} {'img/s':>8} {'efficiency':>10}")
    for r in rows:
        print(f"{r['procs']:>5} {r['threads_per_proc']:>7} {r['img_per_s']:>8.1f} {r['scaling_efficiency']:>10.3f}")
    print(f"load average start {load0}, end {doc['load_average_end']}")


if __name__ == "__main__":
    main()
