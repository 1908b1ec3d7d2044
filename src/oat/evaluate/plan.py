"""What an evaluation measures: one dataclass, the single home of every evaluation default.

``oat evaluate``, :func:`oat.evaluate_run` and the evaluation that follows training
(:mod:`oat.pipeline`) all build an :class:`EvalPlan`; the CLI's defaults and help text are
read from its fields, so a default is stated once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from oat import validate
from oat.attacks.registry import get_attack
from oat.attacks.threat import get_threat
from oat.errors import ConfigError

SPLITS = ("val", "test")
MAX_GALLERY = 64  # images in report.html; each is attacked once more per (λ, width)


@dataclass(frozen=True)
class EvalPlan:
    """A λ × width × attack sweep of one run's newest checkpoint.

    Attributes:
        split: ``"test"`` or ``"val"`` (choosing λ and model selection use ``val``).
        lams: λ values, or None for the trained set.
        widths: widths, or None for every trained width.
        attacks: attack names (``oat.attacks.list_attacks()``); with several, a ``worst`` row
            per example is added.
        subset: a seeded subset of this many examples (None: the whole split).
        eps: attack radius (None: the run's ε).
        norm: threat model, ``"linf"`` or ``"l2"``.
        batch_size: examples per forward pass.
        device: evaluation device (``"auto"``: CUDA if available).
        seed: seed of the subset and of the attacks' random starts.
        checks: run the gradient-masking checks of :mod:`oat.evaluate.checks`.
        check_subset: examples per check.
        allow_failed_checks: if False, a failed check raises after the results are written.
        resume: reuse finished batches recorded by an earlier identical evaluation.
        batch_lams: attack all λ of an example in one batch; None: λ by λ (measured faster on
            the CPU and on a GPU).
        data_dir: read the data from here instead of the folder recorded in the checkpoint.
        replace: let these rows supersede those of the same checkpoint and setting at other subsets.
        gallery: images of the split kept with their adversarial versions and predictions at
            each (λ, width) for ``report.html`` (:mod:`oat.evaluate.gallery`); 0: none.
    """

    split: str = "test"
    lams: tuple | None = None
    widths: tuple | None = None
    attacks: tuple = ("pgd20",)
    subset: int | None = None
    eps: float | None = None
    norm: str = "linf"
    batch_size: int = 512
    device: object = "auto"
    seed: int = 0
    checks: bool = True
    check_subset: int = 64
    allow_failed_checks: bool = True
    resume: bool = True
    batch_lams: bool | None = None
    data_dir: str | None = None
    replace: bool = False
    gallery: int = 8

    def __post_init__(self):
        for name in ("lams", "widths"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                object.__setattr__(self, name, tuple(v))
            if v in ("all", ["all"], ("all",)):
                object.__setattr__(self, name, None)
        if isinstance(self.attacks, str):
            object.__setattr__(self, "attacks", (self.attacks,))
        object.__setattr__(self, "attacks", tuple(self.attacks))
        self.check()

    def check(self) -> None:
        """Refuse, with one line, a plan that would fail after the checkpoint and data are read."""
        validate.eval_args(batch_size=self.batch_size, check_subset=self.check_subset, subset=self.subset,
                           seed_value=self.seed)
        if isinstance(self.gallery, bool) or not isinstance(self.gallery, int) or not 0 <= self.gallery <= MAX_GALLERY:
            raise ConfigError(f"gallery must be a whole number of images in [0, {MAX_GALLERY}]; got {self.gallery!r}")
        if self.split not in SPLITS:
            raise ConfigError(f"split must be val or test; got {self.split!r}")
        if not self.attacks:
            raise ConfigError("no attack given")
        get_threat(self.norm)
        for name in self.attacks:
            get_attack(name)

    def replace_(self, **changes) -> EvalPlan:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict) -> EvalPlan:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown evaluation setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)


def default(name: str):
    """The default of one :class:`EvalPlan` field (the CLI's defaults and help text)."""
    f = {f.name: f for f in dataclasses.fields(EvalPlan)}[name]
    return f.default
