"""The record of finished evaluation batches, so an interrupted ``oat evaluate`` resumes.

One append-only JSON-lines file per evaluation setting (split, norm, ε, subset, seed,
batch size, checkpoint): each line is one finished (λ, width, attack, batch) with its
per-example clean and adversarial correctness. A restarted evaluation reads it, skips the
batches it holds and computes the rest; because every batch's attack RNG is derived from
(seed, attack, batch) rather than from a running generator, the resumed numbers equal an
uninterrupted run's. A line cut short by a kill is ignored (that batch is simply redone).
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


class Journal:
    """Finished batches of one evaluation setting; ``path=None`` keeps nothing (no resume)."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else None
        self.done: dict[str, tuple[str, str]] = {}
        self._torn = False  # the file ends inside a line (killed mid-write): start a new one
        if self.path is not None and self.path.exists():
            text = self.path.read_text()
            self._torn = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                    self.done[rec["k"]] = (rec["clean"], rec["adv"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by a kill: redo that batch

    def get(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        rec = self.done.get(key)
        return None if rec is None else (_unbits(rec[0]), _unbits(rec[1]))

    def put(self, items: list[tuple[str, torch.Tensor, torch.Tensor]]) -> None:
        """Record finished batches: appended, flushed and fsynced before the next batch starts."""
        lines = []
        for key, clean, adv in items:
            rec = (_bits(clean), _bits(adv))
            self.done[key] = rec
            lines.append(json.dumps({"k": key, "clean": rec[0], "adv": rec[1]}))
        if self.path is None or not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(("\n" if self._torn else "") + "\n".join(lines) + "\n")
            self._torn = False
            f.flush()
            os.fsync(f.fileno())
