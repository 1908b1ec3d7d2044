"""``RUN/results.json``: one model's rows, merged by key and written atomically.

Top level: ``objective``, ``model``, ``data``, ``eps``, ``seed``, ``rows``. Each row:
``lam``, ``width`` (null when the model is not slimmable), ``split``, ``attack``, ``eps``,
``sa``, ``ra``, ``n`` (accuracies as fractions). A new evaluation replaces the rows with
the same (λ, width, split, attack, eps) and keeps the others.
"""

from __future__ import annotations

import json
from pathlib import Path

from oat.errors import OatError
from oat.train.checkpoint import atomic_write_text

ROW_KEY = ("lam", "width", "split", "attack", "eps")


def _key(row: dict) -> tuple:
    return tuple(round(row[k], 9) if isinstance(row[k], float) else row[k] for k in ROW_KEY)


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


def merge_results(run, header: dict, rows: list[dict]) -> dict:
    """Merge ``rows`` into ``RUN/results.json`` (replacing rows with the same key)."""
    doc = read_results(run)
    merged = {_key(r): r for r in doc["rows"]}
    for r in rows:
        merged[_key(r)] = r
    doc.update(header)
    doc["rows"] = sorted(merged.values(), key=lambda r: (r["split"], r["attack"], -(r["width"] or 1.0), r["lam"]))
    atomic_write_text(Path(run) / "results.json", json.dumps(doc, indent=1))
    return doc


def select_rows(doc: dict, split: str | None = None, attack: str | None = None) -> list[dict]:
    """Rows of one split (default: test if any, else val) and optionally one attack."""
    rows = doc.get("rows", [])
    if split is None:
        split = "test" if any(r["split"] == "test" for r in rows) else "val"
    return [r for r in rows if r["split"] == split and (attack is None or r["attack"] == attack)]
