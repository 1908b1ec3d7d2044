"""The OATS part of a report: accuracy, robustness and compute per (λ, width) at a glance.

For a slimmable run (its rows carry ``flops``), :func:`oats_section` adds to report.md:

* a table of each width's cost (FLOPs per image, parameters, latency per batch);
* ``tradeoff_per_width.png``: one SA–RA panel per width, the OATS curve over λ, with the
  dedicated models of that width (full-width PGD-AT runs in the width-1 panel, dedicated
  slim runs, ``--widths w``, in the panel of w);
* ``ra_vs_flops.png``: RA against FLOPs per image, one point per (λ, width), with the
  dedicated slim models at their own FLOPs;
* a table of OATS beside each dedicated slim model at the same (λ, width).
"""

from __future__ import annotations

from pathlib import Path

from oat.evaluate.plotting import finish_plot, plt
from oat.evaluate.results import pct, width_of


def _key(row: dict) -> tuple[float, float]:
    return round(float(row["lam"]), 6), round(width_of(row), 6)


def dedicated_by_width(runs, info: dict, attack: str | None) -> dict[tuple[float, float], dict]:
    """``{(λ, width): row}`` of dedicated runs at the report's split, ε and norm (``info`` of
    :func:`oat.evaluate.provenance.current_rows`); a run that is not slimmable has width 1."""
    from oat.evaluate.report import baseline_rows

    out = {}
    for run in runs:
        for r in baseline_rows(run, info["split"], info["eps"], info["norm"]):
            if attack is None or r["attack"] == attack:
                out[_key(r)] = {**r, "run": str(run)}
    return out


def cost_table(rows: list[dict]) -> list[str]:
    """One line per width: MFLOPs per image, parameters, latency per batch."""
    lines = ["| width | MFLOPs / image | parameters | latency (ms / batch) | batch |", "|---|---|---|---|---|"]
    seen = set()
    for r in sorted(rows, key=lambda r: -width_of(r)):
        if width_of(r) in seen:
            continue
        seen.add(width_of(r))
        lat = "–" if r.get("latency_ms") is None else f"{r['latency_ms']:.2f}"
        batch = r.get("latency_batch") or "–"
        lines.append(f"| {width_of(r):g} | {r['flops'] / 1e6:.3f} | {r['params']:,} | {lat} | {batch} |")
    return lines


def slim_comparison_table(rows: list[dict], ded: dict) -> list[str]:
    """OATS beside each dedicated model of the same (λ, width) below full width."""
    lines = ["| λ | width | OATS SA | OATS RA | dedicated SA | dedicated RA | ΔSA | ΔRA |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (-width_of(r), r["lam"])):
        d = ded.get(_key(r))
        if d is None or width_of(r) >= 1.0:
            continue
        lines.append(f"| {r['lam']:g} | {width_of(r):g} | {pct(r['sa'])} | {pct(r['ra'])} | {pct(d['sa'])} | "
                     f"{pct(d['ra'])} | {pct(r['sa'] - d['sa'])} | {pct(r['ra'] - d['ra'])} |")
    return lines if len(lines) > 2 else []


def plot_tradeoff_per_width(rows: list[dict], ded: dict, path: Path, attack: str) -> None:
    """One SA–RA panel per width: the OATS curve over λ and that width's dedicated models."""
    widths = sorted({width_of(r) for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, len(widths), figsize=(4 * len(widths), 3.8), squeeze=False, sharey=True)
    for ax, w in zip(axes[0], widths):
        rs = sorted((r for r in rows if width_of(r) == w), key=lambda r: r["lam"])
        ax.plot([100 * r["sa"] for r in rs], [100 * r["ra"] for r in rs], "o-", label="OATS")
        for r in rs:
            ax.annotate(f"{r['lam']:g}", (100 * r["sa"], 100 * r["ra"]), fontsize=7, textcoords="offset points",
                        xytext=(3, 3))
        ds = [d for (lam, dw), d in ded.items() if abs(dw - w) < 1e-6]
        if ds:
            ax.plot([100 * d["sa"] for d in ds], [100 * d["ra"] for d in ds], "k^", ms=8, mfc="none",
                    label="dedicated")
        ax.set(title=f"width {w:g}", xlabel="SA (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f"RA, {attack} (%)")
    fig.suptitle("SA–RA trade-off per width (labels: λ)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ra_vs_flops(rows: list[dict], ded: dict, path: Path, attack: str) -> None:
    """RA against FLOPs per image: a point per (λ, width); lines join the widths of one λ."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for lam in sorted({r["lam"] for r in rows}):
        rs = sorted((r for r in rows if r["lam"] == lam), key=width_of)
        ax.plot([r["flops"] / 1e6 for r in rs], [100 * r["ra"] for r in rs], "o-", label=f"OATS λ={lam:g}")
    pts = [(d["flops"] / 1e6, 100 * d["ra"], d["lam"]) for d in ded.values() if d.get("flops")]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "k^", ms=8, mfc="none", label="dedicated")
        for x, y, lam in pts:
            ax.annotate(f"λ={lam:g}", (x, y), fontsize=7, textcoords="offset points", xytext=(3, -9))
    ax.set(xlabel="MFLOPs per image", ylabel=f"robust accuracy RA, {attack} (%)",
           title="Robustness against compute (points: λ × width)")
    finish_plot(fig, ax, path)


def oats_section(main_rows: list[dict], baseline_runs, info: dict, attack: str, out: Path) -> list[str]:
    """Markdown lines (and PNGs in ``out``) for a slimmable run; ``[]`` for any other run.

    ``info``: the report's choice of rows (:func:`oat.evaluate.provenance.current_rows`).
    """
    rows = [r for r in main_rows if r.get("flops") is not None]
    if not rows:
        return []
    ded = dedicated_by_width(baseline_runs, info, attack)
    out = Path(out)
    plot_tradeoff_per_width(rows, ded, out / "tradeoff_per_width.png", attack)
    plot_ra_vs_flops(rows, ded, out / "ra_vs_flops.png", attack)
    lines = ["## Accuracy, robustness and compute (OATS)", "",
             "Cost of each width's standalone slim network (FiLM folded into BN; the same for every λ). "
             "FLOPs counted by torch's FlopCounterMode (a multiply-add is 2); latency is the median forward "
             "time on the evaluation machine, which may have been shared.", ""]
    lines += cost_table(rows) + [""]
    comp = slim_comparison_table(rows, ded)
    if comp:
        lines += [f"OATS against dedicated slim models (RA under `{attack}`):", ""] + comp + [""]
    lines += ["![SA–RA per width](tradeoff_per_width.png)", "", "![RA against FLOPs](ra_vs_flops.png)", ""]
    return lines
