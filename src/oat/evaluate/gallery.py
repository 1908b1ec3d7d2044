"""Example images for ``report.html``: a few images of the evaluated split, their adversarial
versions at each (λ, width) and the model's predictions on both.

``oat evaluate`` computes them right after its sweep (the model and the split are loaded then) and
keeps them in ``RUN/eval/<split>-gallery.json``; the report only reads that file, so ``oat report``
needs neither the model nor the data. The images are 8-bit PNG data URIs, and the predictions are
those of the images as stored: the perturbation is truncated to whole 8-bit steps towards the clean
image (which stays inside the ε-ball, L∞ or L2) and the model classifies that image, so the page
shows what the model saw. The attack is the plan's strongest gradient attack (PGD-20 when the plan
has none: AutoAttack alone is too slow to run once more per λ for a picture).
"""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib
from pathlib import Path

import torch

from oat.attacks.registry import get_attack
from oat.checkpoint import atomic_write_text
from oat.evaluate.results import STRENGTH
from oat.evaluate.sweep import batch_generator

FORMAT, FORMAT_VERSION = "oat-gallery", 1
PNG_URI = "data:image/png;base64,"
_URI_RE = re.compile(r"data:image/png;base64,[A-Za-z0-9+/]*={0,2}")
GRADIENT_ATTACKS = ("pgd100-r5", "pgd20", "cw-pgd", "fgsm")  # strongest first, as STRENGTH orders them
FALLBACK_ATTACK = "pgd20"


def gallery_path(run, split: str) -> Path:
    return Path(run) / "eval" / f"{split}-gallery.json"


def gallery_attack(attacks) -> str:
    """The plan's strongest gradient attack (:data:`STRENGTH` order), else :data:`FALLBACK_ATTACK`."""
    order = [a for a in STRENGTH if a in GRADIENT_ATTACKS] + [a for a in GRADIENT_ATTACKS if a not in STRENGTH]
    return next((a for a in order if a in set(attacks)), FALLBACK_ATTACK)


def png_uri(img: torch.Tensor) -> str:
    """A ``uint8`` image ``(C, H, W)``, C = 1 or 3, as a PNG data URI (standard library only)."""
    c, h, w = img.shape
    color = {1: 0, 3: 2}[c]  # PNG colour types: grey, RGB
    pixels = img.permute(1, 2, 0).contiguous().numpy()
    raw = b"".join(b"\x00" + pixels[r].tobytes() for r in range(h))  # filter type 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    return PNG_URI + base64.b64encode(png).decode("ascii")


def choose_examples(indices: torch.Tensor, labels: torch.Tensor, n: int) -> list[int]:
    """Up to ``n`` of the evaluated examples, one per class first (in index order), then the next ones."""
    picked, seen = [], set()
    for i, y in zip(indices.tolist(), labels.tolist()):
        if y not in seen and len(picked) < n:
            picked.append(i)
            seen.add(y)
    rest = [i for i in indices.tolist() if i not in set(picked)]
    return sorted(picked + rest[: n - len(picked)])


def to_8bit(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """``x_adv`` as uint8, its perturbation truncated towards ``x`` (whole 8-bit steps; ``x`` is 8-bit)."""
    base = torch.round(x * 255)
    return (base + torch.trunc((x_adv - x) * 255)).clamp(0, 255).to(torch.uint8)


def make_gallery(model, dataset, *, indices, lams, widths, attacks, eps: float, norm: str, seed: int, device,
                 n: int) -> dict:
    """Images, adversarial versions and predictions at every (λ, width) of the sweep.

    Args:
        model: the evaluated :class:`~oat.models.ConditionedNet` (eval mode).
        dataset: the evaluated split; ``indices``: the evaluated examples (the images come from them).
        lams, widths: the sweep's λ values and widths (``None``: not slimmable).
        attacks: the plan's attacks (see :func:`gallery_attack`).
        eps, norm, seed: the sweep's radius, threat model and seed.
        n: how many images.
    """
    labels_all = dataset.labels[indices].cpu()
    idx = torch.tensor(choose_examples(indices.cpu(), labels_all, n), dtype=torch.long)
    x = dataset.images[idx].to(device=device, dtype=torch.float32) / 255.0
    y = dataset.labels[idx].to(device)
    attack = gallery_attack(attacks)
    entries = []
    with torch.autocast(torch.device(device).type, enabled=False):
        for width in widths:
            for lam in lams:
                bound = model.at(lam, width)
                gen = batch_generator(seed, attack, 0, f"gallery:{lam:.9g}:{width}")
                adv = to_8bit(x, get_attack(attack)(bound, x, y, eps=eps, generator=gen, norm=norm))
                with torch.no_grad():
                    clean_pred = bound(x).argmax(1).tolist()
                    adv_pred = bound(adv.float() / 255.0).argmax(1).tolist()
                entries.append({"lam": float(lam), "width": None if width is None else float(width),
                                "clean_pred": clean_pred, "adv_pred": adv_pred,
                                "adv": [png_uri(a) for a in adv.cpu()]})
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "attack": attack, "eps": float(eps), "norm": norm,
            "seed": int(seed), "indices": idx.tolist(), "labels": y.cpu().tolist(),
            "clean": [png_uri(img) for img in dataset.images[idx].cpu()], "entries": entries}


def _identity(doc: dict) -> tuple:
    return tuple(json.dumps(doc.get(k), sort_keys=True) for k in
                 ("split", "checkpoint_sha256", "attack", "eps", "norm", "seed", "indices"))


def write_gallery(run, split: str, doc: dict, *, checkpoint: str, sha: str) -> Path:
    """Store ``doc`` (:func:`make_gallery`) as ``RUN/eval/<split>-gallery.json``, atomically.

    An earlier gallery of the same checkpoint, images, attack and ε keeps its other (λ, width)
    entries (an evaluation of some λ adds to it); any other earlier gallery is replaced.
    """
    doc = {**doc, "split": split, "checkpoint": checkpoint, "checkpoint_sha256": sha}
    path = gallery_path(run, split)
    old = read_gallery(run, split)
    if isinstance(old, dict) and _identity(old) == _identity(doc):
        new_keys = {(e["lam"], e["width"]) for e in doc["entries"]}
        kept = [e for e in old["entries"] if (e["lam"], e["width"]) not in new_keys]
        doc["entries"] = sorted(kept + doc["entries"], key=lambda e: (-(e["width"] or 1.0), e["lam"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, separators=(",", ":")))
    return path


def _valid(doc) -> bool:
    """The shape the page relies on: images as PNG data URIs, one prediction per image per entry."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return False
    n = len(doc.get("labels") or [])
    uris = lambda v: isinstance(v, list) and len(v) == n and all(isinstance(u, str) and _URI_RE.fullmatch(u)
                                                                  for u in v)
    ints = lambda v: isinstance(v, list) and len(v) == n and all(type(p) is int for p in v)
    entries = doc.get("entries")
    return (n > 0 and ints(doc["labels"]) and uris(doc.get("clean")) and isinstance(entries, list) and bool(entries)
            and all(isinstance(e, dict) and isinstance(e.get("lam"), (int, float))
                    and (e.get("width") is None or isinstance(e["width"], (int, float)))
                    and ints(e.get("clean_pred")) and ints(e.get("adv_pred")) and uris(e.get("adv"))
                    for e in entries))


def read_gallery(run, split: str) -> dict | str | None:
    """The split's gallery; None when there is none; a one-line reason when the file is unusable."""
    path = gallery_path(run, split)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"{path.name} is not readable JSON"
    return doc if _valid(doc) else f"{path.name} is not an oat gallery file"
