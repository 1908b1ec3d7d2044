"""Where OAT is free: its gap to the dedicated models against width and epochs.

Reads the trade-off benchmark's outputs of one data set at several budgets (each written by
``benchmarks/tradeoff.py --base B --epochs E --tag=-budget-bB-eE``) and writes one table, JSON and
plot of the SA and RA gaps at the chosen λ for each OAT variant, so a user can see what budget buys
parity. It trains nothing; run the budgets first (the commands are in each input's JSON).

    python benchmarks/tradeoff_budget.py --data fashion-mnist --budgets b16-e3 b32-e3 b16-e10 b32-e10
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BUDGET = re.compile(r"^b(\d+)-e(\d+)$")


def gap_rows(doc: dict, budget: str, lams: list[float]) -> list[dict]:
    """One row per (variant, λ, attack) of one budget's trade-off JSON, at the λ in ``lams``."""
    base, epochs = map(int, BUDGET.match(budget).groups())
    out = []
    for r in doc["rows"]:
        if "sa_gap" not in r or not any(abs(r["lam"] - v) < 1e-6 for v in lams):
            continue  # alternatives' curve rows carry no gap to a dedicated model
        out.append({"budget": budget, "base": base, "epochs": epochs, "variant": r["variant"], "lam": r["lam"],
                    "attack": r["attack"], "sa_gap": r["sa_gap"], "ra_gap": r["ra_gap"],
                    "sa_dedicated": r["sa_dedicated"], "ra_dedicated": r["ra_dedicated"],
                    "seeds": r["seeds"], "n": r["n"]})
    return out


def markdown(rows: list[dict], commands: dict[str, str], settings: str) -> str:
    md = ["## Where OAT is free: the gap to the dedicated models against width and epochs", "", settings, "",
          "| variant | base | epochs | λ | attack | SA dedicated | SA gap | RA dedicated | RA gap | n |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["variant"], r["attack"], r["lam"], r["base"], r["epochs"])):
        md.append(f"| {r['variant']} | {r['base']} | {r['epochs']} | {r['lam']:g} | {r['attack']} | "
                  f"{100 * r['sa_dedicated']:.2f} | {100 * r['sa_gap']:+.2f} | {100 * r['ra_dedicated']:.2f} | "
                  f"{100 * r['ra_gap']:+.2f} | {r['n']} |")
    md += ["", "Commands (one per budget):", ""] + [f"- {b}: `{c}`" for b, c in commands.items()]
    return "\n".join(md) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    """SA and RA gap (points) against the budget, one line per (variant, λ)."""
    budgets = sorted({(r["base"], r["epochs"]) for r in rows})
    labels = [f"base {b}\n{e} ep" for b, e in budgets]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for (variant, lam, attack) in sorted({(r["variant"], r["lam"], r["attack"]) for r in rows}):
        pts = {(r["base"], r["epochs"]): r for r in rows
               if (r["variant"], r["lam"], r["attack"]) == (variant, lam, attack)}
        xs = [i for i, b in enumerate(budgets) if b in pts]
        style = "-" if variant == "oat" else "--"
        for ax, key in zip(axes, ("sa_gap", "ra_gap")):
            ax.plot(xs, [100 * pts[budgets[i]][key] for i in xs], style, marker="o",
                    label=f"{variant} λ={lam:g} ({attack})")
    for ax, name in zip(axes, ("SA gap (points)", "RA gap (points)")):
        ax.axhline(0, color="grey", lw=0.8)
        ax.axhspan(-1, 1, color="grey", alpha=0.12)
        ax.set_xticks(range(len(budgets)), labels)
        ax.set_ylabel(name)
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--budgets", nargs="+", required=True, help="bB-eE: the tags' budgets, e.g. b16-e3 b32-e10")
    p.add_argument("--lams", type=float, nargs="+", default=[0.0, 0.2, 1.0])
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    out = Path(args.out)
    rows, commands, settings = [], {}, ""
    for b in args.budgets:
        if not BUDGET.match(b):
            p.error(f"budget {b!r} is not of the form bB-eE (e.g. b16-e3)")
        path = out / f"tradeoff-{args.data}-budget-{b}.json"
        if not path.exists():
            print(f"tradeoff_budget: error: {path.name} is missing (run its tradeoff.py first)", file=sys.stderr)
            return 2
        doc = json.loads(path.read_text())
        rows += gap_rows(doc, b, args.lams)
        commands[b] = doc["command"]
        s = doc["settings"]
        settings = (f"Settings shared by every budget: {s['model']}, ε={s['eps']}, batch {s['batch_size']}, "
                    f"lr {s['lr']}, train images {s['train_size'] or 'all'}, RA on {s['ra_subset'] or 'all'} "
                    f"test images, seeds {s['seeds']}; the gap is variant − dedicated, at λ {args.lams}.")
    name = f"tradeoff-{args.data}-budget"
    (out / f"{name}.json").write_text(json.dumps({"dataset": args.data, "budgets": args.budgets,
                                                  "commands": commands, "rows": rows}, indent=1))
    (out / f"{name}.md").write_text(markdown(rows, commands, settings))
    plot(rows, out / f"{name}.png", f"{args.data}: OAT's gap to the dedicated models by budget")
    print((out / f"{name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
