"""``RUN/results.json`` and the per-example CSVs: one model's results, merged by key, written atomically.

Top level: ``objective``, ``model``, ``data``, ``eps``, ``seed``, ``rows``, ``checks``. Each
row: ``lam``, ``width`` (null when the model is not slimmable), ``split``, ``attack``,
``eps``, ``norm``, ``sa``, ``ra``, ``n`` (accuracies as fractions), and its provenance
(``checkpoint``, ``checkpoint_sha256``, ``subset``, ``subset_seed``, ``attack_settings``; see
:mod:`oat.evaluate.provenance`). A new evaluation replaces only the rows with the same key,
all of these but the numbers: rows of another checkpoint, subset, seed or ε are kept.
``replace=True`` also drops the rows of the same checkpoint and setting at other subsets
(``oat evaluate --replace``: a smaller subset may then supersede a larger one).

``RUN/eval/<split>-per-example.csv`` holds, for every row, the outcome of each example
(``index`` in the split, ``label``, ``lam``, ``width``, ``norm``, ``eps``, ``attack``,
``correct``; ``attack`` ``clean`` gives SA) and its provenance (``checkpoint``,
``checkpoint_sha256``, ``subset``, ``subset_seed``), so every number in results.json can be
recomputed: RA is the mean of ``correct`` over a row's key. Like the rows, records of
another checkpoint, subset or seed are kept; the file never shrinks unless ``replace``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from oat.checkpoint import atomic_write_text
from oat.errors import OatError

SETTING = ("lam", "width", "split", "attack", "eps", "norm", "checkpoint_sha256")
ROW_KEY = (*SETTING, "checkpoint", "subset", "subset_seed", "attack_settings")
CHECK_KEY = ("split", "lam", "width", "check", "eps", "norm", "checkpoint_sha256")
CSV_PROVENANCE = ("checkpoint", "checkpoint_sha256", "subset", "subset_seed")
CSV_FIELDS = ("index", "label", "lam", "width", "norm", "eps", "attack", "correct", *CSV_PROVENANCE)


# Attacks from strongest to weakest: ``worst`` (per example, over every attack run) first. The
# report's headline attack and the operating-point choice both use this one order.
STRENGTH = ("worst", "autoattack", "pgd100-r5", "pgd20", "cw-pgd")


def strongest_attack(rows: list[dict]) -> str | None:
    """The strongest attack among ``rows`` (see :data:`STRENGTH`; then by name; ``clean`` last)."""
    attacks = {r["attack"] for r in rows}
    for a in STRENGTH:
        if a in attacks:
            return a
    named = sorted(attacks - {"clean"})
    return named[0] if named else ("clean" if attacks else None)


def pct(v) -> str:
    """An accuracy fraction as a percentage with two decimals (``–`` for none)."""
    return "–" if v is None else f"{100 * v:.2f}"


def width_of(row: dict) -> float:
    """A row's width, 1 for a model that is not slimmable."""
    return 1.0 if row.get("width") is None else float(row["width"])


def _norm_value(v):
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return round(v, 9) if isinstance(v, float) else v


def _key(row: dict, fields=ROW_KEY) -> tuple:
    # Rows written before ``norm`` existed were all L∞.
    return tuple(_norm_value(row.get(k, "linf" if k == "norm" else None)) for k in fields)


def read_results(run) -> dict:
    """The run's results document, or an empty one."""
    f = Path(run) / "results.json"
    if not f.exists():
        return {"rows": []}
    try:
        doc = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OatError(f"{f} is corrupt (not valid JSON); move it aside to re-evaluate") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise OatError(f"{f} is not an oat results file (no 'rows' list)")
    return doc


def merge_results(run, header: dict, rows: list[dict], checks: list[dict] | None = None, *,
                  replace: bool = False) -> dict:
    """Merge ``rows`` (and ``checks``) into ``RUN/results.json``; entries with the same key are replaced.

    ``replace``: also drop rows of the same checkpoint and setting (λ, width, split, attack,
    ε, norm) at other subsets or seeds. Without it no other row is ever touched.
    """
    doc = read_results(run)
    drop = {_key(r, SETTING) for r in rows} if replace else set()
    merged = {_key(r): r for r in doc["rows"] if _key(r, SETTING) not in drop}
    for r in rows:
        merged[_key(r)] = r
    doc.update(header)
    doc["rows"] = sorted(merged.values(), key=_row_order)
    if checks:
        old = {_key(c, CHECK_KEY): c for c in doc.get("checks", [])}
        for c in checks:
            old[_key(c, CHECK_KEY)] = c
        doc["checks"] = sorted(old.values(), key=lambda c: (c["split"], -(c["width"] or 1.0), c["lam"], c["check"]))
    atomic_write_text(Path(run) / "results.json", json.dumps(doc, indent=1, allow_nan=False))
    return doc


def _row_order(r: dict) -> tuple:
    return (r["split"], r["attack"], -(r["width"] or 1.0), r["lam"], r["eps"], str(r.get("checkpoint") or ""),
            -r["n"])


def larger_kept(doc: dict, rows: list[dict]) -> list[dict]:
    """Rows in ``doc`` of the same checkpoint and setting as one of ``rows`` with a larger n."""
    n = {}
    for r in rows:
        n[_key(r, SETTING)] = min(n.get(_key(r, SETTING), r["n"]), r["n"])
    return [r for r in doc["rows"] if _key(r, SETTING) in n and r["n"] > n[_key(r, SETTING)]]


def per_example_path(run, split: str) -> Path:
    return Path(run) / "eval" / f"{split}-per-example.csv"


def _csv_text(v) -> str:
    return "" if v is None else str(v)


def _csv_setting(rec: dict) -> tuple:
    width = rec["width"]
    return (round(float(rec["lam"]), 9), None if width in ("", None) else round(float(width), 9), rec["attack"],
            round(float(rec["eps"]), 9), rec["norm"], rec.get("checkpoint_sha256") or "")


def _csv_key(rec: dict) -> tuple:
    # Records written before provenance columns existed read back as "" (unknown) and are kept.
    return (*_csv_setting(rec), *(rec.get(k) or "" for k in CSV_PROVENANCE))


def _records(items, idx: list[int], lab: list[int]) -> dict[tuple, list[dict]]:
    """``{csv key: records}`` of one evaluation; the clean records once per (λ, width)."""
    new: dict[tuple, list[dict]] = {}
    for row, correct, clean in items:
        base = {"lam": row["lam"], "width": "" if row["width"] is None else row["width"], "norm": row["norm"],
                "eps": row["eps"], **{k: _csv_text(row.get(k)) for k in CSV_PROVENANCE}}
        if row.get("checkpoint_sha256") is not None and row.get("subset") is None:
            base["subset"] = "all"
        for attack, corr in ((row["attack"], correct), ("clean", clean)):
            recs = [{"index": i, "label": v, **base, "attack": attack, "correct": int(ok)}
                    for i, v, ok in zip(idx, lab, corr.tolist())]
            if recs:
                new.setdefault(_csv_key(recs[0]), recs)
    return new


def write_per_example(run, split: str, items, indices, labels, *, replace: bool = False) -> Path:
    """Merge per-example outcomes into ``RUN/eval/<split>-per-example.csv`` (atomically).

    Args:
        run: run folder.
        split: ``"val"`` or ``"test"``.
        items: ``(row, correct (n,), clean (n,))`` from :func:`oat.evaluate.sweep.per_example`,
            rows with their provenance; ``clean`` becomes the ``clean`` attack's records (SA).
        indices: the examples' indices in the split; labels: their labels.
        replace: also drop the attack records of the same checkpoint and setting at other
            subsets or seeds (clean records of other subsets stay: other rows' SA needs them).

    Returns:
        The CSV's path.
    """
    path = per_example_path(run, split)
    new = _records(items, [int(i) for i in indices], [int(v) for v in labels])
    drop = {k[:6] for k in new if k[2] != "clean"} if replace else set()
    old = []
    if path.exists():
        with open(path, newline="") as f:
            old = [r for r in csv.DictReader(f) if _csv_key(r) not in new and _csv_setting(r) not in drop]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n", restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(old)
    for recs in new.values():
        writer.writerows(recs)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buf.getvalue())
    return path


def read_per_example(run, split: str) -> list[dict]:
    """The per-example records of a split (strings as written; see :data:`CSV_FIELDS`)."""
    with open(per_example_path(run, split), newline="") as f:
        return list(csv.DictReader(f))
