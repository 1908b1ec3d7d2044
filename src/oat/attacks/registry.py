"""The evaluation attacks, by canonical name (the ``attack`` field of results.json rows).

Each entry is ``fn(predict, x, y, *, eps, generator=None, norm="linf") -> x_adv``; entries in
:data:`REPORTS` also take ``progress=`` (a callable given an
:class:`~oat.attacks.autoattack.AAProgress` as the attack goes: per component, per batch).
Evaluation PGD uses Madry's step 2.5·ε/k, a random start, keeps each example's worst
iterate and runs in fp32 (callers must not wrap it in autocast: bf16 gradients make the
attack weaker and inflate RA).

``autoattack`` is the authors' standard AutoAttack (see :mod:`oat.attacks.autoattack`);
``apgd-ce`` is its first component alone, a quick gradient-based look between PGD and the
full ensemble. Both are not batchable across λ and run on ``model.at(lam, width)``.
"""

from __future__ import annotations

from collections.abc import Callable

from oat.attacks.autoattack import autoattack
from oat.attacks.pgd import fgsm, pgd
from oat.errors import ConfigError

ATTACKS: dict[str, Callable] = {}
BATCHABLE: set[str] = set()  # attacks whose per-example result does not depend on batch-mates
REPORTS: set[str] = set()  # attacks that take ``progress=`` (long ones: minutes per batch)


def register_attack(name: str, batchable: bool = True, reports: bool = False):
    """Register an evaluation attack. ``batchable``: it may run on several λ in one batch;
    ``reports``: it takes a ``progress`` callable."""

    def deco(fn):
        ATTACKS[name] = fn
        for flag, names in ((batchable, BATCHABLE), (reports, REPORTS)):
            if flag:
                names.add(name)
            else:
                names.discard(name)
        return fn

    return deco


def get_attack(name: str) -> Callable:
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; known: {', '.join(list_attacks())}")
    return ATTACKS[name]


def list_attacks() -> list[str]:
    return sorted(ATTACKS)


@register_attack("clean")
def clean(predict, x, y, *, eps, generator=None, norm="linf"):
    """No attack: RA equals SA (for SA-only rows)."""
    return x


@register_attack("fgsm")
def fgsm_attack(predict, x, y, *, eps, generator=None, norm="linf"):
    return fgsm(predict, x, y, eps=eps, norm=norm)


@register_attack("pgd20")
def pgd20(predict, x, y, *, eps, generator=None, norm="linf"):
    """The paper's evaluation attack: PGD-20 (with Madry's step, random start)."""
    return pgd(predict, x, y, eps=eps, steps=20, norm=norm, generator=generator)


@register_attack("pgd100-r5")
def pgd100_r5(predict, x, y, *, eps, generator=None, norm="linf"):
    """PGD-100 with 5 random restarts, worst case per example."""
    return pgd(predict, x, y, eps=eps, steps=100, restarts=5, norm=norm, generator=generator)


@register_attack("cw-pgd")
def cw_pgd(predict, x, y, *, eps, generator=None, norm="linf"):
    """PGD-30 on the Carlini–Wagner margin loss."""
    return pgd(predict, x, y, eps=eps, steps=30, loss="cw", norm=norm, generator=generator)


@register_attack("autoattack", batchable=False, reports=True)
def autoattack_standard(predict, x, y, *, eps, generator=None, norm="linf", progress=None):
    """Standard AutoAttack: APGD-CE, APGD-T, FAB-T, Square (costly: minutes per batch on a CPU)."""
    return autoattack(predict, x, y, eps=eps, norm=norm, version="standard", generator=generator,
                      progress=progress)


@register_attack("apgd-ce", batchable=False, reports=True)
def apgd_ce(predict, x, y, *, eps, generator=None, norm="linf", progress=None):
    """AutoAttack's APGD-CE alone, as in the standard version (100 iterations, one restart)."""
    return autoattack(predict, x, y, eps=eps, norm=norm, version="custom", attacks=("apgd-ce",),
                      generator=generator, apgd_restarts=1, progress=progress)
