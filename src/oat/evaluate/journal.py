"""The record of finished evaluation batches, so an interrupted ``oat evaluate`` resumes.

One append-only JSON-lines file per evaluation setting (split, norm, ε, subset, seed,
batch size, checkpoint): each line is one finished (λ, width, attack, batch) with its
per-example clean and adversarial correctness. A restarted evaluation reads it, skips the
batches it holds and computes the rest; because every batch's attack RNG is derived from
(seed, attack, batch) rather than from a running generator, the resumed numbers equal an
uninterrupted run's. A line cut short by a kill is ignored (that batch is simply redone).

A journal is a cache and is never trusted: its first line names the checkpoint's weights
hash, and every record carries a checksum of (checkpoint, batch key, outcomes). A journal
of another checkpoint, one without a header (older format), or one with a record whose
checksum or length does not match (hand-edited) is set aside as ``<name>.rejected`` with
one log line, and every batch is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch


def checkpoint_id(ckpt: Path) -> str:
    """A short content hash of the checkpoint's weights (a retrained run gets a new journal)."""
    h = hashlib.sha256()
    with open(Path(ckpt) / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:12]


def journal_name(*, split: str, norm: str, eps: float, subset, seed: int, batch_size: int, ckpt: str) -> str:
    n = "all" if subset is None else str(int(subset))
    return f"{split}-{norm}-eps{eps:.6g}-n{n}-seed{seed}-bs{batch_size}-{ckpt}.jsonl"


def _bits(t: torch.Tensor) -> str:
    return "".join("1" if v else "0" for v in t.tolist())


def _unbits(s: str) -> torch.Tensor:
    return torch.tensor([c == "1" for c in s], dtype=torch.bool)


def record_key(plan: str, lam: float, width, attack: str, start: int, count: int) -> str:
    """The key of one (λ, width, attack, batch); ``plan`` names how the batch was attacked."""
    return json.dumps([plan, round(float(lam), 9), width, attack, int(start), int(count)])


def _checksum(checkpoint: str, key: str, clean: str, adv: str) -> str:
    return hashlib.sha256(f"{checkpoint}|{key}|{clean}|{adv}".encode()).hexdigest()[:16]


def _valid(rec: dict, checkpoint: str) -> bool:
    """A record whose outcomes have its batch's length and whose checksum matches."""
    clean, adv, key = rec["clean"], rec["adv"], rec["k"]
    count = json.loads(key)[-1]
    return (isinstance(clean, str) and isinstance(adv, str) and len(clean) == len(adv) == count
            and set(clean + adv) <= {"0", "1"} and rec.get("sum") == _checksum(checkpoint, key, clean, adv))


class Journal:
    """Finished batches of one evaluation setting; ``path=None`` keeps nothing (no resume).

    Args:
        path: the journal file.
        checkpoint: the weights hash of the evaluated checkpoint (records are bound to it).
        log: where the one line about a rejected journal goes.
    """

    def __init__(self, path: Path | None = None, checkpoint: str = "", log=print):
        self.path = Path(path) if path is not None else None
        self.checkpoint = str(checkpoint)
        self.done: dict[str, tuple[str, str]] = {}
        self._torn = False  # the file ends inside a line (killed mid-write): start a new one
        if self.path is not None and self.path.exists():
            problem = self._read(self.path.read_text())
            if problem:
                self.done.clear()
                self._torn = False
                rejected = self.path.with_name(self.path.name + ".rejected")
                os.replace(self.path, rejected)
                log(f"evaluation journal {self.path.name} {problem}: set aside as {rejected.name}; "
                    "recomputing every batch")

    def _read(self, text: str) -> str | None:
        """Load the records; returns why the journal cannot be trusted, or None."""
        self._torn = bool(text) and not text.endswith("\n")
        lines = text.splitlines()
        try:
            head = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            head = {}
        if not isinstance(head, dict) or "journal" not in head:
            return "has no header (older format or not a journal)" if lines else None
        if head.get("checkpoint_sha256") != self.checkpoint:
            return "belongs to another checkpoint"
        for line in lines[1:]:
            try:
                rec = json.loads(line)
                ok = _valid(rec, self.checkpoint)
            except (json.JSONDecodeError, KeyError, TypeError, IndexError, ValueError):
                continue  # a line cut short by a kill: redo that batch
            if not ok:
                return "holds a record that fails its checksum (edited?)"
            self.done[rec["k"]] = (rec["clean"], rec["adv"])
        return None

    def get(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        rec = self.done.get(key)
        return None if rec is None else (_unbits(rec[0]), _unbits(rec[1]))

    def put(self, items: list[tuple[str, torch.Tensor, torch.Tensor]]) -> None:
        """Record finished batches: appended, flushed and fsynced before the next batch starts."""
        lines = []
        for key, clean, adv in items:
            rec = (_bits(clean), _bits(adv))
            self.done[key] = rec
            lines.append(json.dumps({"k": key, "clean": rec[0], "adv": rec[1],
                                     "sum": _checksum(self.checkpoint, key, *rec)}))
        if self.path is None or not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists() or self.path.stat().st_size == 0:
            lines.insert(0, json.dumps({"journal": 2, "checkpoint_sha256": self.checkpoint}))
        with open(self.path, "a") as f:
            f.write(("\n" if self._torn else "") + "\n".join(lines) + "\n")
            self._torn = False
            f.flush()
            os.fsync(f.fileno())
