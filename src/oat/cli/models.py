"""``oat models``: the registered models, one a line, name first."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("models", help="list the models (parameters, FLOPs)",
                       description="One model a line, its name first: parameters of the dedicated form, of the "
                       "OAT form (FiLM + dual BN), forward GFLOPs (2 x MACs, dedicated form) at the input "
                       "size given (32x32x3; 28x28x1 for small-cnn), and a description. The header line "
                       "starts with '#'.")
    return p


def input_of(name: str) -> tuple[int, int]:
    """``(channels, size)`` the FLOPs column is counted at."""
    return (1, 28) if name == "small-cnn" else (3, 32)


def run(args) -> int:
    from oat.conditioning import Conditioning
    from oat.models import list_models
    from oat.models.flops import describe
    from oat.models.registry import DESCRIPTIONS

    print(f"# {'name':<14} {'params':>9} {'oat-params':>11} {'gflops':>8} {'input':>8}  description")
    for name in list_models():
        cin, size = input_of(name)
        n_ded, flops = describe(name, Conditioning.dedicated(1.0), cin, size)
        n_oat, _ = describe(name, Conditioning(), cin, size)
        shape = f"{cin}x{size}x{size}"
        print(f"{name:<16} {n_ded / 1e6:>8.2f}M {n_oat / 1e6:>10.2f}M {flops / 1e9:>8.3f} {shape:>8}  "
              f"{DESCRIPTIONS[name]}")
    return 0
