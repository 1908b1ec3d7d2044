"""OATS cost: one model for every (λ, width) against dedicated models, in one run.

For a small OATS model (small-cnn, 28×28 one-channel random images, the paper's λ set,
widths 0.5/0.75/1.0, 7-step PGD), times training steps of:

* ``oats``: one OATS step (every width, largest first, per-width backward);
* ``oats-summed``: the same step keeping every width's graph until one backward;
* ``oat-per-width``: three OAT models, one per width (each a dedicated slim OAT model);
* ``pgdat-per-(width, λ)``: one dedicated PGD-AT model per (width, λ): 3 × 6 = 18
  models, the set OATS replaces.

Throughput is *images per second to give every model one step on the batch*: for the
dedicated sets, the sum of each model's step time. Also the inference latency per width
(the exported slim network and ``model.at``), FLOPs and parameters, and the peak memory
(max RSS growth, in a fresh subprocess) of one OATS step with and without per-width
backward. Figures are medians of timed repeats after warm-up; the machine may be shared
(its load average is recorded).

    python benchmarks/bench_oats.py [--batch-size 64] [--repeats 5] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from common import load_average, set_threads, sync, table, write_result

from oat.conditioning import PAPER_LAMS, Conditioning
from oat.evaluate.cost import count_flops, count_params, measure_latency
from oat.models import create_model
from oat.models.export import export
from oat.train.objectives import OAT, OATS, PGDAT, AttackConfig

WIDTHS = (1.0, 0.75, 0.5)
SHAPE = (1, 28, 28)


def step_seconds(model, objective, x, y, device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of one training step (objective, backward, SGD step)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    model.train()
    times = []
    for i in range(warmup + repeats):
        sync(device)
        t0 = time.perf_counter()
        loss, _ = objective(model, x, y, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def batch(n, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device)


def training(args, device) -> list[dict]:
    attack = AttackConfig(eps=0.3, steps=7)
    x, y = batch(args.batch_size, device)
    make = lambda spec: create_model("small-cnn", spec, in_channels=1).to(device)
    oats_model = make(Conditioning(widths=WIDTHS))
    rows = []
    for name, per_width in (("oats", True), ("oats-summed", False)):
        obj = OATS(PAPER_LAMS, attack, WIDTHS, backward_per_width=per_width)
        rows.append({"what": name, "models": 1, "covers": "18 (λ, width)",
                     "step_s": step_seconds(oats_model, obj, x, y, device, args.repeats)})
    oat_s = [step_seconds(make(Conditioning(widths=(w,))), OAT(PAPER_LAMS, attack), x, y, device, args.repeats)
             for w in WIDTHS]
    rows.append({"what": "oat-per-width", "models": 3, "covers": "18 (λ, width)", "step_s": sum(oat_s),
                 "per_model_s": [round(s, 4) for s in oat_s]})
    ded = {f"w={w:g},λ={lam:g}": step_seconds(make(Conditioning.dedicated(lam, widths=(w,))), PGDAT(lam, attack), x,
                                              y, device, max(1, args.repeats // 2))
           for w in WIDTHS for lam in PAPER_LAMS}
    rows.append({"what": "pgdat-per-(width, λ)", "models": len(ded), "covers": "18 (λ, width)",
                 "step_s": sum(ded.values()), "per_model_s": {k: round(v, 4) for k, v in ded.items()}})
    base = rows[0]["step_s"]
    for r in rows:
        r["img_per_s"] = round(args.batch_size / r["step_s"], 1)
        r["time_vs_oats"] = round(r["step_s"] / base, 2)
        r["step_s"] = round(r["step_s"], 4)
    return rows


def inference(args, device) -> list[dict]:
    torch.manual_seed(0)
    model = create_model("small-cnn", Conditioning(widths=WIDTHS), in_channels=1).to(device).eval()
    rows = []
    for w in WIDTHS:
        slim = export(model, 1.0, w).eval()
        shape = (args.latency_batch, *SHAPE)
        rows.append({"width": w, "mflops_per_image": round(count_flops(slim, (1, *SHAPE)) / 1e6, 3),
                     "params": count_params(slim),
                     "export_ms": round(1000 * measure_latency(slim, shape, device, repeats=args.repeats * 4), 3),
                     "at_ms": round(1000 * measure_latency(model.at(1.0, w), shape, device, repeats=args.repeats * 4),
                                    3),
                     "batch": args.latency_batch})
    return rows


def memory_probe(per_width: bool, batch_size: int) -> None:
    """Child process: print the max-RSS growth (MiB) of OATS steps, as JSON."""
    torch.set_num_threads(1)
    model = create_model("small-cnn", Conditioning(widths=WIDTHS), in_channels=1)
    obj = OATS(PAPER_LAMS, AttackConfig(eps=0.3, steps=2), WIDTHS, backward_per_width=per_width)
    x, y = batch(batch_size, torch.device("cpu"))
    with torch.no_grad():  # allocate the weights and a forward's buffers before the baseline
        model(x, 1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(2):
        loss, _ = obj(model, x, y, generator=torch.Generator().manual_seed(0))
        model.zero_grad(set_to_none=True)
        loss.backward()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_growth_mib": round((after - before) / 1024, 1)}))


def memory(args) -> list[dict]:
    rows = []
    for per_width in (True, False):
        out = subprocess.run([sys.executable, __file__, "--memory-probe", str(int(per_width)), "--batch-size",
                              str(args.memory_batch)], capture_output=True, text=True, check=True)
        rows.append({"what": "oats" if per_width else "oats-summed", "batch": args.memory_batch,
                     **json.loads(out.stdout.strip().splitlines()[-1])})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--latency-batch", type=int, default=128)
    p.add_argument("--memory-batch", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--memory-probe", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_probe is not None:
        return memory_probe(bool(args.memory_probe), args.batch_size)
    set_threads(args.threads)
    device = torch.device(args.device)
    load_before = load_average()
    train_rows, infer_rows, mem_rows = training(args, device), inference(args, device), memory(args)
    print(table(train_rows, ["what", "models", "covers", "step_s", "img_per_s", "time_vs_oats"]))
    print()
    print(table(infer_rows))
    print()
    print(table(mem_rows))
    write_result("bench_oats", {
        "settings": {"device": str(device), "model": "small-cnn (base 32)", "input": list(SHAPE),
                     "batch_size": args.batch_size, "lams": list(PAPER_LAMS), "widths": list(WIDTHS),
                     "attack": "linf PGD-7, eps 0.3", "repeats": args.repeats, "threads": torch.get_num_threads()},
        "compared": "images/s for every model to take one training step on the batch: one OATS model vs three "
                    "per-width OAT models vs 18 per-(width, λ) dedicated PGD-AT models (each of its own width)",
        "training": train_rows, "inference": infer_rows, "memory": mem_rows,
        "load_average_before": load_before,
        "note": "shared 2-core CPU: other engineers' tests and training ran at the same time; ratios within "
                "this run are the figures to read, absolute times are inflated",
    })


if __name__ == "__main__":
    main()
