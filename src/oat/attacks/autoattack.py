"""AutoAttack (Croce & Hein, ICML 2020) through the authors' own package, ``pyautoattack``.

The project uses the authors' code for AutoAttack rather than ART's re-implementation
(``pyautoattack``, the package RobustBench depends on; see DESIGN.md, "Decisions already
taken"), so our AutoAttack numbers mean what the field's
mean. ART stays in the project as the independent second implementation that our PGD is
cross-checked against (``tests/attacks/test_crosscheck.py``). Nothing of AutoAttack's
attacks is re-implemented here: this module adapts calling conventions and drives the
package's own attack objects.

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
- Progress: the package has no hooks, and one ``run_standard_evaluation`` call can run for
  hours on a CPU. :func:`run_components` therefore does what that method does (the clean
  pass, then each component in the standard order on the examples still robust, batch by
  batch, each ``perturb`` seeded alike) with the package's own attack objects, and reports
  per component, per batch and, through a pass counter on the model, while a batch runs.
  The result equals the package's (``tests/attacks/test_autoattack.py``).
- Speed: the internal batch defaults to every example of the call (the sweep's batch). The
  package reseeds each batch, so another batch size draws other random starts; and on the
  CPU smaller batches were never faster: they multiply the passes (Square makes 5,000 per
  batch), which cost about the same per pass when few examples are left (batch 50 ran at
  0.62× on digits, 0.81× on Fashion-MNIST; ``benchmarks/bench_autoattack.py``). The standard
  order already runs the cheap attacks that break most examples first, each later one on the
  survivors only. What did pay is the model the package attacks: the sweep hands it
  ``model.predictor`` (see :mod:`oat.evaluate.sweep`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

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


TICK_SECONDS = 0.5  # the least time between two "pass" reports of a running component


@dataclass(frozen=True)
class AAProgress:
    """One report of a running AutoAttack.

    Attributes:
        event: ``"attack"`` (a component starts), ``"batch"`` (one of its batches finished),
            ``"pass"`` (it is still working: at most every :data:`TICK_SECONDS`) or ``"end"``.
        attack: the component (``"apgd-ce"``, ``"apgd-t"``, ``"fab-t"``, ``"square"`` …).
        index: its place among the components of this call (1-based); attacks: how many.
        batch: its finished batches; batches: how many it has (of the examples still robust
            when it started).
        robust: examples still robust (clean-correct and not yet broken); total: examples.
        passes: model passes of this call so far.
        seconds: time since the component started; batch_seconds: that time when its last
            finished batch finished.
    """

    event: str
    attack: str
    index: int
    attacks: int
    batch: int
    batches: int
    robust: int
    total: int
    passes: int
    seconds: float
    batch_seconds: float = 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left in this component, from its finished batches (None before the first)."""
        if not self.batch:
            return None
        left = self.batch_seconds / self.batch * (self.batches - self.batch)
        return max(0.0, left - (self.seconds - self.batch_seconds))

    def describe(self) -> str:
        """One line: ``apgd-t 2/4: batch 1/3, robust 412/500, 5.2k passes, 0:12, 0:35 left``."""
        eta = self.eta
        left = f", {_clock(eta)} left" if eta is not None and self.event != "end" else ""
        passes = f"{self.passes / 1000:.1f}k" if self.passes >= 1000 else str(self.passes)
        return (f"{self.attack} {self.index}/{self.attacks}: batch {self.batch}/{self.batches}, "
                f"robust {self.robust}/{self.total}, {passes} passes, {_clock(self.seconds)}{left}")


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


class _Counted(nn.Module):
    """The model as AutoAttack sees it: counts passes, so a component that runs for minutes
    inside one ``perturb`` still reports (the package has no hooks of its own)."""

    def __init__(self, predict):
        super().__init__()
        self.predict = predict
        self.passes = 0
        self.tick = None  # called on every pass (the reporter keeps to TICK_SECONDS)

    def forward(self, x):
        self.passes += 1
        if self.tick is not None:
            self.tick()
        return self.predict(x)


def _set(attack, **settings):
    for k, v in settings.items():
        setattr(attack, k, v)
    return attack


# Each component as ``AutoAttack.run_standard_evaluation`` configures it before ``perturb``.
COMPONENTS = {
    "apgd-ce": lambda aa: _set(aa.apgd, loss="ce"),
    "apgd-dlr": lambda aa: _set(aa.apgd, loss="dlr"),
    "apgd-t": lambda aa: aa.apgd_targeted,
    "fab": lambda aa: _set(aa.fab, targeted=False),
    "fab-t": lambda aa: _set(aa.fab, targeted=True, n_restarts=1),
    "square": lambda aa: aa.square,
}


class _Reporter:
    """Builds the :class:`AAProgress` reports of one component and passes them on."""

    def __init__(self, progress, counter, robust, attack, index, attacks, batches):
        self.progress, self.counter, self.robust = progress, counter, robust
        self.fields = dict(attack=attack, index=index, attacks=attacks, batches=batches, total=robust.numel())
        self.batch, self.started = 0, time.perf_counter()
        self.last, self.batch_seconds = self.started, 0.0

    def __call__(self, event: str) -> None:
        if self.progress is not None:
            now = time.perf_counter()
            self.progress(AAProgress(event=event, batch=self.batch, robust=int(self.robust.sum()),
                                     passes=self.counter.passes if self.counter is not None else 0,
                                     seconds=now - self.started, batch_seconds=self.batch_seconds, **self.fields))

    def tick(self) -> None:
        now = time.perf_counter()
        if now - self.last >= TICK_SECONDS:
            self.last = now
            self("pass")


@torch.no_grad()
def run_components(aa, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                   progress: Callable[[AAProgress], None] | None = None,
                   counter: _Counted | None = None) -> torch.Tensor:
    """``aa.run_standard_evaluation(x, y, batch_size=...)``'s adversarial images, computed the
    same way (the clean pass, then each component in order on the examples still robust, in
    batches, every ``perturb`` seeded with ``aa.get_seed()``) but reporting as it goes.

    ``counter``: the :class:`_Counted` model ``aa`` attacks, for the "pass" reports.
    The package's warnings-only checks (randomised or dynamic defence, probability outputs,
    Square's success) are not run: the adapter silenced them anyway, and gradient masking is
    what :mod:`oat.evaluate.checks` tests. No random draw happens outside ``perturb``, which
    reseeds, so leaving them out changes no number.
    """
    names = list(aa.attacks_to_run)
    robust = torch.cat([aa.get_logits(x[i: i + batch_size]).max(1)[1] == y[i: i + batch_size]
                        for i in range(0, x.shape[0], batch_size)])
    x_adv = x.clone()
    try:
        for index, name in enumerate(names, 1):
            todo = robust.nonzero().flatten()
            if todo.numel() == 0:
                break
            report = _Reporter(progress, counter, robust, name, index, len(names), -(-todo.numel() // batch_size))
            if counter is not None and progress is not None:
                counter.tick = report.tick
            report("attack")
            for start in range(0, todo.numel(), batch_size):
                idx = todo[start: start + batch_size]
                xb, yb = x[idx].clone(), y[idx].clone()
                attack = COMPONENTS[name](aa)
                attack.seed = aa.get_seed()
                adv = attack.perturb(xb, yb)
                broken = ~yb.eq(aa.get_logits(adv).max(1)[1])
                robust[idx[broken]] = False
                x_adv[idx[broken]] = adv[broken].detach()
                report.batch += 1
                report.batch_seconds = time.perf_counter() - report.started
                report("batch")
            report("end")
    finally:
        if counter is not None:
            counter.tick = None
    return x_adv


def _seed_from(generator: torch.Generator | None) -> int:
    if generator is None:
        return 0
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def autoattack(predict, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "linf",
               version: str = "standard", attacks: tuple[str, ...] | None = None,
               generator: torch.Generator | None = None, batch_size: int | None = None,
               num_classes: int | None = None, apgd_restarts: int | None = None,
               progress: Callable[[AAProgress], None] | None = None) -> torch.Tensor:
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
        progress: called with an :class:`AAProgress` when a component starts, after each of
            its batches, when it ends, and at most every :data:`TICK_SECONDS` while it works.

    Returns:
        Adversarial images (examples AutoAttack did not break are returned unchanged).
    """
    if norm not in NORMS:
        raise ConfigError(f"AutoAttack supports norms {', '.join(NORMS)}; got {norm!r}")
    if eps == 0 or x.shape[0] == 0:
        return x.detach().clone()
    module = _Counted(predict)
    seed = _seed_from(generator)
    fork = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork), torch.autocast(x.device.type, enabled=False):
        aa = build(module, eps=eps, norm=norm, seed=seed, version=version, attacks=attacks,
                   num_classes=num_classes, apgd_restarts=apgd_restarts, x=x)
        level = aa.logger.level
        aa.logger.setLevel(logging.ERROR)  # its "setting parameters" chatter would break progress bars
        try:
            x_adv = run_components(aa, x.detach(), y.detach(), batch_size=batch_size or x.shape[0],
                                   progress=progress, counter=module)
        finally:
            aa.logger.setLevel(level)
    return x_adv.detach()


def build(module: nn.Module, *, eps: float, norm: str, seed: int, version: str = "standard",
          attacks: tuple[str, ...] | None = None, num_classes: int | None = None,
          apgd_restarts: int | None = None, x: torch.Tensor | None = None):
    """The package's ``AutoAttack`` object with the adapter's settings (target classes capped
    at ``num_classes - 1``, optional APGD-CE restarts); ``x`` gives the device and, when
    ``num_classes`` is None, one example to count the classes on."""
    from pyautoattack import AutoAttack

    if num_classes is None:
        with torch.no_grad():
            num_classes = int(module(x[:1]).shape[1])
    aa = AutoAttack(module, eps=float(eps), norm=NORMS[norm], seed=seed, version=version,
                    attacks=list(attacks) if attacks else None, device=x.device if x is not None else "cpu")
    aa.verbose = False
    targets = max(1, min(9, num_classes - 1))
    aa.apgd_targeted.n_target_classes = min(aa.apgd_targeted.n_target_classes, targets)
    aa.fab.n_target_classes = min(aa.fab.n_target_classes, targets)
    if apgd_restarts is not None:
        aa.apgd.n_restarts = int(apgd_restarts)
    return aa
