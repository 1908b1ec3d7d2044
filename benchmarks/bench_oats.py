"""OATS cost: one model for every (λ, width) against dedicated models, in one run.

For a small OATS model (small-cnn, 28×28 one-channel random images, the paper's λ set,
widths 0.5/0.75/1.0, 7-step PGD), times training steps of:

* ``oats``: one OATS step (every width, largest first, per-width backward);
* ``oats-summed``: the same step keeping every width's graph until one backward;
* ``oat-per-width``: three OAT models, one per width (each a dedicated slim OAT model);
* ``pgdat-per-(width, λ)``: one dedicated PGD-AT model per (width, λ): 3 × 6 = 18
  models, the set OATS replaces.

Throughput is *images per second to give every model one step on the batch*: for the
dedicated sets, the sum of each model's median step time. Step times are measured in
interleaved rounds (every model once per round), and each step's FLOPs (forward, attack
and backward) are counted too: the FLOP ratio does not depend on the machine's load.
Also the inference latency per width (the exported slim network and ``model.at``),
FLOPs and parameters, and the peak memory (max RSS growth, in a fresh subprocess) of one
OATS step with and without per-width backward. Figures are medians of timed repeats
after warm-up; the machine may be shared (its load average is recorded).

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
from torch.utils.flop_counter import FlopCounterMode

from oat.conditioning import PAPER_LAMS, Conditioning
from oat.evaluate.cost import count_flops, count_params, measure_latency
from oat.models import create_model
from oat.models.export import export
from oat.train.objectives import OAT, OATS, PGDAT, AttackConfig

WIDTHS = (1.0, 0.75, 0.5)
SHAPE = (1, 28, 28)


class Trainer:
    """One model, its objective and optimiser: ``step()`` is one timed training step."""

    def __init__(self, model, objective, device):
        self.model, self.objective, self.device = model, objective, device
        self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        self.gen = torch.Generator().manual_seed(0)

    def _run(self, x, y):
        self.model.train()
        loss, _ = self.objective(self.model, x, y, generator=self.gen)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def step(self, x, y) -> float:
        sync(self.device)
        t0 = time.perf_counter()
        self._run(x, y)
        sync(self.device)
        return time.perf_counter() - t0

    def flops(self, x, y) -> int:
        """FLOPs of one step (forward, attack and backward), counted: independent of the machine's load."""
        with FlopCounterMode(display=False) as counter:
            self._run(x, y)
        return int(counter.get_total_flops())


def batch(n, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=g).to(device), torch.randint(0, 10, (n,), generator=g).to(device)


def training(args, device) -> list[dict]:
    """Median step times, measured in interleaved rounds (each round times every model once,
    so a change of the machine's load hits every configuration alike)."""
    attack = AttackConfig(eps=0.3, steps=7)
    x, y = batch(args.batch_size, device)
    make = lambda spec: create_model("small-cnn", spec, in_channels=1).to(device)
    oats_model = make(Conditioning(widths=WIDTHS))
    groups = {
        "oats": [Trainer(oats_model, OATS(oats_model.spec, attack), device)],
        "oats-summed": [Trainer(oats_model, OATS(oats_model.spec, attack, backward_per_width=False), device)],
        "oat-per-width": [Trainer(m, OAT(m.spec, attack), device)
                          for m in (make(Conditioning(widths=(w,))) for w in WIDTHS)],
        "pgdat-per-(width, λ)": [Trainer(m, PGDAT(m.spec, attack), device)
                                 for m in (make(Conditioning.dedicated(lam, widths=(w,)))
                                           for w in WIDTHS for lam in PAPER_LAMS)],
    }
    trainers = [t for ts in groups.values() for t in ts]
    flops = {id(t): t.flops(x, y) for t in trainers}  # also the warm-up step
    times: dict[int, list[float]] = {id(t): [] for t in trainers}
    for _ in range(args.repeats):
        for t in trainers:
            times[id(t)].append(t.step(x, y))
    rows = []
    for name, ts in groups.items():
        sec = sum(statistics.median(times[id(t)]) for t in ts)
        rows.append({"what": name, "models": len(ts), "covers": "18 (λ, width)", "step_s": sec,
                     "gflops_per_step": sum(flops[id(t)] for t in ts) / 1e9})
    base_s, base_f = rows[0]["step_s"], rows[0]["gflops_per_step"]
    for r in rows:
        r["img_per_s"] = round(args.batch_size / r["step_s"], 1)
        r["time_vs_oats"] = round(r["step_s"] / base_s, 2)
        r["flops_vs_oats"] = round(r["gflops_per_step"] / base_f, 2)
        r["step_s"], r["gflops_per_step"] = round(r["step_s"], 4), round(r["gflops_per_step"], 3)
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
    obj = OATS(model.spec, AttackConfig(eps=0.3, steps=2), backward_per_width=per_width)
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
    print(table(train_rows, ["what", "models", "covers", "step_s", "img_per_s", "time_vs_oats", "gflops_per_step",
                             "flops_vs_oats"]))
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
