"""Evaluate a model on λ × width × attack (OAT Sec. 4: SA and RA at every λ of the set).

All λ values of a sweep go through the model together: each example is repeated once per
λ with a per-example λ, so K values cost one pass over the data per attack, not K
(in eval mode BN uses running statistics, so an example's result does not depend on its
batch-mates). Attacks that are not batchable (AutoAttack) run λ by λ on ``model.at``.
Evaluation runs in fp32: no autocast in any evaluation attack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from oat.attacks.registry import BATCHABLE, get_attack


@dataclass
class SweepResult:
    """Per-example outcome of a sweep.

    Attributes:
        indices: the evaluated example indices in the split (``(n,)``).
        clean: ``{(lam, width): bool (n,)}`` correct on clean inputs.
        adv: ``{(lam, width, attack): bool (n,)}`` correct under the attack.
    """

    indices: torch.Tensor
    clean: dict = field(default_factory=dict)
    adv: dict = field(default_factory=dict)


def subset_indices(n: int, subset: int | None, seed: int = 0) -> torch.Tensor:
    """All ``n`` indices, or a seeded sorted choice of ``subset`` of them."""
    if subset is None or subset >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:subset].sort().values


def _batches(dataset, indices: torch.Tensor, size: int, device):
    for i in range(0, len(indices), size):
        idx = indices[i: i + size]
        x = dataset.images[idx].to(device=device, dtype=torch.float32) / 255.0
        yield x, dataset.labels[idx].to(device)


@torch.no_grad()
def _correct(predict, x, y) -> torch.Tensor:
    return (predict(x).argmax(1) == y).cpu()


def sweep(model, dataset, *, lams, widths, attacks, eps: float, batch_size: int = 512, device="cpu",
          seed: int = 0, subset: int | None = None, progress: bool = False) -> SweepResult:
    """Clean and adversarial correctness of ``model`` for every (λ, width, attack).

    Args:
        model: a :class:`~oat.models.ConditionedNet`.
        dataset: an :class:`~oat.data.ArrayDataset` (uint8 images).
        lams: λ values (each accepted by the model).
        widths: width multipliers (``None`` = full width).
        attacks: names from :mod:`oat.attacks.registry`.
        eps: attack radius in pixel units.
        batch_size: examples per forward pass (all λ of a chunk together).
        device: evaluation device.
        seed: seed of the subset choice and of the attacks' random starts.
        subset: evaluate a seeded subset of this many examples.
        progress: show a progress bar.
    """
    model.eval()
    lams = [model.spec.check_lam(v) for v in lams]
    result = SweepResult(indices=subset_indices(len(dataset), subset, seed))
    k = len(lams)
    chunk = max(1, batch_size // k)
    lam_vec = torch.tensor(lams, device=device)
    total = len(widths) * len(attacks) * len(result.indices)
    bar = tqdm(total=total, disable=not progress, desc="evaluate", leave=False, dynamic_ncols=True)
    with torch.autocast(torch.device(device).type, enabled=False):
        for width in widths:
            for name in attacks:
                attack, gen = get_attack(name), torch.Generator().manual_seed(seed)
                batched = name in BATCHABLE
                parts_c, parts_a = [], []
                for x, y in _batches(dataset, result.indices, chunk if batched else batch_size, device):
                    c, a = (_run_batched if batched else _run_per_lam)(
                        model, attack, x, y, lams, lam_vec, width, eps, gen)
                    parts_c.append(c)
                    parts_a.append(a)
                    bar.update(len(y))
                clean, adv = torch.cat(parts_c, 1), torch.cat(parts_a, 1)
                for i, lam in enumerate(lams):
                    result.clean.setdefault((lam, width), clean[i])
                    result.adv[(lam, width, name)] = adv[i]
    bar.close()
    return result


def _run_batched(model, attack, x, y, lams, lam_vec, width, eps, gen):
    k, b = len(lams), x.shape[0]
    xr, yr = x.repeat(k, *([1] * (x.dim() - 1))), y.repeat(k)
    predict = model.predictor(lam_vec.repeat_interleave(b), width, k * b)
    clean = _correct(predict, xr, yr)
    x_adv = attack(predict, xr, yr, eps=eps, generator=gen)
    return clean.view(k, b), _correct(predict, x_adv, yr).view(k, b)


def _run_per_lam(model, attack, x, y, lams, lam_vec, width, eps, gen):
    cs, advs = [], []
    for lam in lams:
        bound = model.at(lam, width)
        cs.append(_correct(bound, x, y))
        x_adv = attack(bound, x, y, eps=eps, generator=gen)
        advs.append(_correct(bound, x_adv, y))
    return torch.stack(cs), torch.stack(advs)


def to_rows(result: SweepResult, *, eps: float, split: str, slimmable: bool) -> list[dict]:
    """results.json rows: one per (λ, width, attack), plus ``worst`` over several attacks."""
    rows = []
    keys = sorted({(lam, w) for (lam, w, _) in result.adv}, key=lambda t: (-(t[1] or 1.0), t[0]))
    for lam, w in keys:
        clean = result.clean[(lam, w)]
        names = [a for (l2, w2, a) in result.adv if (l2, w2) == (lam, w)]
        per = {a: result.adv[(lam, w, a)] for a in names}
        if len(names) > 1:
            per["worst"] = torch.stack([result.adv[(lam, w, a)] for a in names]).all(0)
        for a, corr in per.items():
            rows.append({"lam": lam, "width": (1.0 if w is None else w) if slimmable else None,
                         "split": split, "attack": a, "eps": eps, "sa": float(clean.float().mean()),
                         "ra": float(corr.float().mean()), "n": int(corr.numel())})
    return rows
