"""``oat models``: the registered models, one a line, name first."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("models", help="list the models", description="One model a line: name, parameters "
                       "of the dedicated form, of the OAT form (FiLM + dual BN), and a description.")
    return p


def run(args) -> int:
    from oat.conditioning import Conditioning
    from oat.models import create_model, list_models
    from oat.models.registry import DESCRIPTIONS

    print(f"{'name':<16} {'params':>9} {'oat-params':>11}  description")
    for name in list_models():
        cin = 1 if name == "small-cnn" else 3
        n_ded = _count(create_model(name, Conditioning.dedicated(1.0), in_channels=cin))
        n_oat = _count(create_model(name, Conditioning(), in_channels=cin))
        print(f"{name:<16} {n_ded / 1e6:>8.2f}M {n_oat / 1e6:>10.2f}M  {DESCRIPTIONS[name]}")
    return 0


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())
