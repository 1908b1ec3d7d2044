"""Reports: Markdown tables and PNG plots from one or several runs' results.json, and the same
run as one interactive page, ``report.html`` (:mod:`oat.evaluate.report_html`).

``write_report([OAT_RUN, DEDICATED_RUN, ...])`` puts the OAT curve beside the dedicated
baselines (each its own run at one λ): SA and RA against λ, and the SA–RA trade-off.
"""

from __future__ import annotations

from pathlib import Path

from oat.checkpoint import atomic_write_text
from oat.errors import OatError
from oat.evaluate.plots_oats import oats_section
from oat.evaluate.plotting import finish_plot, plt
from oat.evaluate.provenance import current_rows, describe_choice, newest_checkpoint
from oat.evaluate.report_attacks import attacks_section, checks_section
from oat.evaluate.report_html import write_html
from oat.evaluate.results import pct, read_results, strongest_attack
from oat.runlock import locked


class EmptyReport(OatError):
    """A report with no rows to show (it would replace a good report.md by a stub)."""


def baseline_rows(run: Path, split: str, eps: float | None, norm: str) -> list[dict]:
    """A dedicated run's rows at the report's split, ε and norm (its newest checkpoint's)."""
    rows, _ = current_rows(read_results(run), split, eps=eps, norm=norm, newest=newest_checkpoint(run))
    return rows


def _dedicated(runs: list[Path], split: str, attack: str | None, eps: float | None, norm: str) -> dict[float, dict]:
    """``{λ: row}`` of each dedicated run (its own λ)."""
    out = {}
    for run in runs:
        for r in baseline_rows(run, split, eps, norm):
            if r["attack"] == attack and r.get("width") in (None, 1.0):  # slim runs: see oat.evaluate.plots_oats
                out[r["lam"]] = r
    return out


def comparison_table(main_rows: list[dict], ded: dict[float, dict]) -> list[str]:
    lines = ["| λ | width | SA | RA | dedicated SA | dedicated RA | ΔSA | ΔRA |",
             "|---|---|---|---|---|---|---|---|"]
    for r in main_rows:
        d = ded.get(r["lam"]) if r["width"] in (None, 1.0) else None  # full-width baselines only
        dsa = None if d is None else r["sa"] - d["sa"]
        dra = None if d is None else r["ra"] - d["ra"]
        w = "–" if r["width"] is None else f"{r['width']:g}"
        lines.append(f"| {r['lam']:g} | {w} | {pct(r['sa'])} | {pct(r['ra'])} | {pct(d and d['sa'])} | "
                     f"{pct(d and d['ra'])} | {pct(dsa)} | {pct(dra)} |")
    return lines


def all_rows_table(rows: list[dict]) -> list[str]:
    lines = ["| split | attack | ε | λ | width | SA % | RA % | n | checkpoint | subset seed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        w = "–" if r["width"] is None else f"{r['width']:g}"
        ckpt = "unknown" if r.get("checkpoint_sha256") is None else \
            f"{r.get('checkpoint')} ({r['checkpoint_sha256'][:12]})"
        seed = "–" if r.get("subset_seed") is None else r["subset_seed"]
        lines.append(f"| {r['split']} | {r['attack']} | {r['eps']:.4g} | {r['lam']:g} | {w} | {pct(r['sa'])} | "
                     f"{pct(r['ra'])} | {r['n']} | {ckpt} | {seed} |")
    return lines


def plot_vs_lam(main_rows, ded, path: Path, attack: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for w in sorted({r["width"] for r in main_rows}, key=lambda v: -(v or 1)):
        rs = sorted((r for r in main_rows if r["width"] == w), key=lambda r: r["lam"])
        tag = "" if w is None else f" (w={w:g})"
        ax.plot([r["lam"] for r in rs], [100 * r["sa"] for r in rs], "o-", label=f"OAT SA{tag}")
        ax.plot([r["lam"] for r in rs], [100 * r["ra"] for r in rs], "s-", label=f"OAT RA{tag}")
    if ded:
        lams = sorted(ded)
        ax.plot(lams, [100 * ded[v]["sa"] for v in lams], "k^", ms=9, mfc="none", label="dedicated SA")
        ax.plot(lams, [100 * ded[v]["ra"] for v in lams], "kv", ms=9, mfc="none", label="dedicated RA")
    ax.set(xlabel="λ", ylabel="accuracy (%)", title=f"SA and RA ({attack}) against λ")
    finish_plot(fig, ax, path)


def plot_tradeoff(main_rows, ded, path: Path, attack: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 4))
    for w in sorted({r["width"] for r in main_rows}, key=lambda v: -(v or 1)):
        rs = sorted((r for r in main_rows if r["width"] == w), key=lambda r: r["lam"])
        ax.plot([100 * r["sa"] for r in rs], [100 * r["ra"] for r in rs], "o-",
                label="OAT" if w is None else f"OAT w={w:g}")
        for r in rs:
            ax.annotate(f"{r['lam']:g}", (100 * r["sa"], 100 * r["ra"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    if ded:
        ax.plot([100 * d["sa"] for d in ded.values()], [100 * d["ra"] for d in ded.values()], "k^", ms=8,
                mfc="none", label="dedicated")
    ax.set(xlabel="standard accuracy SA (%)", ylabel=f"robust accuracy RA, {attack} (%)",
           title="SA–RA trade-off (labels: λ)")
    finish_plot(fig, ax, path)


@locked(lambda runs, out=None, *_, **__: Path(out or list(runs)[0]), "oat report")  # one writer per folder
def write_report(runs, out=None, split: str | None = None, *, eps: float | None = None,
                 checkpoint: str | None = None) -> Path:
    """Write ``report.md``, PNG plots and ``report.html`` for ``runs[0]`` beside the dedicated ``runs[1:]``.

    The tables and plots show the rows of one checkpoint, one ε and one norm, the largest n
    of each (λ, width, attack) (:func:`oat.evaluate.provenance.current_rows`); the report
    says which. Every row is still listed under "All rows".

    Args:
        runs: run folders; the first is the OAT/OATS model, the rest dedicated baselines.
        out: output folder (default: the first run folder).
        split: which split's rows (default: test if present, else val).
        eps: which ε (default: the run's ε if it has rows, else the ε most rows have).
        checkpoint: which checkpoint (folder name or sha256; default: the run's newest).

    Returns:
        The path of ``report.md``.

    Raises:
        EmptyReport: no rows to show; nothing is written (an existing report stays as it was).
    """
    runs = [Path(r) for r in runs]
    out = Path(out) if out else runs[0]
    doc = read_results(runs[0])
    rows, info = current_rows(doc, split, eps=eps, checkpoint=checkpoint, newest=newest_checkpoint(runs[0]))
    split = info["split"]
    attack = strongest_attack(rows)
    main_rows = sorted((r for r in rows if r["attack"] == attack), key=lambda r: (-(r["width"] or 1.0), r["lam"]))
    if not main_rows:
        raise EmptyReport(f"{runs[0]} has no {split} rows to report ({info['checkpoint']}"
                          f"{'' if eps is None else f', ε = {eps:g}'}); nothing written (`oat evaluate {runs[0]} "
                          f"--split {split}` first)")
    out.mkdir(parents=True, exist_ok=True)
    ded = _dedicated(runs[1:], split, attack, info["eps"], info["norm"])
    lines = [f"# oat report: {runs[0].name}", "",
             f"Model `{doc.get('model')}`, objective `{doc.get('objective')}`, data `{doc.get('data')}`, "
             f"trained at ε = {doc.get('eps')}. Accuracies in %; RA under `{attack}`.", "", describe_choice(info), "",
             "Interactive version, with example images at each λ: [report.html](report.html).", ""]
    lines += ["## Trade-off" + (" against dedicated models" if ded else ""), ""]
    lines += comparison_table(main_rows, ded) + [""]
    plot_vs_lam(main_rows, ded, out / "sa_ra_vs_lam.png", attack)
    plot_tradeoff(main_rows, ded, out / "tradeoff.png", attack)
    lines += ["![SA and RA against λ](sa_ra_vs_lam.png)", "", "![SA–RA trade-off](tradeoff.png)", ""]
    lines += oats_section(main_rows, runs[1:], info, attack, out)
    lines += attacks_section(rows, out)
    lines += checks_section(doc, split, rows[0].get("checkpoint_sha256"), info["eps"])
    lines += ["## All rows", ""] + all_rows_table(doc.get("rows", [])) + [""]
    if len(runs) > 1:
        lines += ["## Runs", ""] + [f"- `{r}`" for r in runs] + [""]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    write_html(out, runs=runs, doc=doc, info=info, attack=attack, main_rows=main_rows)
    return report
