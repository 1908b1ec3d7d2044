"""AutoAttack (Croce & Hein, ICML 2020) through the authors' own package, ``pyautoattack``.

The project uses the authors' code for AutoAttack rather than ART's re-implementation
(``pyautoattack``, the package RobustBench depends on; see DESIGN.md, "Decisions already
taken"), so our AutoAttack numbers mean what the field's
mean. ART stays in the project as the independent second implementation that our PGD is
cross-checked against (``tests/attacks/test_crosscheck.py``). Nothing of AutoAttack is
re-implemented here: this module only adapts calling conventions.

What the adapter does, and why:

- ``version="standard"`` runs APGD-CE, APGD-T, FAB-T and Square at the authors' standard
  settings (APGD 100 iterations, 9 target classes, Square 5,000 queries). With fewer than
  10 classes the standard 9 targets do not exist; we use ``num_classes - 1`` targets
  (the authors' code would otherwise fail), and say so in :data:`DEVIATIONS`.
- AutoAttack calls ``model(x)`` on an ``nn.Module``; a plain ``predict`` callable is
  wrapped. It is not batchable across λ (APGD-T/FAB-T pick targets and restarts per batch
  of still-robust examples), so the sweep runs it λ by λ on ``model.at(lam, width)``.
- The authors' attacks reseed the *global* torch RNG in ``perturb``; we run them inside
  ``torch.random.fork_rng`` so the caller's RNG state is left as it was, and derive their
  seed from the caller's ``generator`` (a resumed evaluation then repeats each batch exactly).
- fp32 only: autocast is disabled (low-precision gradients make attacks weaker and inflate RA).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from oat.errors import ConfigError

NORMS = {"linf": "Linf", "l2": "L2"}
STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
DEVIATIONS = "with C < 10 classes, APGD-T and FAB-T use C - 1 target classes instead of 9"


def package_version() -> str:
    """The installed ``pyautoattack`` version (recorded with AutoAttack results)."""
    import pyautoattack

    return getattr(pyautoattack, "__version__", "unknown")


class _Module(nn.Module):
    """An ``nn.Module`` around a ``predict`` callable (AutoAttack's checks want a module)."""

    def __init__(self, predict):
        super().__init__()
        self.predict = predict

    def forward(self, x):
        return self.predict(x)


def _seed_from(generator: torch.Generator | None) -> int:
    if generator is None:
        return 0
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def autoattack(predict, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
               version: str = "standard", attacks: tuple[str, ...] | None = None,
               generator: torch.Generator | None = None, batch_size: int | None = None,
               num_classes: int | None = None, apgd_restarts: int | None = None) -> torch.Tensor:
    """AutoAttack's adversarial examples for ``predict`` (a bound model ``x -> logits``).

    Args:
        predict: ``nn.Module`` or callable ``x -> logits`` (one λ, one width).
        x: images in [0, 1], ``(N, C, H, W)``; y: labels ``(N,)``.
        eps: radius in pixel units.
        norm: ``"linf"`` or ``"l2"``.
        version: AutoAttack's ``version`` (``"standard"``, ``"plus"``, ``"rand"``, or
            ``"custom"`` with ``attacks``).
        attacks: component names for ``version="custom"`` (e.g. ``("apgd-ce",)``).
        generator: source of the attack seed.
        batch_size: AutoAttack's internal batch (default: all of ``x`` at once).
        num_classes: number of classes (default: read from one forward pass).
        apgd_restarts: override APGD-CE's restarts (the package builds ``custom`` with 5;
            the standard version uses 1).

    Returns:
        Adversarial images (examples AutoAttack did not break are returned unchanged).
    """
    from pyautoattack import AutoAttack

    if norm not in NORMS:
        raise ConfigError(f"AutoAttack supports norms {', '.join(NORMS)}; got {norm!r}")
    if eps == 0 or x.shape[0] == 0:
        return x.detach().clone()
    module = predict if isinstance(predict, nn.Module) else _Module(predict)
    seed = _seed_from(generator)
    fork = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork), torch.autocast(x.device.type, enabled=False):
        if num_classes is None:
            with torch.no_grad():
                num_classes = int(module(x[:1]).shape[1])
        aa = AutoAttack(module, eps=float(eps), norm=NORMS[norm], seed=seed, version=version,
                        attacks=list(attacks) if attacks else None, device=x.device)
        aa.verbose = False
        targets = max(1, min(9, num_classes - 1))
        aa.apgd_targeted.n_target_classes = min(aa.apgd_targeted.n_target_classes, targets)
        aa.fab.n_target_classes = min(aa.fab.n_target_classes, targets)
        if apgd_restarts is not None:
            aa.apgd.n_restarts = int(apgd_restarts)
        level = aa.logger.level
        aa.logger.setLevel(logging.ERROR)  # its "setting parameters" chatter would break progress bars
        try:
            x_adv, _ = aa.run_standard_evaluation(x.detach(), y.detach(), batch_size=batch_size or x.shape[0])
        finally:
            aa.logger.setLevel(level)
    return x_adv.detach()
