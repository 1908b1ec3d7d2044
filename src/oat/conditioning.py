"""λ conditioning: the trained λ set, its encodings, and the spec stored with every model.

OAT (Wang et al., NeurIPS 2020, Sec. 3.1) feeds the trade-off weight λ to the network
through FiLM layers. The reference code maps λ's *index* in the trained set to a row of
a 128×128 matrix (random orthogonal by default, one-hot or DCT), or feeds λ raw. The
matrix is part of the model: it lives in a buffer and is saved with the weights, never
re-drawn at load time.

Beyond the reference, the ``continuous`` encoding (random Fourier-style features,
smooth in λ) accepts any λ in [0, 1]; see :mod:`oat.train.sampling` for its sampler.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from oat.errors import ConfigError, LamError, WidthError

LAM_TOL = 1e-6
WIDTH_TOL = 1e-6
PAPER_LAMS = (0.0, 0.1, 0.2, 0.3, 0.4, 1.0)
# FiLM parametrisations (see oat.nn.film): the authors' first, the default.
FILM_FORMS = ("reference", "identity")


# --------------------------------------------------------------------------- encodings
@dataclass(frozen=True)
class Encoding:
    """How λ becomes the FiLM input.

    Attributes:
        name: registry name.
        index_based: True when λ selects a row of a stored table (only trained λ allowed).
        make: for index-based encodings ``(num_lams, dim, generator) -> (num_lams, dim)``;
            for continuous ones ``(lam (N,), dim) -> (N, dim)``.
        fixed_dim: the encoding's own dimension when it ignores ``dim`` (scalar: 1).
    """

    name: str
    index_based: bool
    make: Callable
    fixed_dim: int | None = None


ENCODINGS: dict[str, Encoding] = {}


def register_encoding(name: str, *, index_based: bool, fixed_dim: int | None = None):
    """Decorator adding an encoding to the registry."""

    def deco(fn):
        ENCODINGS[name] = Encoding(name, index_based, fn, fixed_dim)
        return fn

    return deco


@register_encoding("random-orthogonal", index_based=True)
def _random_orthogonal(k: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    # QR of a Gaussian matrix, as the reference does; rows of Q are orthonormal.
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    return q[:k].float()


@register_encoding("one-hot", index_based=True)
def _one_hot(k: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    return torch.eye(dim)[:k]


@register_encoding("dct", index_based=True)
def _dct(k: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    # Orthonormal DCT-II rows (unit norm), unlike the reference's unnormalised rows
    # (norms up to ~22.6), so every encoding feeds the FiLM MLP inputs of the same scale.
    n = torch.arange(dim, dtype=torch.float64)
    rows = [torch.cos(math.pi / dim * (n + 0.5) * i) for i in range(k)]
    m = torch.stack(rows) * math.sqrt(2.0 / dim)
    m[0] /= math.sqrt(2.0)
    return m.float()


@register_encoding("scalar", index_based=False, fixed_dim=1)
def _scalar(lam: torch.Tensor, dim: int) -> torch.Tensor:
    return lam.float().unsqueeze(1)


@register_encoding("continuous", index_based=False)
def _continuous(lam: torch.Tensor, dim: int) -> torch.Tensor:
    # dim/2 frequencies 1..dim/2 of cos/sin(π f λ), scaled to unit norm: smooth in λ,
    # distinct for distinct λ in [0, 1], and of the same scale as the table encodings.
    f = torch.arange(1, dim // 2 + 1, device=lam.device, dtype=torch.float32)
    ang = math.pi * lam.float().unsqueeze(1) * f
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=1) / math.sqrt(dim // 2)


def list_encodings() -> list[str]:
    return sorted(ENCODINGS)


# --------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class Conditioning:
    """Everything about λ (and width) that a model needs at test time; saved in checkpoints.

    Attributes:
        lams: the trained λ values (for a dedicated model, its single λ).
        encoding: an :data:`ENCODINGS` name, or ``"none"`` for a model without FiLM.
        dim: encoding dimension (128 in the paper).
        film: whether FiLM layers condition the features on λ.
        dual_bn: separate BN statistics for λ == 0 (clean) and λ > 0 (adversarial).
        widths: trained width multipliers (``(1.0,)`` for a model that is not slimmable).
        seed: seed of the random-orthogonal table (the table itself is stored too).
        film_form: ``"reference"`` (the authors' leaky_relu scale) or ``"identity"`` (scale
            1 + Δ starting at the identity); see :mod:`oat.nn.film`.
    """

    lams: tuple[float, ...] = PAPER_LAMS
    encoding: str = "random-orthogonal"
    dim: int = 128
    film: bool = True
    dual_bn: bool = True
    widths: tuple[float, ...] = (1.0,)
    seed: int = 0
    film_form: str = "reference"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "lams", tuple(sorted(float(v) for v in self.lams)))
        object.__setattr__(self, "widths", tuple(sorted((float(w) for w in self.widths), reverse=True)))
        if not self.lams:
            raise ConfigError("the λ set is empty")
        for v in self.lams:
            check_lam_range(v)
        if len(set(self.lams)) != len(self.lams):
            raise ConfigError(f"the λ set has repeated values: {list(self.lams)}")
        for w in self.widths:
            if not 0.0 < w <= 1.0:
                raise ConfigError(f"width multiplier {w} is outside (0, 1]")
        if self.film and self.encoding not in ENCODINGS:
            raise ConfigError(f"unknown λ encoding {self.encoding!r}; known: {', '.join(list_encodings())}")
        if self.film_form not in FILM_FORMS:
            raise ConfigError(f"unknown FiLM form {self.film_form!r}; known: {', '.join(FILM_FORMS)}")
        if self.film and ENCODINGS[self.encoding].index_based and len(self.lams) > self.dim:
            raise ConfigError(f"{len(self.lams)} λ values do not fit a {self.dim}-row encoding table")

    @classmethod
    def dedicated(cls, lam: float, widths=(1.0,)) -> Conditioning:
        """The spec of a dedicated (PGD-AT) model: no FiLM, one BN, one λ."""
        return cls(lams=(lam,), encoding="none", film=False, dual_bn=False, widths=widths)

    @property
    def continuous(self) -> bool:
        """True when any λ in [0, 1] is accepted (not only the trained set)."""
        return self.film and not ENCODINGS[self.encoding].index_based

    @property
    def film_input_dim(self) -> int:
        """Width of the FiLM input: the encoding's own dimension (1 for scalar), else ``dim``; 0 without FiLM."""
        if not self.film:
            return 0
        return ENCODINGS[self.encoding].fixed_dim or self.dim

    @property
    def slimmable(self) -> bool:
        return self.widths != (1.0,)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lams"], d["widths"] = list(self.lams), list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Conditioning:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown conditioning keys: {sorted(unknown)}")
        return cls(**d)

    # ---- validation of what a caller asks for
    def lam_index(self, lam: float) -> int:
        """Index of ``lam`` in the trained set (tolerance 1e-6), or a :class:`LamError`."""
        check_lam_range(lam)
        for i, v in enumerate(self.lams):
            if abs(v - lam) <= LAM_TOL:
                return i
        trained = ", ".join(f"{v:g}" for v in self.lams)
        if not self.film:
            raise LamError(f"this dedicated model was trained at λ={trained} only; got λ={lam:g}")
        raise LamError(
            f"λ={lam:g} is not in the trained set {{{trained}}}; the {self.encoding!r} encoding "
            "accepts only trained values (train with --encoding continuous for any λ)"
        )

    def check_lam(self, lam: float) -> float:
        """Return ``lam`` snapped to the trained set, or itself for continuous encodings."""
        if self.continuous:
            check_lam_range(lam)
            return float(lam)
        return self.lams[self.lam_index(lam)]

    def width_index(self, width: float | None) -> int:
        """Index of ``width`` (None: the full/largest width) among the trained widths."""
        if width is None:
            return 0
        for i, w in enumerate(self.widths):
            if abs(w - float(width)) <= WIDTH_TOL:
                return i
        trained = ", ".join(f"{w:g}" for w in self.widths)
        raise WidthError(f"width {width:g} was not trained; trained widths: {trained}")


def check_lam_range(lam: float) -> None:
    # numbers.Real: NumPy scalars (np.float32 is no float subclass) are λ values too.
    if not (isinstance(lam, numbers.Real) and 0.0 <= float(lam) <= 1.0) or math.isnan(float(lam)):
        raise LamError(f"λ must be a number in [0, 1]; got {lam!r}")


def scaled(channels: int, width: float) -> int:
    """Channels kept at a width multiplier (the slimmable-network rule: first int(C·w))."""
    return max(1, int(channels * width + 1e-9))


def make_table(spec: Conditioning) -> torch.Tensor:
    """The stored encoding table for index-based encodings ((K, dim)), else an empty tensor."""
    if not spec.film or not ENCODINGS[spec.encoding].index_based:
        return torch.zeros(0)
    gen = torch.Generator().manual_seed(spec.seed)
    return ENCODINGS[spec.encoding].make(len(spec.lams), spec.dim, gen).contiguous()
