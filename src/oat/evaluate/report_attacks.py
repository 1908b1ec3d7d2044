"""Report sections of the evaluation: SA–RA curves per attack, and the checks (failures in red)."""

from __future__ import annotations

from pathlib import Path

from oat.evaluate.plotting import finish_plot, plt

FAIL = '<span style="color:red">❌ **FAILED**</span>'


def attacks_section(rows: list[dict], out: Path) -> list[str]:
    """SA–RA curves, one per attack (full width), when more than one attack was run."""
    rows = [r for r in rows if r["attack"] != "clean" and (r["width"] is None or r["width"] == max_width(rows))]
    attacks = sorted({r["attack"] for r in rows}, key=lambda a: (a == "worst", a))
    if len(attacks) < 2:
        return []
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for a in attacks:
        rs = sorted((r for r in rows if r["attack"] == a), key=lambda r: r["lam"])
        ax.plot([100 * r["sa"] for r in rs], [100 * r["ra"] for r in rs], "k--o" if a == "worst" else "o-", label=a)
        for r in rs:
            ax.annotate(f"{r['lam']:g}", (100 * r["sa"], 100 * r["ra"]), fontsize=6, textcoords="offset points",
                        xytext=(3, 3))
    ax.set(xlabel="standard accuracy SA (%)", ylabel="robust accuracy RA (%)", title="SA–RA per attack (labels: λ)")
    finish_plot(fig, ax, out / "tradeoff_attacks.png")
    lams = sorted({r["lam"] for r in rows})
    lines = ["## RA per attack", "", "| λ | SA | " + " | ".join(attacks) + " |", "|---" * (len(attacks) + 2) + "|"]
    for lam in lams:
        by = {r["attack"]: r for r in rows if r["lam"] == lam}
        sa = next(iter(by.values()))["sa"]
        lines.append(f"| {lam:g} | {100 * sa:.2f} | "
                     + " | ".join("–" if a not in by else f"{100 * by[a]['ra']:.2f}" for a in attacks) + " |")
    return lines + ["", "![SA–RA per attack](tradeoff_attacks.png)", ""]


def max_width(rows: list[dict]):
    widths = [r["width"] for r in rows if r["width"] is not None]
    return max(widths) if widths else None


def checks_section(doc: dict, split: str, sha: str | None = None, eps: float | None = None) -> list[str]:
    """The evaluation checks of ``split`` at ``eps`` (those of checkpoint ``sha``, else those that
    name no checkpoint): a summary line and a table, failed checks in red."""
    checks = [c for c in doc.get("checks", []) if c.get("split") == split
              and (eps is None or c.get("eps") is None or abs(c["eps"] - eps) < 1e-9)]
    own = [c for c in checks if c.get("checkpoint_sha256") == sha]
    checks = own or [c for c in checks if c.get("checkpoint_sha256") is None]  # legacy checks name no checkpoint
    if not checks:
        return []
    bad = [c for c in checks if not c["passed"]]
    head = (f"{FAIL}: {len(bad)} of {len(checks)} checks failed; do not trust these RA numbers until "
            "the cause is understood." if bad else f"All {len(checks)} checks passed.")
    lines = ["## Evaluation checks", "", head, "",
             "| check | λ | width | result | value | limit | n | detail |", "|---|---|---|---|---|---|---|---|"]
    for c in sorted(checks, key=lambda c: (c["passed"], c["check"], c["lam"])):
        w = "–" if c["width"] is None else f"{c['width']:g}"
        res = "✅ passed" if c["passed"] else FAIL
        lines.append(f"| {c['check']} | {c['lam']:g} | {w} | {res} | {c['value']:.4g} | {c['limit']:.4g} | "
                     f"{c['n']} | {c['detail']} |")
    return lines + [""]
