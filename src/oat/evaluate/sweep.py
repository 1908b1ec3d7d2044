"""Evaluate a model on λ × width × attack (OAT Sec. 4: SA and RA at every λ of the set).

By default the sweep runs λ by λ on ``model.at``. With ``batch_lams=True`` all λ values go
through the model together instead: each example is repeated once per λ with a per-example
λ, so K values cost one pass over the data per attack, not K (in eval mode BN uses running
statistics, so an example's result does not depend on its batch-mates). But a batch mixing
λ = 0 and λ > 0 cannot use the folded single-branch BN + FiLM of ``model.at`` (it needs the
dual-BN gather/scatter), and that costs more than the passes it saves: the batched sweep was
measured slower on the CPU (``benchmarks/bench_sweep.py``) and on an H200 GPU for ResNet-34 and
small 32×32 networks (``gpu_suite.py``, ``bench_sweep.py``); it won only for a toy 8×8 CNN on the
GPU, where a pass is nearly free. The figures are in ``benchmarks/README.md``.
Both paths give the same per-example results for attacks without random starts (tested);
with random starts they draw different noise (their RNG streams are keyed by the plan).

Attacks that are not batchable (AutoAttack and its APGD-CE) attack ``model.predictor(λ,
width)`` rather than ``model.at``: FiLM's scale and shift computed once and BN + FiLM folded
into one affine map, the same function to float rounding, where ``model.at`` recomputes FiLM
and routes BN on each of AutoAttack's thousands of passes (Square alone makes 5,000 on few
examples). On the CPU that made standard AutoAttack 1.40× (digits) and 1.13× (Fashion-MNIST)
faster on small OAT models, with the same robust examples (``benchmarks/bench_autoattack.py``;
figures in ``benchmarks/README.md``). Clean and adversarial correctness are still judged on
``model.at``, as for every attack.

Evaluation runs in fp32 (autocast disabled): bf16/fp16 input gradients are coarse enough
to weaken PGD and inflate RA, and results must not depend on the device's AMP default.

An example counts as robust only if it is classified correctly both clean and under the
attack (the RobustBench convention), so RA ≤ SA always.

Every batch's attack RNG is derived from (seed, attack, batch start, λ set), not from a
running generator, and each finished batch can be recorded in a
:class:`~oat.evaluate.journal.Journal`: an interrupted sweep resumes exactly.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from oat.attacks.registry import BATCHABLE, REPORTS, get_attack
from oat.evaluate.journal import Journal, record_key


@dataclass
class SweepResult:
    """Per-example outcome of a sweep.

    Attributes:
        indices: the evaluated example indices in the split (``(n,)``).
        labels: their labels (``(n,)``).
        clean: ``{(lam, width): bool (n,)}`` correct on clean inputs.
        adv: ``{(lam, width, attack): bool (n,)}`` correct on clean inputs and under the attack.
    """

    indices: torch.Tensor
    labels: torch.Tensor | None = None
    clean: dict = field(default_factory=dict)
    adv: dict = field(default_factory=dict)


def subset_indices(n: int, subset: int | None, seed: int = 0) -> torch.Tensor:
    """All ``n`` indices, or a seeded sorted choice of ``subset`` of them."""
    if subset is None or subset >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:subset].sort().values


def batch_generator(seed: int, attack: str, start: int, plan: str) -> torch.Generator:
    """The attack RNG of one batch: a pure function of its identity (resume-exact)."""
    mix = zlib.crc32(f"{seed}|{attack}|{start}|{plan}".encode())
    return torch.Generator().manual_seed(seed * 1_000_003 + mix)


def _load(dataset, idx: torch.Tensor, device):
    x = dataset.images[idx].to(device=device, dtype=torch.float32) / 255.0
    return x, dataset.labels[idx].to(device)


@torch.no_grad()
def _correct(predict, x, y) -> torch.Tensor:
    return (predict(x).argmax(1) == y).cpu()


def sweep(model, dataset, *, lams, widths, attacks, eps: float, batch_size: int = 512, device="cpu",
          seed: int = 0, subset: int | None = None, progress: bool = False, norm: str = "linf",
          journal: Journal | None = None, batch_lams: bool | None = None, log=None) -> SweepResult:
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
        progress: show a progress bar; its count is of (example, λ) pairs, and while an attack
            that reports (AutoAttack) runs, its postfix says which component, batch and how many
            examples are still robust.
        norm: threat model, ``"linf"`` or ``"l2"``.
        journal: where finished batches are recorded and read back (resume).
        batch_lams: put all λ of a chunk in one batch (batchable attacks only); None or
            False: λ by λ, the faster path on every device measured (see the module notes).
        log: without a progress bar, where one line per finished component of a reporting
            attack goes (AutoAttack: four lines per λ and batch); None: nowhere.
    """
    model.eval()
    lams = [model.spec.check_lam(v) for v in lams]
    indices = subset_indices(len(dataset), subset, seed)
    result = SweepResult(indices=indices, labels=dataset.labels[indices].cpu())
    journal = journal if journal is not None else Journal(None)
    attacks = list(dict.fromkeys(attacks))
    batch_lams = bool(batch_lams)
    total = len(widths) * len(attacks) * len(indices) * len(lams)
    bar = tqdm(total=total, disable=not progress, desc="evaluate", leave=False, dynamic_ncols=True)
    job = dict(model=model, dataset=dataset, indices=indices, lams=lams, eps=eps, norm=norm, seed=seed,
               device=device, journal=journal, bar=bar, log=None if progress else log)
    with torch.autocast(torch.device(device).type, enabled=False):
        for width in widths:
            for name in attacks:
                run = _sweep_batched if batch_lams and name in BATCHABLE else _sweep_per_lam
                clean, adv = run(name=name, width=width, batch_size=batch_size, **job)
                for i, lam in enumerate(lams):
                    result.clean.setdefault((lam, width), clean[i])
                    result.adv[(lam, width, name)] = adv[i] & clean[i]
    bar.close()
    return result


def _sweep_batched(*, model, dataset, indices, lams, eps, norm, seed, device, journal, bar, log, name, width,
                   batch_size):
    """All λ of a chunk in one batch (each example repeated once per λ)."""
    k = len(lams)
    plan = "batched:" + ",".join(f"{v:.9g}" for v in lams)
    chunk = max(1, batch_size // k)
    lam_vec = torch.tensor(lams, device=device)
    parts_c, parts_a = [], []
    for start in range(0, len(indices), chunk):
        idx = indices[start: start + chunk]
        keys = [record_key(plan, lam, width, name, start, len(idx)) for lam in lams]
        got = [journal.get(key) for key in keys]
        if all(g is not None for g in got):
            c, a = torch.stack([g[0] for g in got]), torch.stack([g[1] for g in got])
        else:
            x, y = _load(dataset, idx, device)
            gen = batch_generator(seed, name, start, plan)
            c, a = _run_batched(model, get_attack(name), x, y, lam_vec, width, eps, norm, gen)
            journal.put([(key, c[i], a[i]) for i, key in enumerate(keys)])
        parts_c.append(c)
        parts_a.append(a)
        bar.update(len(idx) * k)
    return torch.cat(parts_c, 1), torch.cat(parts_a, 1)


def _sweep_per_lam(*, model, dataset, indices, lams, eps, norm, seed, device, journal, bar, log, name, width,
                   batch_size):
    """λ by λ on ``model.at(lam, width)``; attacks that are not batchable see ``model.predictor``."""
    cs, advs = [[] for _ in lams], [[] for _ in lams]
    for start in range(0, len(indices), batch_size):
        idx = indices[start: start + batch_size]
        xy = None
        for i, lam in enumerate(lams):
            key = record_key("per-lam", lam, width, name, start, len(idx))
            got = journal.get(key)
            if got is None:
                xy = xy or _load(dataset, idx, device)
                gen = batch_generator(seed, name, start, f"per-lam:{lam:.9g}:{width}")
                extra = {}
                if name in REPORTS and (not bar.disable or log is not None):
                    extra["progress"] = _show(bar, log, f"λ={lam:g}{_width(width)}",
                                              f"{name} examples {start}–{start + len(idx) - 1}")
                got = _run_one(model.at(lam, width), get_attack(name), *xy, eps, norm, gen,
                               target=None if name in BATCHABLE else model.predictor(lam, width), **extra)
                journal.put([(key, *got)])
            cs[i].append(got[0])
            advs[i].append(got[1])
            bar.update(len(idx))
    return torch.stack([torch.cat(c) for c in cs]), torch.stack([torch.cat(a) for a in advs])


def _run_batched(model, attack, x, y, lam_vec, width, eps, norm, gen):
    k, b = lam_vec.shape[0], x.shape[0]
    xr, yr = x.repeat(k, *([1] * (x.dim() - 1))), y.repeat(k)
    predict = model.predictor(lam_vec.repeat_interleave(b), width, k * b)
    clean = _correct(predict, xr, yr)
    x_adv = attack(predict, xr, yr, eps=eps, generator=gen, norm=norm)
    return clean.view(k, b), _correct(predict, x_adv, yr).view(k, b)


def _run_one(bound, attack, x, y, eps, norm, gen, target=None, **extra):
    """Clean and adversarial correctness, judged on ``bound``; the attack sees ``target``
    (default ``bound``)."""
    clean = _correct(bound, x, y)
    x_adv = attack(bound if target is None else target, x, y, eps=eps, generator=gen, norm=norm, **extra)
    return clean, _correct(bound, x_adv, y)


def _width(width) -> str:
    return "" if width is None else f" width={width:g}"


def _show(bar, log, where: str, what: str):
    """A reporting attack's progress: in the bar's postfix on a terminal, else one ``log`` line
    per finished component (a redrawn bar in a log file is noise)."""

    def report(p):
        if not bar.disable:
            bar.set_postfix_str(f"{where} {p.describe()}")
        elif p.event == "end":
            log(f"{what} {where}: {p.describe()}")

    return report


def to_rows(result: SweepResult, *, eps: float, split: str, slimmable: bool, norm: str = "linf") -> list[dict]:
    """results.json rows: one per (λ, width, attack), plus ``worst`` over several attacks."""
    return [row for row, _, _ in per_example(result, eps=eps, split=split, slimmable=slimmable, norm=norm)]


def per_example(result: SweepResult, *, eps: float, split: str, slimmable: bool, norm: str = "linf"):
    """``(row, correct (n,), clean (n,))``: each results.json row with the per-example outcomes
    its RA and SA average.

    ``worst`` (several attacks only): an example is robust only if it survives every attack.
    """
    out = []
    keys = sorted({(lam, w) for (lam, w, _) in result.adv}, key=lambda t: (-(t[1] or 1.0), t[0]))
    for lam, w in keys:
        clean = result.clean[(lam, w)]
        names = [a for (l2, w2, a) in result.adv if (l2, w2) == (lam, w)]
        per = {a: result.adv[(lam, w, a)] for a in names}
        if len(names) > 1:
            per["worst"] = torch.stack([result.adv[(lam, w, a)] for a in names]).all(0)
        for a, corr in per.items():
            row = {"lam": lam, "width": (1.0 if w is None else w) if slimmable else None,
                   "split": split, "attack": a, "eps": eps, "norm": norm, "sa": float(clean.float().mean()),
                   "ra": float(corr.float().mean()), "n": int(corr.numel())}
            out.append((row, corr, clean))
    return out
