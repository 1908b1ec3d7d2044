"""The one-model saving: one OAT run against the dedicated PGD-AT runs it replaces.

Every run goes through ``oat.train.runner.train`` (the ``oat train`` path: data, model,
loop, checkpoints; evaluation off), with the same data, model, epochs, batch, ε and
seed; the dedicated runs are one per λ of the paper's set (0, 0.1, 0.2, 0.3, 0.4, 1).
Wall times are summed over the dedicated runs and divided by the OAT run's. The runs
interleave (OAT, λ=0, OAT, λ=0.1, ...) and the OAT time is the median of its repeats, so
a change in machine load hits both sides alike. Counting passes (forward = 1, a training
backward = 2, an attack step's input-only backward = 1): a dedicated image costs 3 at
λ = 0, 3 + 7·2 + 3 = 20 at 0 < λ < 1 and 17 at λ = 1, 100 over the six runs; an OAT image
costs 3 + (5/6)·17 ≈ 17.2 (the λ = 0 sixth is not attacked), so the ratio's limit is
≈ 5.8× for PGD-7. Each model is then evaluated at its λ (clean and PGD-20, validation split).

Passes are not seconds: a training pass (batch statistics, weight gradients) costs more than an
attack step's, and OAT makes 1 + 5/6 training passes per image where a dedicated λ = 1 run makes 1.
``--floor`` measures what that schedule itself allows: OAT's λ draw and loss with no FiLM and one
BN (``film=False, dual_bn=False``), interleaved with the others; total / floor is the saving
that a FiLM and dual BN costing nothing would reach on this machine. ``--ablate`` also times OAT
with FiLM and one BN (``dual_bn=False``) and with dual BN and no FiLM (``film=False``), so the
gap splits into its two parts; at a tiny batch (``--batch-size 6``) the arithmetic is negligible
and what is left of the gap is the per-step cost of the extra operations themselves.

    python benchmarks/bench_one_model.py                       # CPU: digits 8x8, small-cnn, 10 epochs
    python benchmarks/bench_one_model.py --device cuda --data cifar10 --model resnet18 --epochs 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import clean_accuracy, pgd_accuracy, portable, set_threads, table, write_result

from oat.checkpoint import load_model
from oat.conditioning import PAPER_LAMS
from oat.data import load_data
from oat.train.config import TrainConfig
from oat.train.runner import train


def timed_run(cfg: TrainConfig, out: Path) -> float:
    t0 = time.perf_counter()
    train(cfg, out, overwrite=True, progress=False, log=lambda *_: None)
    return time.perf_counter() - t0


def evaluate(run: Path, lam: float, data, eps: float, device) -> dict:
    m = load_model(run, device=device).eval().at(lam)
    return {"val_sa": clean_accuracy(m, data.val, device), "val_ra_pgd20": pgd_accuracy(m, data.val, device, eps)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--val-size", type=int, default=None)
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eps", type=float, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--amp", default="off", choices=("off", "bf16", "auto"),
                   help="training precision of every run (default fp32: auto may choose per run by a timing)")
    p.add_argument("--no-eval", dest="eval", action="store_false")
    p.add_argument("--floor", action="store_true",
                   help="also time OAT without FiLM and dual BN (the schedule's own limit)")
    p.add_argument("--ablate", action="store_true",
                   help="also time OAT with FiLM and one BN, and with dual BN and no FiLM")
    p.add_argument("--oat-runs", type=int, default=len(PAPER_LAMS), choices=range(1, len(PAPER_LAMS) + 1),
                   metavar="N", help="OAT (and --floor, --ablate) repeats, spread evenly between the dedicated runs "
                   "(default: one before each; fewer for long runs)")
    p.add_argument("--out", default="bench_one_model")
    args = p.parse_args()
    set_threads(args.threads)
    # The runs' checkpoints are scratch: removed when the benchmark ends, however it ends.
    with tempfile.TemporaryDirectory(prefix="oat-bench-one-model-") as tmp:
        measure(args, Path(tmp))


def measure(args: argparse.Namespace, tmp: Path) -> None:
    """Time (and with ``--eval`` evaluate) the runs in ``tmp``, then write the result."""
    device = torch.device(args.device)
    base = dict(data=args.data, data_dir=args.data_dir, val_size=args.val_size, model=args.model, epochs=args.epochs,
                batch_size=args.batch_size, eps=args.eps, device=args.device, seed=0, amp=args.amp)
    oat_cfg = TrainConfig.from_dict({**base, "objective": "oat", "lams": list(PAPER_LAMS)})
    variants = {}  # OAT without some of its parts: name -> (key, config), each timed after every OAT repeat
    if args.floor:
        variants["OAT without FiLM and dual BN"] = ("floor", oat_cfg.replace(film=False, dual_bn=False))
    if args.ablate:
        variants["OAT with FiLM, one BN"] = ("film_only", oat_cfg.replace(dual_bn=False))
        variants["OAT with dual BN, no FiLM"] = ("dual_bn_only", oat_cfg.replace(film=False))
    oat_secs, rows = [], []
    variant_secs = {name: [] for name in variants}
    n = len(PAPER_LAMS)
    repeat_before = {i * n // args.oat_runs for i in range(args.oat_runs)}
    for i, lam in enumerate(PAPER_LAMS):  # interleaved: OAT, (variants,) dedicated λ, OAT, (variants,) λ', ...
        if i in repeat_before:
            oat_secs.append(timed_run(oat_cfg, tmp / "oat"))
            for name, (key, cfg) in variants.items():
                variant_secs[name].append(timed_run(cfg, tmp / key))
        cfg = TrainConfig.from_dict({**base, "objective": "pgdat", "lam": lam})
        rows.append({"run": f"dedicated λ={lam:g}", "lam": lam, "seconds": timed_run(cfg, tmp / f"ded-{lam:g}")})
    oat_t = statistics.median(oat_secs)
    total = sum(r["seconds"] for r in rows)
    rows.append({"run": "sum of 6 dedicated", "seconds": total})
    rows.append({"run": f"OAT (median of {len(oat_secs)} runs)", "seconds": oat_t, "saving": total / oat_t})
    extra = {}
    for name, (key, _) in variants.items():
        secs = variant_secs[name]
        median = statistics.median(secs)
        rows.append({"run": f"{name} (median of {len(secs)})", "seconds": median, "saving": total / median,
                     "vs_oat": oat_t / median})
        extra.update({f"{key}_saving": total / median, f"{key}_seconds_all": secs})
    if args.eval:
        data = load_data(args.data, args.data_dir, val_size=args.val_size, seed=0)
        eps = args.eps or data.default_eps
        for r in rows:
            if "lam" in r:
                ded = evaluate(tmp / f"ded-{r['lam']:g}", r["lam"], data, eps, device)
                r.update({f"ded_{k}": v for k, v in ded.items()})
                r.update({f"oat_{k}": v for k, v in evaluate(tmp / "oat", r["lam"], data, eps, device).items()})
    print(table(rows))
    print(f"one-model saving: {total / oat_t:.2f}x (OAT runs: {', '.join(f'{s:.1f}' for s in oat_secs)} s)")
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    if args.data_dir:  # a committed result names no machine path
        settings["data_dir"] = portable(args.data_dir)
    settings.update(lams=list(PAPER_LAMS), path="oat.train.runner.train (checkpoints on, evaluation off)",
                    note="runs interleaved OAT/dedicated; machine.load_average is the load at the end")
    write_result(args.out, {"rows": rows, "saving": total / oat_t, "oat_seconds_all": oat_secs, **extra,
                            "settings": settings})


if __name__ == "__main__":
    main()
