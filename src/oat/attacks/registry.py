"""The evaluation attacks, by canonical name (the ``attack`` field of results.json rows).

Each entry is ``fn(predict, x, y, *, eps, generator) -> x_adv``. Evaluation PGD uses
Madry's step 2.5·ε/k, a random start, keeps each example's worst iterate and runs in
fp32 (callers must not wrap it in autocast: bf16 gradients inflate RA).
"""

from __future__ import annotations

from collections.abc import Callable

from oat.attacks.pgd import fgsm, pgd
from oat.errors import ConfigError

ATTACKS: dict[str, Callable] = {}
BATCHABLE: set[str] = set()  # attacks whose per-example result does not depend on batch-mates


def register_attack(name: str, batchable: bool = True):
    """Register an evaluation attack. ``batchable``: it may run on several λ in one batch."""

    def deco(fn):
        ATTACKS[name] = fn
        if batchable:
            BATCHABLE.add(name)
        return fn

    return deco


def get_attack(name: str) -> Callable:
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; known: {', '.join(list_attacks())}")
    return ATTACKS[name]


def list_attacks() -> list[str]:
    return sorted(ATTACKS)


@register_attack("clean")
def clean(predict, x, y, *, eps, generator=None):
    """No attack: RA equals SA (for SA-only rows)."""
    return x


@register_attack("fgsm")
def fgsm_attack(predict, x, y, *, eps, generator=None):
    return fgsm(predict, x, y, eps=eps)


@register_attack("pgd20")
def pgd20(predict, x, y, *, eps, generator=None):
    """The paper's evaluation attack: L∞ PGD-20 (with Madry's step, random start)."""
    return pgd(predict, x, y, eps=eps, steps=20, generator=generator)


@register_attack("pgd100-r5")
def pgd100_r5(predict, x, y, *, eps, generator=None):
    """L∞ PGD-100 with 5 random restarts, worst case per example."""
    return pgd(predict, x, y, eps=eps, steps=100, restarts=5, generator=generator)


@register_attack("cw-pgd")
def cw_pgd(predict, x, y, *, eps, generator=None):
    """L∞ PGD-30 on the Carlini–Wagner margin loss."""
    return pgd(predict, x, y, eps=eps, steps=30, loss="cw", generator=generator)
