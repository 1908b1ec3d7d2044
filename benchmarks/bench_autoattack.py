"""AutoAttack's cost on the CPU, per component (APGD-CE, APGD-T, FAB-T, Square).

Trains (or reuses, resuming an interrupted run) a small OAT model on digits and one on
Fashion-MNIST (10,000 training images), then runs the library's standard AutoAttack
(:func:`oat.attacks.autoattack.autoattack`, ``version="standard"``) on a seeded subset of n
test images at each λ, once per setting:

- ``before``: the library's call as the sweep made it (the package's internal batch = every
  image of the call at once, the standard order, the model as ``model.at(λ)``);
- each ``--batch-sizes`` value: the package's own batch option;
- ``predictor``: the same call on ``model.predictor(λ)`` (FiLM scale/shift computed once,
  BN and FiLM folded into one affine map) instead of ``model.at(λ)``, which recomputes FiLM
  and routes BN on every one of AutoAttack's thousands of passes. The same function up to
  float rounding: not a package option, so it is checked like the others.

The order of the components is not varied: the standard order already puts the cheap
attacks that break most examples first, and each later one runs on the survivors only.

Per component: wall and CPU seconds, model passes, examples attacked, still robust after it,
images/s (examples attacked per CPU second); per setting: wall and CPU seconds, images/s (n
per CPU second)
and whether its robust examples are exactly before's (robust = clean-correct and not broken,
judged on ``model.at(λ)`` as the sweep judges). The settings of one (model, λ) run back to
back, rotated each round. A setting's passes are counted, so what its seconds are made of,
the cost of one pass on ``model.at`` and on ``model.predictor``, is also measured in many
short alternations (a load that drifts during the long AutoAttack runs hits both alike).

    python benchmarks/bench_autoattack.py --threads 1 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import load_average, portable, portable_argv, set_threads, table, write_result

import oat
from oat.attacks.autoattack import autoattack
from oat.checkpoint import resolve_checkpoint
from oat.errors import CheckpointError
from oat.evaluate.api import eval_dataset
from oat.evaluate.sweep import subset_indices

# Small OAT models (the paper's λ set), a minute or two of training each on one core.
MODELS = {
    "digits": dict(data="digits", model="small-cnn", eps=0.1, epochs=15, batch_size=64, lr=0.1),
    "fashion-mnist": dict(data="fashion-mnist", val_size=50000, model="small-cnn", model_kwargs={"base": 16},
                          eps=0.1, epochs=2, batch_size=32, lr=0.05),
}


def trained(name: str, runs: Path, log=print):
    """The model of ``MODELS[name]``: reused when its run finished with this config, resumed
    when it was interrupted, else trained."""
    cfg = {**MODELS[name], "seed": 0}
    folder = runs / name
    try:
        state = json.loads((resolve_checkpoint(folder) / "state.json").read_text())
    except (CheckpointError, OSError, ValueError):
        state = None
    same = state is not None and all(state["config"].get(k) == v for k, v in cfg.items())
    if not (same and state.get("finished")):
        t0 = time.perf_counter()
        log(f"train {name} → {folder}" + (" (resuming)" if same else ""))
        oat.fit(oat.TrainConfig.from_dict(cfg), folder, resume=same, overwrite=not same, evaluate=False,
                progress=False, log=lambda *_: None)
        log(f"  trained in {time.perf_counter() - t0:.0f} s")
    return oat.load(folder, device="cpu").eval()


def settings(batch_sizes: list[int]) -> list[dict]:
    return ([{"name": "before", "batch_size": None, "model": "at"}]
            + [{"name": f"batch {b}", "batch_size": b, "model": "at"} for b in batch_sizes]
            + [{"name": "predictor", "batch_size": None, "model": "predictor"}])


def run_setting(model, lam: float, x, y, eps: float, setting: dict) -> dict:
    """One standard AutoAttack on (x, y) at λ under ``setting``; per-component figures. Rates
    are per second of this process's CPU time (one thread), which other jobs on the machine
    inflate far less than wall time."""
    bound = model.at(lam)
    target = model.predictor(lam) if setting["model"] == "predictor" else bound
    marks = []  # (report, CPU time) at each component's start and end

    def on(p):
        if p.event in ("attack", "end"):
            marks.append((p, time.process_time()))

    t0, c0 = time.perf_counter(), time.process_time()
    x_adv = autoattack(target, x, y, eps=eps, version="standard", generator=torch.Generator().manual_seed(0),
                       batch_size=setting["batch_size"], progress=on)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    with torch.no_grad():
        robust = (bound(x).argmax(1) == y) & (bound(x_adv).argmax(1) == y)
    parts, passes, starts = [], 0, {}
    for p, c in marks:
        if p.event == "attack":
            starts[p.attack] = (p.robust, c)
            continue
        attacked, c_start = starts[p.attack]
        parts.append({"attack": p.attack, "s": p.seconds, "cpu_s": c - c_start, "passes": p.passes - passes,
                      "attacked": attacked, "robust_after": p.robust, "img_per_s": attacked / max(c - c_start, 1e-9)})
        passes = p.passes
    return {"setting": setting["name"], "batch_size": setting["batch_size"] or len(x), "model": setting["model"],
            "total_s": wall, "cpu_s": cpu, "img_per_s": len(x) / cpu, "robust": int(robust.sum()),
            "ra": float(robust.float().mean()), "components": parts, "mask": robust}


def pass_costs(name: str, model, lam: float, x, sizes=(1, 50, 200), reps: int = 15, k: int = 10) -> list[dict]:
    """CPU milliseconds per AutoAttack-like pass (a no-grad forward, and a forward with the input
    gradient) on ``model.at(λ)`` and ``model.predictor(λ)``, alternating ``reps`` times; medians.
    The passes of a setting are counted, so this is what its seconds are made of, measured with
    the load drifting alike for both."""
    import statistics

    targets = {"at": model.at(lam), "predictor": model.predictor(lam)}
    out = []
    for b in sorted({min(b, len(x)) for b in sizes}):
        xb = x[:b]
        got = {(t, g): [] for t in targets for g in (False, True)}
        for _ in range(reps):
            for t, f in targets.items():
                for grad in (False, True):
                    t0 = time.process_time()
                    for _ in range(k):
                        if grad:
                            xg = xb.clone().requires_grad_()
                            torch.autograd.grad(f(xg).sum(), xg)
                        else:
                            with torch.no_grad():
                                f(xb)
                    got[(t, grad)].append((time.process_time() - t0) / k * 1000)
        for grad in (False, True):
            at, pr = (statistics.median(got[(t, grad)]) for t in targets)
            out.append({"data": name, "lam": lam, "batch": b, "pass": "forward + input grad" if grad else "forward",
                        "at_ms": at, "predictor_ms": pr, "speedup": at / pr})
    return out


def measure(name: str, model, lams, n: int, batch_sizes, rounds: int, log=print) -> tuple[list[dict], list[dict]]:
    """AutoAttack under every setting at each λ (rows), and the per-pass costs (see pass_costs)."""
    test = eval_dataset(model, "test")
    idx = subset_indices(len(test), n, seed=0)
    x, y = test.images[idx].float() / 255, test.labels[idx]
    eps = float(model.checkpoint_state["eps"])
    todo = settings(batch_sizes)
    rows, costs = [], []
    for lam in lams:
        best: dict[str, dict] = {}
        for r in range(rounds):
            for s in todo[r % len(todo):] + todo[: r % len(todo)]:  # rotated each round
                row = run_setting(model, lam, x, y, eps, s)
                log(f"{name} λ={lam:g} {s['name']}: {row['total_s']:.1f} s ({row['cpu_s']:.1f} s CPU), "
                    f"robust {row['robust']}/{n}")
                if s["name"] not in best or row["cpu_s"] < best[s["name"]]["cpu_s"]:
                    best[s["name"]] = row
        ref = best["before"]["mask"]
        for s in todo:
            row = best[s["name"]]
            rows.append({"data": name, "lam": lam, "n": n, "eps": eps, **{k: v for k, v in row.items() if k != "mask"},
                         "same_robust_as_before": bool(torch.equal(row["mask"], ref)),
                         "speedup": best["before"]["cpu_s"] / row["cpu_s"]})
        costs += pass_costs(name, model, lam, x)
    return rows, costs


def markdown(rows: list[dict], costs: list[dict], command: str, note: str) -> str:
    lines = [f"# AutoAttack's cost per component (CPU)\n\n`{command}`\n\n{note}\n",
             "| data | λ | setting | AA batch | component | attacked | robust after | wall s | CPU s | passes "
             "| img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for c in r["components"]:
            lines.append(f"| {r['data']} | {r['lam']:g} | {r['setting']} | {r['batch_size']} | {c['attack']} | "
                         f"{c['attacked']} | {c['robust_after']} | {c['s']:.1f} | {c['cpu_s']:.1f} | {c['passes']} | "
                         f"{c['img_per_s']:.2f} |")
    lines += ["", "| data | λ | setting | wall s | CPU s | img/s | vs before | RA | same robust examples as before |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['data']} | {r['lam']:g} | {r['setting']} | {r['total_s']:.1f} | {r['cpu_s']:.1f} | "
                     f"{r['img_per_s']:.2f} | "
                     f"{r['speedup']:.2f}× | {100 * r['ra']:.1f}% | {'yes' if r['same_robust_as_before'] else 'NO'} |")
    lines += ["", "CPU milliseconds per pass, `model.at` vs `model.predictor`, alternating (medians):", "",
              "| data | λ | batch | pass | model.at ms | predictor ms | ratio |", "|---|---|---|---|---|---|---|"]
    for c in costs:
        lines.append(f"| {c['data']} | {c['lam']:g} | {c['batch']} | {c['pass']} | {c['at_ms']:.2f} | "
                     f"{c['predictor_ms']:.2f} | {c['speedup']:.2f}× |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--n", type=int, default=200, help="test images attacked")
    ap.add_argument("--lams", type=float, nargs="+", default=[1.0])
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=[50], help="package batch sizes to try")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of all settings (the fastest of each is kept)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", default="runs/bench-autoattack", help="where the trained models are kept")
    ap.add_argument("--out", default="benchmarks/results", help="folder for the JSON and the Markdown table")
    args = ap.parse_args()
    set_threads(args.threads)
    t0, cpu0 = time.perf_counter(), time.process_time()
    rows, costs = [], []
    for name in args.data:
        model = trained(name, Path(args.runs))
        got = measure(name, model, args.lams, args.n, args.batch_sizes, args.rounds)
        rows, costs = rows + got[0], costs + got[1]
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    note = (f"Settings of one (data, λ) ran back to back in one process ({args.threads} thread), on a machine shared "
            f"with other jobs (load average {load_average()} at the end): compare settings within a (data, λ), "
            f"not across runs. Rates are per second of the process's CPU time. img/s of a component = the examples "
            f"it attacked per CPU second; of a setting = n per CPU second; vs before = before's CPU time over the "
            f"setting's. Whole run: {wall / 60:.1f} min wall, {cpu / 60:.1f} min of CPU time.")
    out = Path(args.out)
    command = "python " + " ".join(["benchmarks/bench_autoattack.py", *portable_argv()])
    print(table([{k: r[k] for k in ("data", "lam", "setting", "total_s", "cpu_s", "img_per_s", "speedup", "robust",
                                    "same_robust_as_before")} for r in rows]))
    print(table(costs))
    kept = {**vars(args), "runs": portable(args.runs), "out": portable(args.out), "device": "cpu"}
    write_result("bench_autoattack", {"settings": kept, "rows": rows, "pass_costs": costs, "note": note,
                                      "wall_s": wall, "cpu_s": cpu}, out / "bench_autoattack.json")
    (out / "bench_autoattack.md").write_text(markdown(rows, costs, command, note))


if __name__ == "__main__":
    main()
