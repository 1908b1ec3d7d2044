"""The resolved training configuration: one validated dataclass, written into every run.

Recipes (YAML) and ``key=value`` overrides both go through :meth:`TrainConfig.from_dict`,
so an unknown key or a value of the wrong type is refused with one clear line.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field

import yaml

from oat.conditioning import FILM_FORMS, PAPER_LAMS
from oat.errors import ConfigError
from oat.train.sampling import LamSampling

OBJECTIVES = ("pgdat", "oat", "oats")
# Encodings whose OAT training draws λ ~ U(0, max λ] rather than from the discrete set.
CONTINUOUS_DRAW = ("continuous", "scalar")


@dataclass
class TrainConfig:
    """Every knob of ``oat train``. Defaults are the paper's where it has one."""

    data: str = "digits"
    data_dir: str | None = None
    download: bool = False
    val_size: int | None = None
    model: str = "small-cnn"
    model_kwargs: dict = field(default_factory=dict)
    objective: str = "oat"
    lam: float = 1.0
    lams: list = field(default_factory=lambda: list(PAPER_LAMS))
    widths: list = field(default_factory=lambda: [1.0])
    encoding: str = "random-orthogonal"
    enc_dim: int = 128
    dual_bn: bool = True
    eps: float | None = None
    attack_steps: int = 7
    attack_norm: str = "linf"
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    deterministic: bool = False
    amp: str = "auto"
    channels_last: bool = True
    device: str = "auto"
    keep_checkpoints: int = 2
    nonfinite: str = "stop"
    # Beyond the paper (defaults = the reference): see oat.nn.film and oat.train.sampling.
    film_form: str = "reference"
    zero_share: float | None = None
    lam_weights: list | None = None
    init_from: str | None = None
    film_lr_scale: float = 1.0
    eval_attacks: list = field(default_factory=lambda: ["pgd20"])
    eval_split: str = "val"
    eval_subset: int | None = None

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}; known: {', '.join(OBJECTIVES)}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ConfigError(f"amp must be auto, bf16 or off; got {self.amp!r}")
        if self.nonfinite not in ("stop", "skip"):
            raise ConfigError(f"nonfinite must be stop or skip; got {self.nonfinite!r}")
        if self.eval_split not in ("val", "test"):
            raise ConfigError(f"eval_split must be val or test; got {self.eval_split!r}")
        for name in ("epochs", "batch_size", "attack_steps", "enc_dim"):
            if getattr(self, name) < (0 if name == "attack_steps" else 1):
                raise ConfigError(f"{name} must be positive; got {getattr(self, name)}")
        if self.eps is not None and not 0 <= self.eps <= 1:
            raise ConfigError(f"eps is in pixel units of [0, 1]; got {self.eps}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive; got {self.lr}")
        self._validate_beyond_paper()

    def _validate_beyond_paper(self) -> None:
        if not self.film_lr_scale > 0:
            raise ConfigError(f"film_lr_scale must be positive; got {self.film_lr_scale}")
        if self.film_form not in FILM_FORMS:
            raise ConfigError(f"unknown film_form {self.film_form!r}; known: {', '.join(FILM_FORMS)}")
        sampling = (self.zero_share, self.lam_weights)
        if self.objective == "pgdat" and sampling != (None, None):
            raise ConfigError("zero_share and lam_weights set the λ draw of oat/oats; a pgdat model has one λ")
        if self.objective != "pgdat":
            weights = None if self.lam_weights is None else tuple(self.lam_weights)
            LamSampling(self.zero_share, weights).check(tuple(self.lams), self.encoding in CONTINUOUS_DRAW)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a mapping, refusing unknown keys and values of the wrong type."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _check_type(k, v, hints[k]) for k, v in d.items()})

    def replace(self, **overrides) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **overrides})


def parse_value(text: str):
    """A ``key=value`` override's value: YAML scalars/lists, and fractions such as ``8/255``."""
    text = text.strip()
    if "/" in text and all(p.strip().replace(".", "", 1).isdigit() for p in text.split("/", 1)):
        a, b = text.split("/", 1)
        if float(b) == 0:
            raise ConfigError(f"division by zero in {text!r}")
        return float(a) / float(b)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse value {text!r}: {e.__class__.__name__}") from None


def parse_overrides(items: list[str]) -> dict:
    """``["epochs=3", "lams=[0,1]"]`` → ``{"epochs": 3, "lams": [0, 1]}``."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = parse_value(v)
    return out


def _check_type(key: str, value, hint):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None and (hint is type(None) or type(None) in args):
        return None
    optional = origin in (typing.Union, types.UnionType)
    base = next(a for a in args if a is not type(None)) if optional else hint
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base in (str, bool, dict, list) and isinstance(value, base):
        return value
    if base is list and isinstance(value, tuple):
        return list(value)
    name = getattr(base, "__name__", str(base))
    raise ConfigError(f"config key {key!r} expects {name}; got {value!r} ({type(value).__name__})")
