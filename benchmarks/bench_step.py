"""OAT training-step throughput, FLOP rate and memory: fp32 eager against the optimised path.

One OAT step (paper λ set, PGD-7, SGD) runs through oat's own ``train_epoch`` on a fixed
synthetic batch, so the loop's checks and syncs are included. Settings: ``fp32`` (no
autocast, contiguous), ``fp32+cl`` (channels_last only), ``opt`` (bf16 autocast + channels_last), ``opt+compile``
(``--compile``). The step's FLOPs are counted with ``torch.utils.flop_counter`` (attack,
clean and adversarial passes, backward included); the achieved FLOP/s is set against a
large matrix multiply measured in the same run (bf16 and fp32). Peak memory per image:
``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the growth of the process's
maximum resident set (``ru_maxrss``) in a fresh subprocess per setting.

``--levers`` times single changes against the default path (FiLM cache, attacking λ = 0
examples, parameter grads during crafting, the loop's per-step host syncs).

    python benchmarks/bench_step.py                                  # CPU: resnet18 base 16, batch 32
    python benchmarks/bench_step.py --device cuda --model resnet34 --base 64 --batch-size 128 256 --compile
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from common import machine, set_threads, sync, table, write_result
from torch.utils.flop_counter import FlopCounterMode

from oat.conditioning import PAPER_LAMS, Conditioning
from oat.models import create_model
from oat.train import loop
from oat.train.objectives import OAT, AttackConfig

SETTINGS = {"fp32": dict(amp="off", channels_last=False, compile=False),
            "fp32+cl": dict(amp="off", channels_last=True, compile=False),
            "opt": dict(amp="bf16", channels_last=True, compile=False),
            "opt+compile": dict(amp="bf16", channels_last=True, compile=True)}


def build(args, setting: dict, batch: int):
    """Model, objective, optimiser and a fixed batch for one setting."""
    torch.manual_seed(0)
    dev = torch.device(args.device)
    kw = {"base": args.base} if args.base else {}
    model = create_model(args.model, Conditioning(lams=PAPER_LAMS), in_channels=args.channels, num_classes=10,
                         **kw).to(dev)
    x = torch.rand(batch, args.channels, args.size, args.size, device=dev)
    if setting["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=dev)
    objective = OAT(model.spec, AttackConfig(eps=8 / 255, steps=args.attack_steps))
    if setting["compile"]:
        # dynamic=None: static first, dynamic after a recompile (dynamic=True fails in inductor on
        # this model: "cannot determine truth value of Relational").
        model.forward_ctx = torch.compile(model.forward_ctx)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    return model, objective, opt, x, y


def run_steps(model, objective, opt, x, y, n: int, amp: str, progress: bool = False) -> float:
    """Seconds for ``n`` OAT steps through ``loop.train_epoch`` on the same batch."""
    dev = x.device
    state = loop.LoopState()
    sync(dev)
    t0 = time.perf_counter()
    loop.train_epoch(model, objective, [(x, y)] * n, opt, state,
                     loop.LoopOptions(epochs=1, base_lr=0.01, device=dev, amp=amp, progress=progress),
                     total_steps=10**6)
    sync(dev)
    return time.perf_counter() - t0


def step_flops(model, objective, opt, x, y, amp: str) -> int:
    with FlopCounterMode(display=False) as fc:
        run_steps(model, objective, opt, x, y, 1, amp)
    return fc.get_total_flops()


def forward_flops(model, x) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x, 1.0)
    return fc.get_total_flops()


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, reps: int = 5) -> float:
    """Achieved FLOP/s of an n×n matrix multiply (best of ``reps``)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def time_setting(args, name: str, batch: int) -> dict:
    s = SETTINGS[name]
    model, objective, opt, x, y = build(args, s, batch)
    run_steps(model, objective, opt, x, y, args.warmup, s["amp"])
    secs = min(run_steps(model, objective, opt, x, y, args.steps, s["amp"]) for _ in range(args.repeats))
    flops = step_flops(model, objective, opt, x, y, s["amp"])
    row = {"setting": name, "batch": batch, "img_per_s": batch * args.steps / secs, "step_ms": 1e3 * secs / args.steps,
           "step_gflop_per_img": flops / batch / 1e9, "fwd_gflop_per_img": forward_flops(model, x) / batch / 1e9}
    row["fwd_equiv_per_img"] = row["step_gflop_per_img"] / row["fwd_gflop_per_img"]
    row["tflop_per_s"] = flops / (secs / args.steps) / 1e12
    row["cifar10_200ep_hours"] = 50_000 * 200 / row["img_per_s"] / 3600
    return row


def memory_child(args) -> None:
    """Run in a fresh process: print the peak memory growth of training steps, in bytes."""
    s = SETTINGS[args.child_memory]
    model, objective, opt, x, y = build(args, s, args.batch_size[0])
    dev = x.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        run_steps(model, objective, opt, x, y, 2, s["amp"])
        peak = torch.cuda.max_memory_allocated(dev) - base
    else:
        # The resident set now (not the peak so far, which import-time transients can hold
        # above what the steps need), against the peak after the steps.
        with open("/proc/self/statm") as f:
            base = int(f.read().split()[1]) * resource.getpagesize()
        run_steps(model, objective, opt, x, y, 2, s["amp"])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    print(json.dumps({"peak_bytes": peak}))


def measure_memory(args, name: str, batch: int) -> float:
    cmd = [sys.executable, __file__, "--child-memory", name, "--batch-size", str(batch), "--model", args.model,
           "--size", str(args.size), "--channels", str(args.channels), "--device", args.device,
           "--threads", str(args.threads), "--attack-steps", str(args.attack_steps)]
    if args.base:
        cmd += ["--base", str(args.base)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return json.loads(out)["peak_bytes"] / batch / 2**20


class AttackAll(OAT):
    """OAT without the λ = 0 saving: every example is attacked (λ = 0 ones with weight 0)."""

    def __call__(self, model, x, y, generator=None, width=None):
        from oat.train.sampling import sample_lams

        lam, _ = sample_lams(x.shape[0], self.lams, generator, self.continuous)
        return self.loss(model, x, y, lam.to(x.device), 0, generator, width)


def frozen_craft(craft):
    """Crafting with every parameter's requires_grad off (restored afterwards)."""

    def wrapped(model, *a, **kw):
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            return craft(model, *a, **kw)
        finally:
            for p in params:
                p.requires_grad_(True)

    return wrapped


def lever_setup(name: str, args):
    """(model, objective, opt, x, y, amp, progress) for one lever; 'default' is oat's CPU default path."""
    s = dict(SETTINGS["fp32"], channels_last=True)
    if name == "channels_last off":
        s["channels_last"] = False
    if name == "bf16 autocast":
        s["amp"] = "bf16"
    if name == "torch.compile":
        s["compile"] = True
    model, objective, opt, x, y = build(args, s, args.batch_size[0])
    if name == "FiLM cache off":
        def predictor(lam, width=None, n=None):
            ctx = model.condition(lam, width, n)
            return lambda z: model.forward_ctx(z, ctx)
        model.predictor = predictor
    if name == "attack λ=0 too":
        objective = AttackAll(objective.spec, objective.attack)
    if name == "params frozen while crafting":
        objective.attack.craft = frozen_craft(objective.attack.craft)
    return model, objective, opt, x, y, s["amp"], name == "progress bar on"


LEVERS = ["default", "FiLM cache off", "attack λ=0 too", "params frozen while crafting", "channels_last off",
          "bf16 autocast", "progress bar on", "no finiteness check", "torch.compile"]


def run_levers(args) -> None:
    """Interleaved rounds (every lever once per round) so load changes hit all alike; best round kept."""
    names = ["default"] + [n for n in (args.lever or LEVERS) if n != "default"]
    setups = {n: lever_setup(n, args) for n in names}
    best = dict.fromkeys(names, float("inf"))
    real_check = loop.grads_finite
    for _ in range(args.repeats + 1):  # the first round is warm-up
        for n, (model, obj, opt, x, y, amp, prog) in setups.items():
            loop.grads_finite = (lambda m: True) if n == "no finiteness check" else real_check
            try:
                secs = run_steps(model, obj, opt, x, y, args.steps, amp, prog)
            finally:
                loop.grads_finite = real_check
            best[n] = min(best[n], secs) if _ else best[n]
    base = best["default"]
    rows = [{"lever": n, "img_per_s": args.batch_size[0] * args.steps / s, "vs_default": base / s}
            for n, s in best.items()]
    print(table(rows))
    doc = {k: v for k, v in vars(args).items() if k not in ("child_memory", "out")}
    doc.update(default="fp32, channels_last, FiLM cache on, λ=0 not attacked, progress off, finiteness checked")
    write_result(args.out or "bench_levers", {"rows": rows, "settings": doc})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--base", type=int, default=16, help="base width (0: the model's default)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch-size", type=int, nargs="+", default=[32])
    p.add_argument("--attack-steps", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--settings", nargs="+", default=["fp32", "fp32+cl", "opt"], choices=list(SETTINGS))
    p.add_argument("--compile", action="store_true", help="add the opt+compile setting")
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--levers", action="store_true", help="time single levers instead")
    p.add_argument("--lever", nargs="+", choices=LEVERS, default=None, help="with --levers: only these (and default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child-memory", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    set_threads(args.threads)
    if args.child_memory:
        return memory_child(args)
    if args.levers:
        return run_levers(args)
    dev = torch.device(args.device)
    settings = args.settings + (["opt+compile"] if args.compile else [])
    big = 8192 if dev.type == "cuda" else 2048
    peak = {str(dt).split(".")[1]: matmul_rate(dev, dt, big) / 1e12 for dt in (torch.bfloat16, torch.float32)}
    rows = []
    for batch in args.batch_size:
        for name in settings:
            row = time_setting(args, name, batch)
            row["share_of_bf16_matmul"] = row["tflop_per_s"] / peak["bfloat16"]
            row["share_of_fp32_matmul"] = row["tflop_per_s"] / peak["float32"]
            if args.memory:
                row["peak_mib_per_img"] = measure_memory(args, name, batch)
            rows.append(row)
        base = next(r for r in rows if r["batch"] == batch and r["setting"] == "fp32")["img_per_s"] \
            if "fp32" in settings else None
        for r in rows:
            if r["batch"] == batch and base:
                r["vs_fp32"] = r["img_per_s"] / base
    print(f"matmul {big}x{big}: bf16 {peak['bfloat16']:.3f} TFLOP/s, fp32 {peak['float32']:.3f} TFLOP/s "
          f"({machine(dev).get('gpu') or machine(dev)['cpu']})")
    print(table(rows, ["setting", "batch", "img_per_s", "vs_fp32", "step_ms", "fwd_gflop_per_img", "fwd_equiv_per_img",
                       "tflop_per_s", "share_of_bf16_matmul", "cifar10_200ep_hours", "peak_mib_per_img"]))
    settings_doc = {k: v for k, v in vars(args).items() if k not in ("child_memory", "out", "levers")}
    settings_doc.update(objective="OAT, paper λ set, PGD-7 ε=8/255, SGD", data="synthetic fixed batch",
                        matmul_size=big, memory="CUDA max_memory_allocated" if dev.type == "cuda" else
                        "CPU ru_maxrss growth over 2 steps in a fresh subprocess (includes allocator caching)")
    write_result(args.out or "bench_step", {"rows": rows, "matmul_tflop_per_s": peak, "settings": settings_doc})


if __name__ == "__main__":
    main()
