"""Picking the operating point for a user: the (λ, width) that meets a target.

``oat evaluate RUN --target-ra X`` answers the question a user actually has: "which λ (and,
for OATS, which width) keeps RA ≥ X with the best SA?" (``--target-sa X``: SA ≥ X with the
best RA). It is decided on the validation split, never on the test split.
"""

from __future__ import annotations

from oat.errors import ConfigError
from oat.evaluate.results import strongest_attack


def pick_attack(rows: list[dict]) -> str | None:
    """The strongest attack present (:func:`oat.evaluate.results.strongest_attack`), never ``clean``."""
    return strongest_attack([r for r in rows if r["attack"] != "clean"])


def select_operating_point(rows: list[dict], target_ra: float | None = None, target_sa: float | None = None, *,
                           attack: str | None = None, split: str | None = "val",
                           eps: float | None = None) -> dict | None:
    """The row meeting the target with the best other accuracy, or None if none meets it.

    Args:
        rows: results.json rows.
        target_ra: RA ≥ this (fraction), maximise SA; or
        target_sa: SA ≥ this (fraction), maximise RA (exactly one of the two).
        attack: whose RA (default :func:`pick_attack` over the candidate rows).
        split: only rows of this split (None: any).
        eps: only rows at this ε (default: any; give it when rows hold several).

    Returns:
        The chosen row. Ties go to the smaller width (cheaper), then the smaller λ.
    """
    if (target_ra is None) == (target_sa is None):
        raise ConfigError("give exactly one of target_ra and target_sa")
    target = target_ra if target_ra is not None else target_sa
    if not 0.0 <= float(target) <= 1.0:
        raise ConfigError(f"a target is a fraction in [0, 1] (0.45 for 45%); got {target}")
    cand = [r for r in rows if (split is None or r["split"] == split)
            and (eps is None or abs(r["eps"] - eps) < 1e-9)]
    attack = attack or pick_attack(cand)
    cand = [r for r in cand if r["attack"] == attack]
    need, best = ("ra", "sa") if target_ra is not None else ("sa", "ra")
    ok = [r for r in cand if r[need] >= target - 1e-12]
    if not ok:
        return None
    return max(ok, key=lambda r: (r[best], r[need], -(r["width"] or 1.0), -r["lam"]))


def describe(row: dict | None, rows: list[dict], target_ra: float | None = None,
             target_sa: float | None = None) -> str:
    """One line: the chosen point with its measured numbers, or why none meets the target."""
    need = "RA" if target_ra is not None else "SA"
    target = target_ra if target_ra is not None else target_sa
    if row is None:
        key = need.lower()
        best = max(rows, key=lambda r: r[key], default=None)
        tail = "" if best is None else (f" (best {need} {100 * best[key]:.2f}% at λ={best['lam']:g}"
                                        f"{_w(best)}, {best['attack']}, n={best['n']})")
        return f"no λ{' and width' if any(r['width'] is not None for r in rows) else ''} reaches " \
               f"{need} ≥ {100 * target:.2f}% on the validation split{tail}"
    return (f"λ={row['lam']:g}{_w(row)}: SA {100 * row['sa']:.2f}%, RA ({row['attack']}, ε={row['eps']:.4g}) "
            f"{100 * row['ra']:.2f}% on {row['split']} (n={row['n']}); target {need} ≥ {100 * target:.2f}%")


def _w(row: dict) -> str:
    return "" if row.get("width") is None else f" width={row['width']:g}"
