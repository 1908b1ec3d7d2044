"""Where each result row came from, and which rows a report shows.

Every row of ``results.json`` names its checkpoint (the folder name and the SHA-256 of its
``model.safetensors``), split, subset (size, ``null`` for the whole split, and seed), ε, norm
and the attack's settings. Rows are keyed by all of it, so evaluating another checkpoint,
subset or ε adds rows and never replaces any. A report shows the rows of ONE checkpoint
(the run's newest by default), ONE ε and ONE norm, and for each (λ, width, attack) the row
with the largest n; :func:`current_rows` makes that choice and says what it chose.

Rows written before provenance was recorded lack these keys: they load, are kept, and
are treated as of an unknown checkpoint ("legacy").
"""

from __future__ import annotations

import hashlib
import math
import numbers
from pathlib import Path

from oat.errors import CheckpointError, ConfigError

PROVENANCE_KEYS = ("checkpoint", "checkpoint_sha256", "subset", "subset_seed", "attack_settings")
EPS_TOL = 1e-9

# What each named attack does (see oat.attacks.registry); part of a row's key, so rows of
# an attack whose settings change one day are not mistaken for the old ones.
_PGD = {"random_start": True, "step_size": "2.5*eps/steps", "keeps": "worst iterate"}
ATTACK_SETTINGS = {
    "clean": {},
    "fgsm": {"steps": 1, "step_size": "eps", "random_start": False},
    "pgd20": {"steps": 20, "restarts": 1, "loss": "ce", **_PGD},
    "pgd100-r5": {"steps": 100, "restarts": 5, "loss": "ce", **_PGD},
    "cw-pgd": {"steps": 30, "restarts": 1, "loss": "cw", **_PGD},
    "autoattack": {"version": "standard"},
    "apgd-ce": {"version": "custom", "attacks": ["apgd-ce"], "restarts": 1},
}


def check_eps(eps) -> float:
    """ε as a float, refused unless finite and in [0, 1] (pixel units)."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise ConfigError(f"ε must be a number in [0, 1]; got {eps!r}")
    value = float(eps)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"ε must be finite and in [0, 1] (pixel units, e.g. 8/255); got {eps!r}")
    return value


def checkpoint_sha256(ckpt) -> str:
    """The SHA-256 (hex) of a checkpoint's ``model.safetensors``: the identity of its weights."""
    h = hashlib.sha256()
    with open(Path(ckpt) / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def check_inside(run: Path, ckpt: Path) -> None:
    """Refuse a checkpoint that resolves outside its run folder and its ``checkpoints`` folder
    (e.g. a symlink to another run's checkpoint), so its rows are never filed under this run."""
    real, root = Path(ckpt).resolve(), Path(run).resolve()
    if real == root:
        raise CheckpointError(f"{ckpt} is a checkpoint folder outside a run (no RUN/checkpoints/ above it); "
                              "results are written into a run folder, never into a checkpoint")
    # A checkpoints folder that is itself a link (to a bigger disk) is a storage choice, kept;
    # one checkpoint folder linked in from elsewhere is another model.
    if root not in real.parents and real.parent != (Path(run) / "checkpoints").resolve():
        raise CheckpointError(f"{ckpt} resolves to {real}, outside the run folder {run}; its results would be "
                              "filed under the wrong run: evaluate the run it belongs to")


def newest_checkpoint(run) -> tuple[str, str] | None:
    """``(folder name, sha256)`` of the run's newest checkpoint, or None if it has none."""
    from oat.checkpoint import resolve_checkpoint

    try:
        ckpt = resolve_checkpoint(run)
        return ckpt.name, checkpoint_sha256(ckpt)
    except (CheckpointError, OSError):
        return None


def provenance(ckpt: Path, sha: str, *, subset, n_split: int, seed: int, attack: str) -> dict:
    """The provenance keys of one row (``subset`` null: the whole split)."""
    whole = subset is None or int(subset) >= n_split
    return {"checkpoint": Path(ckpt).name, "checkpoint_sha256": sha, "subset": None if whole else int(subset),
            "subset_seed": int(seed), "attack_settings": dict(ATTACK_SETTINGS.get(attack, {}))}


def _pick_checkpoint(rows: list[dict], checkpoint, newest) -> tuple[list[dict], str]:
    """Rows of one checkpoint: the one asked for, else the newest's, else legacy, else the last named."""
    if checkpoint is not None:
        got = [r for r in rows if checkpoint in (r.get("checkpoint"), r.get("checkpoint_sha256"))
               or (len(str(checkpoint)) >= 8 and str(r.get("checkpoint_sha256") or "").startswith(str(checkpoint)))]
        return got, f"checkpoint `{checkpoint}`"
    if newest is not None:
        got = [r for r in rows if r.get("checkpoint_sha256") == newest[1]]
        if got:
            return got, f"checkpoint `{newest[0]}` (sha256 `{newest[1][:12]}`, the run's newest)"
    legacy = [r for r in rows if r.get("checkpoint_sha256") is None]
    if legacy:
        return legacy, "checkpoint unknown (rows written before provenance was recorded)"
    last = max((r["checkpoint"], r["checkpoint_sha256"]) for r in rows) if rows else None
    if last is None:
        return [], "no checkpoint"
    got = [r for r in rows if (r["checkpoint"], r["checkpoint_sha256"]) == last]
    why = f", not the newest `{newest[0]}`, which has no rows here" if newest else ""
    return got, f"checkpoint `{last[0]}` (sha256 `{last[1][:12]}`{why})"


def _pick_eps(rows: list[dict], eps, run_eps) -> float | None:
    values = [r["eps"] for r in rows]
    if eps is not None:
        return float(eps)
    if run_eps is not None and any(abs(v - run_eps) < EPS_TOL for v in values):
        return float(run_eps)
    return max(set(values), key=lambda v: (sum(abs(u - v) < EPS_TOL for u in values), -v)) if values else None


def current_rows(doc: dict, split: str | None = None, *, eps=None, norm: str | None = None, checkpoint=None,
                 newest=None) -> tuple[list[dict], dict]:
    """The rows a report shows, and what was chosen.

    Args:
        doc: a results document (:func:`oat.evaluate.results.read_results`).
        split: ``"val"``/``"test"`` (default: test if it has rows, else val).
        eps: rows at this ε (default: the run's ε if it has rows, else the ε most rows have).
        norm: rows of this threat model (default: linf if present).
        checkpoint: a checkpoint folder name or sha256 (prefix of 8+); default: ``newest``'s
            rows, else legacy rows, else those of the checkpoint whose name sorts last.
        newest: ``(name, sha256)`` of the run's newest checkpoint (:func:`newest_checkpoint`).

    Returns:
        ``(rows, info)``: one row per (λ, width, attack), the largest n; ``info`` holds
        ``split``, ``eps``, ``norm``, ``checkpoint`` (a phrase for the report) and ``ns``.
    """
    rows = doc.get("rows", [])
    if split is None:
        split = "test" if any(r.get("split") == "test" for r in rows) else "val"
    rows = [r for r in rows if r.get("split") == split]
    rows, which = _pick_checkpoint(rows, checkpoint, newest)
    norms = {r.get("norm", "linf") for r in rows}
    norm = norm or ("linf" if "linf" in norms or not norms else sorted(norms)[0])
    rows = [r for r in rows if r.get("norm", "linf") == norm]
    eps = _pick_eps(rows, eps, doc.get("eps"))
    rows = [r for r in rows if eps is not None and abs(r["eps"] - eps) < EPS_TOL]
    best: dict[tuple, dict] = {}
    for r in rows:
        key = (round(r["lam"], 9), r.get("width"), r["attack"])
        if key not in best or r["n"] > best[key]["n"]:
            best[key] = r
    picked = list(best.values())
    return picked, {"split": split, "eps": eps, "norm": norm, "checkpoint": which,
                    "ns": sorted({r["n"] for r in picked})}


def describe_choice(info: dict) -> str:
    """One sentence for the report: which rows it shows."""
    ns = info["ns"]
    n = "–" if not ns else (f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]} (per row)")
    eps = "–" if info["eps"] is None else f"{info['eps']:.6g}"
    return (f"Rows shown: {info['checkpoint']}, split `{info['split']}`, ε = {eps} ({info['norm']}), the largest "
            f"n per λ and attack (n = {n}); rows of other checkpoints, ε or subsets are kept in results.json "
            "and listed under All rows.")
