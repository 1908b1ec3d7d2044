"""Attacks: pure functions ``(predict, x, y, ...) -> x_adv``; threat models by name."""

from oat.attacks.pgd import cw_margin_loss, eval_step_size, fgsm, pgd, train_step_size
from oat.attacks.registry import ATTACKS, get_attack, list_attacks, register_attack
from oat.attacks.threat import THREATS, get_threat

__all__ = [
    "ATTACKS",
    "THREATS",
    "cw_margin_loss",
    "eval_step_size",
    "fgsm",
    "get_attack",
    "get_threat",
    "list_attacks",
    "pgd",
    "register_attack",
    "train_step_size",
]
