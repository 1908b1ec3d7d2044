"""Pure helpers of the claim benchmark (``benchmarks/tradeoff.py``): aggregation, cost, table, plot.

A *record* is one trained model: ``{"variant", "seed", "lam" (dedicated only), "wall_s",
"passes", "rows"}`` where ``rows`` are the evaluation rows of ``oat.evaluate``
(``lam``, ``attack``, ``sa``, ``ra``, ``n``). Rows of the benchmark compare a variant
(``oat``, ``oat-continuous``, an ablation) with the dedicated models at the same λ, one row
per (dataset, λ, attack), as DESIGN.md fixes: means over seeds, OAT minus dedicated.
"""

from __future__ import annotations

import math
import statistics

DEDICATED = "dedicated"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def ci95(p: float, n: int) -> float:
    """Half width of the normal-approximation 95% interval of an accuracy ``p`` on ``n`` examples."""
    return 1.96 * math.sqrt(max(p * (1 - p), 0.0) / n) if n else math.nan


def _acc(record: dict, lam: float, attack: str) -> tuple[float, float, int, int] | None:
    """(sa, ra, n_sa, n) of a record at λ under ``attack``; SA from the ``clean`` rows when present
    (they may cover the whole split while the attack runs on a subset)."""

    def find(name):
        return next((r for r in record["rows"] if abs(r["lam"] - lam) < 1e-6 and r["attack"] == name), None)

    row = find(attack)
    if row is None:
        return None
    clean = find("clean")
    sa, n_sa = (clean["sa"], clean["n"]) if clean is not None else (row["sa"], row["n"])
    return sa, row["ra"], n_sa, row["n"]


def _dedicated_at(records: list[dict], lam: float, seed: int) -> dict | None:
    return next(
        (r for r in records if r["variant"] == DEDICATED and r["seed"] == seed and abs(r["lam"] - lam) < 1e-6), None
    )


def compare(records: list[dict], dataset: str, variant: str = "oat") -> list[dict]:
    """One row per (λ, attack) where ``variant`` and a dedicated model of the same seed both exist.

    Gaps are computed per seed (paired: same seed, same test examples), then averaged.
    """
    out = []
    for rec in (r for r in records if r["variant"] == variant):
        for row in rec["rows"]:
            if row["attack"] == "clean":
                continue
            out.append((row["lam"], row["attack"]))
    rows = []
    for lam, attack in sorted(set(out)):
        pairs = []
        for rec in sorted((r for r in records if r["variant"] == variant), key=lambda r: r["seed"]):
            ded = _dedicated_at(records, lam, rec["seed"])
            a, b = _acc(rec, lam, attack), (_acc(ded, lam, attack) if ded else None)
            if a and b:
                pairs.append((rec["seed"], a, b))
        if pairs:
            rows.append(_row(dataset, variant, lam, attack, pairs))
    return rows


def _row(dataset: str, variant: str, lam: float, attack: str, pairs: list) -> dict:
    row = {"dataset": dataset, "variant": variant, "lam": lam, "attack": attack}
    for key, i in (("sa", 0), ("ra", 1)):
        oat = [a[i] for _, a, _ in pairs]
        ded = [b[i] for _, _, b in pairs]
        gap = [x - y for x, y in zip(oat, ded)]
        row[f"{key}_oat"], row[f"{key}_oat_std"] = mean_std(oat)
        row[f"{key}_dedicated"], row[f"{key}_dedicated_std"] = mean_std(ded)
        row[f"{key}_gap"], row[f"{key}_gap_std"] = mean_std(gap)
    row["seeds"] = [s for s, _, _ in pairs]
    row["n"] = pairs[0][1][3]
    row["n_sa"] = pairs[0][1][2]
    row["ra_ci95"] = ci95(row["ra_oat"], row["n"])
    return row


def cost(records: list[dict], variant: str = "oat", lams=None) -> dict:
    """Training cost of the dedicated set over one ``variant`` model, per seed and overall.

    ``wall_ratio`` is measured (noisy on a shared machine); ``pass_ratio`` counts
    forward-backward passes per example and does not depend on the machine's load.
    """
    per_seed = {}
    for rec in (r for r in records if r["variant"] == variant):
        ded = [
            r
            for r in records
            if r["variant"] == DEDICATED
            and r["seed"] == rec["seed"]
            and (lams is None or any(abs(r["lam"] - v) < 1e-6 for v in lams))
        ]
        if not ded or (lams is not None and len(ded) < len(lams)):
            continue  # only seeds whose dedicated set is complete
        dw, dp = sum(r["wall_s"] for r in ded), sum(r["passes"] for r in ded)
        per_seed[str(rec["seed"])] = {
            "oat_wall_s": rec["wall_s"],
            "dedicated_wall_s": dw,
            "dedicated_runs": len(ded),
            "wall_ratio": dw / rec["wall_s"],
            "pass_ratio": dp / rec["passes"],
        }
    tot_o = sum(v["oat_wall_s"] for v in per_seed.values())
    tot_d = sum(v["dedicated_wall_s"] for v in per_seed.values())
    return {
        "per_seed": per_seed,
        "oat_wall_s": tot_o,
        "dedicated_wall_s": tot_d,
        "wall_ratio": tot_d / tot_o if tot_o else math.nan,
        "pass_ratio": mean_std([v["pass_ratio"] for v in per_seed.values()])[0],
    }


def passes_per_example(objective: str, lam: float = 1.0, num_lams: int = 6, batch: int = 128, steps: int = 7,
                       zero_share: float | None = None) -> float:
    """Forward-backward passes one training example costs (PGD steps + the training passes).

    PGD-AT at λ: a clean pass unless λ = 1, and ``steps`` attack passes + one adversarial pass
    unless λ = 0. OAT: every example's clean pass; the attacked share (all but ceil(B/K), or all
    but ``zero_share`` of the batch) pays ``steps + 1`` more.
    """
    if objective == "pgdat":
        return (lam < 1) + (lam > 0) * (steps + 1)
    n0 = math.ceil(batch / num_lams) if zero_share is None else round(zero_share * batch)
    attacked = (batch - n0) / batch
    return 1 + attacked * (steps + 1)


def pct(x: float) -> str:
    return "—" if x is None or math.isnan(x) else f"{100 * x:.2f}"


def same_subset_rows(records: list[dict], lams, pgd: str = "pgd20", aa: str = "autoattack") -> list[dict]:
    """Rows that compare PGD and AutoAttack on the same examples, from per-example CSV records
    (``oat.evaluate.results.read_per_example``): AutoAttack usually runs on a subset, so its RA
    and a PGD RA over the whole split differ by sampling too. Per λ: ``<pgd>@aa`` (PGD on the
    AutoAttack subset) and ``worst@aa`` (robust only if both attacks fail, per example)."""
    out = []
    for lam in lams:

        def outcome(attack, lam=lam):
            return {
                r["index"]: int(r["correct"])
                for r in records
                if r["attack"] == attack and abs(float(r["lam"]) - lam) < 1e-6
            }

        on_aa, on_pgd = outcome(aa), outcome(pgd)
        idx = [i for i in on_aa if i in on_pgd]
        if not idx:
            continue
        for name, vals in ((f"{pgd}@aa", [on_pgd[i] for i in idx]), ("worst@aa", [on_pgd[i] & on_aa[i] for i in idx])):
            out.append({"lam": lam, "attack": name, "ra": sum(vals) / len(idx), "n": len(idx)})
    return out


def markdown(rows: list[dict], title: str) -> str:
    """A Markdown table: per λ SA and RA of the variant vs dedicated, gaps ± std (points)."""
    lines = [
        f"### {title}",
        "",
        "| λ | attack | SA variant | SA dedicated | SA gap | RA variant | RA dedicated | RA gap | seeds | n |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['lam']:g} | {r['attack']} | {pct(r['sa_oat'])} | {pct(r['sa_dedicated'])} | "
            f"{100 * r['sa_gap']:+.2f} ± {100 * r['sa_gap_std']:.2f} | {pct(r['ra_oat'])} | "
            f"{pct(r['ra_dedicated'])} | {100 * r['ra_gap']:+.2f} ± {100 * r['ra_gap_std']:.2f} | "
            f"{len(r['seeds'])} | {r['n']} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path, title: str) -> None:
    """SA and RA per λ, variant vs dedicated, with ± std error bars (one panel per attack)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = sorted({r["attack"] for r in rows})
    fig, axes = plt.subplots(1, len(attacks), figsize=(6 * len(attacks), 4), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        rs = sorted((r for r in rows if r["attack"] == attack), key=lambda r: r["lam"])
        lam = [r["lam"] for r in rs]
        for key, marker in (("sa", "o"), ("ra", "s")):
            for who, style in (("oat", "-"), ("dedicated", "--")):
                ax.errorbar(
                    lam,
                    [100 * r[f"{key}_{who}"] for r in rs],
                    yerr=[100 * r[f"{key}_{who}_std"] for r in rs],
                    fmt=marker + style,
                    capsize=3,
                    label=f"{key.upper()} {'variant' if who == 'oat' else who}",
                )
        ax.set_xlabel("λ")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{title} — RA: {attack}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(curves: dict[str, list[dict]], path, title: str) -> None:
    """SA against RA: one curve per variant (points at its λ or α values), dedicated models as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = sorted({r["attack"] for rows in curves.values() for r in rows})
    if not attacks:  # nothing evaluated yet (a partial run writes its outputs after every model)
        return
    fig, axes = plt.subplots(1, len(attacks), figsize=(6 * len(attacks), 4.5), squeeze=False)
    for ax, attack in zip(axes[0], attacks):
        ded = {}
        for name, rows in curves.items():
            rs = sorted((r for r in rows if r["attack"] == attack), key=lambda r: r["lam"])
            if not rs:
                continue
            ax.plot([100 * r["ra_oat"] for r in rs], [100 * r["sa_oat"] for r in rs], "o-", label=name, ms=4)
            ded.update({round(r["lam"], 6): r for r in rs if "sa_dedicated" in r})
        d = sorted(ded.values(), key=lambda r: r["lam"])
        ax.plot([100 * r["ra_dedicated"] for r in d], [100 * r["sa_dedicated"] for r in d], "k*--", ms=9,
                label="dedicated (one model per λ)")
        ax.set_xlabel(f"RA, {attack} (%)")
        ax.set_ylabel("SA (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curve(records: list[dict], dataset: str, variant: str) -> list[dict]:
    """Rows of a model with its own knob (a blend's α), averaged over seeds: no dedicated pairing.

    Same keys as :func:`compare`'s variant side (``lam`` holds α; ``knob`` says so)."""
    recs = [r for r in records if r["variant"] == variant]
    keys = sorted({(round(row["lam"], 6), row["attack"]) for r in recs for row in r["rows"]
                   if row["attack"] != "clean"})
    rows = []
    for lam, attack in keys:
        got = [(r["seed"], a) for r in recs if (a := _acc(r, lam, attack))]
        if not got:
            continue
        row = {"dataset": dataset, "variant": variant, "lam": lam, "knob": "alpha", "attack": attack}
        for key, i in (("sa", 0), ("ra", 1)):
            row[f"{key}_oat"], row[f"{key}_oat_std"] = mean_std([a[i] for _, a in got])
        row.update(seeds=[sd for sd, _ in got], n=got[0][1][3], n_sa=got[0][1][2])
        row["ra_ci95"] = ci95(row["ra_oat"], row["n"])
        rows.append(row)
    return rows


def _sa_at_ra(points: list[tuple[float, float]], ra: float) -> float | None:
    """SA of a curve at robustness ``ra``: its upper envelope (the best SA with RA ≥ ra among its
    points, linearly interpolated between neighbours); None outside the curve's RA range."""
    pts = sorted(points)
    if not pts or ra < pts[0][0] - 1e-12 or ra > pts[-1][0] + 1e-12:
        return None
    best = None
    for (r0, s0), (r1, s1) in zip(pts, pts[1:] or pts):
        if r0 - 1e-12 <= ra <= r1 + 1e-12:
            v = s0 if r1 == r0 else s0 + (s1 - s0) * (ra - r0) / (r1 - r0)
            best = v if best is None else max(best, v)
    return max([best] + [s for r, s in pts if r >= ra - 1e-12 and s is not None])


def curve_gap(oat_rows: list[dict], alt_rows: list[dict], variant: str, alternative: str) -> list[dict]:
    """Per attack: at each of the variant's points, its SA minus the alternative's SA at the same RA
    (> 0: the variant's curve lies above). Points outside the alternative's RA range are skipped."""
    out = []
    for attack in sorted({r["attack"] for r in oat_rows} & {r["attack"] for r in alt_rows}):
        alt = [(r["ra_oat"], r["sa_oat"]) for r in alt_rows if r["attack"] == attack]
        diffs = []
        for r in (r for r in oat_rows if r["attack"] == attack):
            other = _sa_at_ra(alt, r["ra_oat"])
            if other is not None:
                diffs.append({"lam": r["lam"], "ra": r["ra_oat"], "sa": r["sa_oat"], "sa_alternative": other,
                              "sa_gap": r["sa_oat"] - other})
        if diffs:
            gaps = [d["sa_gap"] for d in diffs]
            out.append({"variant": variant, "alternative": alternative, "attack": attack, "points": diffs,
                        "mean_sa_gap": statistics.fmean(gaps), "min_sa_gap": min(gaps), "max_sa_gap": max(gaps)})
    return out


def curve_markdown(rows: list[dict], title: str) -> str:
    lines = [f"### {title}", "", "| α | attack | SA | RA | seeds | n |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['lam']:g} | {r['attack']} | {pct(r['sa_oat'])} ± {100 * r['sa_oat_std']:.2f} | "
                     f"{pct(r['ra_oat'])} ± {100 * r['ra_oat_std']:.2f} | {len(r['seeds'])} | {r['n']} |")
    return "\n".join(lines) + "\n"


def gaps_markdown(gaps: list[dict]) -> str:
    """Whether each OAT variant's SA–RA curve lies above (+) or below (−) each alternative's."""
    lines = ["### OAT curves against the two-model alternatives (SA at the same RA, points)", "",
             "| variant | alternative | attack | mean SA gap | min | max | λ points compared |",
             "|---|---|---|---|---|---|---|"]
    for g in gaps:
        lines.append(f"| {g['variant']} | {g['alternative']} | {g['attack']} | {100 * g['mean_sa_gap']:+.2f} | "
                     f"{100 * g['min_sa_gap']:+.2f} | {100 * g['max_sa_gap']:+.2f} | "
                     + ", ".join(f"{p['lam']:g}" for p in g["points"]) + " |")
    return "\n".join(lines) + "\n"
