"""Checks that an evaluation is not fooled (gradient masking, broken attacks, random models).

Run for every bound model (λ, width) on a small seeded subset, beside every result (the list
follows Carlini et al. 2019, "On evaluating adversarial robustness", and the AutoAttack
authors' ``checks.py``):

- ``ra-eps0-equals-sa``: the attack at ε = 0 leaves every prediction as it was.
- ``ra-nonincreasing-in-eps``: RA over the grid ε/4, ε/2, ε, 2ε never rises.
- ``ra-chance-at-large-eps``: a gradient attack without random start (CW margin, 20 steps)
  at a radius that reaches the all-grey image (L∞ 0.5, L2 0.5·√d) brings RA to chance:
  ≤ 1/num_classes + :data:`CHANCE_MARGIN`.
- ``more-steps-no-higher-ra``: PGD-40 with 2 restarts never has higher RA than PGD-10;
  also ``pgd100-r5`` against ``pgd20`` over the evaluation's own rows when both ran.
- ``autoattack-le-pgd``: AutoAttack's RA ≤ every PGD's RA, when both ran.
- ``input-gradients-finite-nonzero``: all input gradients (of the CW margin, which does not
  saturate like cross-entropy) are finite and ≥ :data:`MIN_NONZERO_GRAD` of the examples
  have a non-zero one.
- ``deterministic-eval``: two eval-mode forwards agree, and the bound model agrees with the
  λ-batched path the sweep uses (so batch-mates never change an example's logits).

Tolerance for comparisons between two attacks: RA may rise by at most
:func:`tolerance` = 1 point + 2 examples of the n compared (different random starts make
per-example outcomes noisy on a small subset; a real failure is larger).

Checks run in fp32 (autocast disabled), like the evaluation itself.
"""

from __future__ import annotations

import math

import torch

from oat.attacks.pgd import cw_margin_loss, pgd
from oat.errors import OatError
from oat.evaluate.sweep import batch_generator, subset_indices

CHANCE_MARGIN = 0.10
MIN_NONZERO_GRAD = 0.95
PGD_NAMES = ("pgd20", "pgd100-r5", "cw-pgd")


class ChecksFailed(OatError):
    """An evaluation check failed (the results were still written)."""


def tolerance(n: int) -> float:
    """How much RA may rise between two attacks before a check fails: 1 point + 2 examples."""
    return 0.01 + 2.0 / max(n, 1)


def _entry(check, lam, width, passed, value, limit, detail, n) -> dict:
    return {"check": check, "lam": lam, "width": width, "passed": bool(passed), "value": float(value),
            "limit": float(limit), "detail": detail, "n": int(n)}


@torch.no_grad()
def _acc(predict, x, y) -> torch.Tensor:
    return (predict(x).argmax(1) == y).float()


def run_checks(model, dataset, *, lams, widths, eps: float, norm: str = "linf", seed: int = 0, n: int = 64,
               device="cpu", rows: list[dict] | None = None) -> list[dict]:
    """Run every check for each (λ, width) of ``model``.

    Args:
        model: a :class:`~oat.models.ConditionedNet` (eval mode is set here).
        dataset: the split evaluated (uint8 :class:`~oat.data.ArrayDataset`).
        lams, widths: the bound models to check.
        eps: the evaluation radius.
        norm: ``"linf"`` or ``"l2"``.
        seed: seed of the subset and the attacks' starts.
        n: subset size.
        device: where to run.
        rows: the evaluation's own result rows (for the AutoAttack and PGD-100 comparisons).

    Returns:
        One entry per (check, λ, width): ``check``, ``lam``, ``width``, ``passed``, ``value``,
        ``limit``, ``detail``, ``n``.
    """
    model.eval()
    idx = subset_indices(len(dataset), n, seed)
    x = dataset.images[idx].to(device=device, dtype=torch.float32) / 255.0
    y = dataset.labels[idx].to(device)
    out = []
    with torch.autocast(torch.device(device).type, enabled=False):
        for width in widths:
            out += _attack_checks(model, x, y, lams, width, eps, norm, seed)
            for lam in lams:
                bound = model.at(lam, width)
                out.append(_gradient_check(bound, x, y, lam, width))
                out.append(_determinism_check(model, bound, x, lam, width))
    out += row_checks(rows or [])
    return [{**c, "width": _row_width(model, c["width"])} for c in out]


def _row_width(model, width):
    if width is None:
        return 1.0 if model.spec.slimmable else None
    return width


def _attack_checks(model, x, y, lams, width, eps, norm, seed) -> list[dict]:
    """The attack-based checks, all λ batched (each example repeated once per λ)."""
    k, b = len(lams), x.shape[0]
    xr, yr = x.repeat(k, *([1] * (x.dim() - 1))), y.repeat(k)
    predict = model.predictor(torch.tensor(lams, device=x.device).repeat_interleave(b), width, k * b)

    def ra(name, e, **kw):  # per-λ robust accuracy, (K,); raw: not ANDed with clean correctness
        gen = batch_generator(seed, f"check-{name}", 0, f"{e:.6g}")
        return _acc(predict, pgd(predict, xr, yr, eps=e, norm=norm, generator=gen, **kw), yr).view(k, b).mean(1)

    with torch.no_grad():
        logits = predict(xr)
    sa = (logits.argmax(1) == yr).float().view(k, b).mean(1)
    ra0 = ra("eps0", 0.0, steps=10)
    tol = tolerance(b)
    big = 0.5 if norm == "linf" else 0.5 * math.sqrt(x[0].numel())
    ra_big = ra("large", big, steps=20, loss="cw", random_start=False)
    num_classes = int(logits.shape[1])
    chance = 1.0 / num_classes + CHANCE_MARGIN
    grid = [f * eps for f in (0.25, 0.5, 1.0, 2.0)] if eps > 0 else []
    ras = [ra(f"grid{i}", e, steps=10) for i, e in enumerate(grid)]
    strong = ra("strong", eps, steps=40, restarts=2) if eps > 0 else None
    out = []
    for i, lam in enumerate(lams):
        out.append(_entry("ra-eps0-equals-sa", lam, width, ra0[i] == sa[i], abs(ra0[i] - sa[i]), 0.0,
                          f"RA(ε=0) {100 * ra0[i]:.2f}% vs SA {100 * sa[i]:.2f}%", b))
        out.append(_entry("ra-chance-at-large-eps", lam, width, ra_big[i] <= chance, ra_big[i], chance,
                          f"RA {100 * ra_big[i]:.2f}% at ε={big:.3g} (chance {100 / num_classes:.1f}%)", b))
        if grid:
            seq = [sa[i]] + [r[i] for r in ras]
            rise = max(float(seq[j + 1] - seq[j]) for j in range(len(seq) - 1))
            out.append(_entry("ra-nonincreasing-in-eps", lam, width, rise <= tol, rise, tol,
                              "RA % at ε=0," + ",".join(f"{e:.3g}" for e in grid) + ": "
                              + ", ".join(f"{100 * float(v):.1f}" for v in seq), b))
            gap = float(strong[i] - ras[2][i])
            out.append(_entry("more-steps-no-higher-ra", lam, width, gap <= tol, gap, tol,
                              f"PGD-40×2 {100 * strong[i]:.2f}% vs PGD-10 {100 * ras[2][i]:.2f}%", b))
    return out


def _gradient_check(bound, x, y, lam, width) -> dict:
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(cw_margin_loss(bound(xg), y).sum(), xg)
    finite = bool(torch.isfinite(grad).all())
    nonzero = float((grad.flatten(1).abs().amax(1) > 0).float().mean())
    return _entry("input-gradients-finite-nonzero", lam, width, finite and nonzero >= MIN_NONZERO_GRAD, nonzero,
                  MIN_NONZERO_GRAD, f"{'finite' if finite else 'NON-FINITE'}; {100 * nonzero:.1f}% of examples "
                  "have a non-zero input gradient", x.shape[0])


@torch.no_grad()
def _determinism_check(model, bound, x, lam, width) -> dict:
    a, b2 = bound(x), bound(x)
    # The sweep's path: λ given per example, the batch mixed with another λ's copies.
    other = model.spec.lams[0] if float(model.spec.lams[0]) != float(lam) else model.spec.lams[-1]
    lam_vec = torch.tensor([lam] * x.shape[0] + [other] * x.shape[0], device=x.device)
    mixed = model(torch.cat([x, x.flip(0)]), lam_vec, width)[: x.shape[0]]
    scale = 1.0 + float(a.abs().max())
    diff = max(float((a - b2).abs().max()), float((a - mixed).abs().max()))
    limit = 1e-4 * scale
    return _entry("deterministic-eval", lam, width, diff <= limit and not model.training, diff, limit,
                  f"max |Δlogit| {diff:.2e} between repeated and λ-batched forwards", x.shape[0])


def row_checks(rows: list[dict]) -> list[dict]:
    """Comparisons between the evaluation's own attacks on the full evaluated set."""
    out = []
    by = {}
    for r in rows:
        by.setdefault((r["lam"], r["width"]), {})[r["attack"]] = r
    for (lam, width), att in by.items():
        if "pgd20" in att and "pgd100-r5" in att:
            strong, weak = att["pgd100-r5"], att["pgd20"]
            gap, tol = strong["ra"] - weak["ra"], tolerance(strong["n"])
            out.append(_entry("more-steps-no-higher-ra", lam, width, gap <= tol, gap, tol,
                              f"pgd100-r5 {100 * strong['ra']:.2f}% vs pgd20 {100 * weak['ra']:.2f}%", strong["n"]))
        pgds = [att[a] for a in PGD_NAMES if a in att]
        if "autoattack" in att and pgds:
            aa, best = att["autoattack"], min(pgds, key=lambda r: r["ra"])
            gap, tol = aa["ra"] - best["ra"], tolerance(aa["n"])
            out.append(_entry("autoattack-le-pgd", lam, width, gap <= tol, gap, tol,
                              f"autoattack {100 * aa['ra']:.2f}% vs {best['attack']} {100 * best['ra']:.2f}%", aa["n"]))
    return out


def failed(checks: list[dict]) -> list[dict]:
    return [c for c in checks if not c["passed"]]


def summary(checks: list[dict]) -> str:
    """One line naming the failed checks (or saying all passed)."""
    bad = failed(checks)
    if not bad:
        return f"all {len(checks)} evaluation checks passed"
    names = {}
    for c in bad:
        w = "" if c["width"] is None else f", w={c['width']:g}"
        names.setdefault(c["check"], []).append(f"λ={c['lam']:g}{w}")
    return f"{len(bad)} of {len(checks)} evaluation checks failed: " + "; ".join(
        f"{k} ({', '.join(v)})" for k, v in names.items())
