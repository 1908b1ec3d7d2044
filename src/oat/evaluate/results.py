"""``RUN/results.json`` and the per-example CSVs: one model's results, merged by key, written atomically.

Top level: ``objective``, ``model``, ``data``, ``eps``, ``seed``, ``rows``, ``checks``. Each
row: ``lam``, ``width`` (null when the model is not slimmable), ``split``, ``attack``,
``eps``, ``norm``, ``sa``, ``ra``, ``n`` (accuracies as fractions). A new evaluation
replaces the rows with the same (λ, width, split, attack, ε, norm) and keeps the others.

``RUN/eval/<split>-per-example.csv`` holds, for every row, the outcome of each example
(``index`` in the split, ``label``, ``lam``, ``width``, ``norm``, ``eps``, ``attack``,
``correct``; ``attack`` ``clean`` gives SA), so every number in results.json can be
recomputed: RA is the mean of ``correct`` over a row's key.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from oat.errors import OatError
from oat.train.checkpoint import atomic_write_text

ROW_KEY = ("lam", "width", "split", "attack", "eps", "norm")
CHECK_KEY = ("split", "lam", "width", "check", "eps", "norm")
CSV_FIELDS = ("index", "label", "lam", "width", "norm", "eps", "attack", "correct")


def _norm_value(v):
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


def merge_results(run, header: dict, rows: list[dict], checks: list[dict] | None = None) -> dict:
    """Merge ``rows`` (and ``checks``) into ``RUN/results.json``, replacing entries with the same key."""
    doc = read_results(run)
    merged = {_key(r): r for r in doc["rows"]}
    for r in rows:
        merged[_key(r)] = r
    doc.update(header)
    doc["rows"] = sorted(merged.values(), key=lambda r: (r["split"], r["attack"], -(r["width"] or 1.0), r["lam"]))
    if checks:
        old = {_key(c, CHECK_KEY): c for c in doc.get("checks", [])}
        for c in checks:
            old[_key(c, CHECK_KEY)] = c
        doc["checks"] = sorted(old.values(), key=lambda c: (c["split"], -(c["width"] or 1.0), c["lam"], c["check"]))
    atomic_write_text(Path(run) / "results.json", json.dumps(doc, indent=1))
    return doc


def select_rows(doc: dict, split: str | None = None, attack: str | None = None) -> list[dict]:
    """Rows of one split (default: test if any, else val) and optionally one attack."""
    rows = doc.get("rows", [])
    if split is None:
        split = "test" if any(r["split"] == "test" for r in rows) else "val"
    return [r for r in rows if r["split"] == split and (attack is None or r["attack"] == attack)]


def per_example_path(run, split: str) -> Path:
    return Path(run) / "eval" / f"{split}-per-example.csv"


def _csv_key(rec: dict) -> tuple:
    width = rec["width"]
    return (round(float(rec["lam"]), 9), None if width in ("", None) else round(float(width), 9), rec["attack"],
            round(float(rec["eps"]), 9), rec["norm"])


def _keep(rec: dict, new: dict, fresh_clean: set) -> bool:
    """Whether an existing CSV record survives a merge (see :func:`write_per_example`)."""
    key = _csv_key(rec)
    if key not in new:
        return True
    return rec["attack"] == "clean" and (key, int(rec["index"])) not in fresh_clean


def write_per_example(run, split: str, items, indices, labels) -> Path:
    """Merge per-example outcomes into ``RUN/eval/<split>-per-example.csv`` (atomically).

    Args:
        run: run folder.
        split: ``"val"`` or ``"test"``.
        items: ``(row, correct (n,), clean (n,))`` from :func:`oat.evaluate.sweep.per_example`;
            ``clean`` becomes the ``clean`` attack's records (SA), once per (λ, width).
        indices: the examples' indices in the split; labels: their labels.

    Returns:
        The CSV's path.
    """
    path = per_example_path(run, split)
    idx, lab = [int(i) for i in indices], [int(v) for v in labels]
    new: dict[tuple, list[dict]] = {}
    for row, correct, clean in items:
        base = {"lam": row["lam"], "width": "" if row["width"] is None else row["width"], "norm": row["norm"],
                "eps": row["eps"]}
        for attack, corr in ((row["attack"], correct), ("clean", clean)):
            recs = [{"index": i, "label": v, **base, "attack": attack, "correct": int(ok)}
                    for i, v, ok in zip(idx, lab, corr.tolist())]
            new.setdefault(_csv_key(recs[0]) if recs else (row["lam"], attack), recs)
    # An attack's records are replaced as a whole (its row is replaced too); clean correctness
    # does not depend on the call, so clean records are merged per example: an AutoAttack call on a
    # 200-image subset must not drop the clean records that a 10k-image PGD row's SA came from.
    fresh_clean = {(k, int(r["index"])) for k, recs in new.items() if k[2] == "clean" for r in recs}
    old = []
    if path.exists():
        with open(path, newline="") as f:
            old = [r for r in csv.DictReader(f) if _keep(r, new, fresh_clean)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
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
