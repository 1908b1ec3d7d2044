"""The resolved training configuration: one validated dataclass, written into every run.

Recipes (YAML) and ``key=value`` overrides both go through :meth:`TrainConfig.from_dict`,
so an unknown key or a value of the wrong type is refused with one clear line.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import InitVar, dataclass, field

import yaml

from oat.conditioning import ENCODINGS, FILM_FORMS, Conditioning
from oat.errors import ConfigError
from oat.models.conversion import CONVERTED
from oat.train.sampling import LamSampling

OBJECTIVES = ("pgdat", "oat", "oats")
DEFAULT_MODEL = "small-cnn"
# The conditioning defaults live in the Conditioning dataclass; the config reads them from there.
_SPEC = {f.name: f.default for f in dataclasses.fields(Conditioning)}
ATTACK_PRECISIONS = ("fp32", "amp")
SCALAR_DRAWS = ("continuous", "discrete")
# Keys a run folder written by an earlier version may hold, and what each became.
LEGACY_EVAL_KEYS = ("eval_attacks", "eval_split", "eval_subset")


@dataclass
class TrainConfig:
    """Every knob of ``oat train``. Defaults are the paper's where it has one."""

    data: str = "digits"
    data_dir: str | None = None
    download: bool = False
    val_size: int | None = None
    # A registered model (None: DEFAULT_MODEL), or "converted": your own network (model_file, or a
    # network handed to oat.fit), converted by oat.convert.
    model: str | None = None
    model_kwargs: dict = field(default_factory=dict)  # the model's options, or the model file factory's arguments
    model_file: str | None = None  # "FILE.py[:FACTORY]": a function or class returning your nn.Module
    objective: str = "oat"
    # The trained λ set; a pgdat model has exactly one (None: the paper's set, or [1.0] for pgdat).
    lams: list | None = None
    widths: list = field(default_factory=lambda: list(_SPEC["widths"]))
    encoding: str = _SPEC["encoding"]
    enc_dim: int = _SPEC["dim"]  # Conditioning.dim: the encoding's dimension
    dual_bn: bool = _SPEC["dual_bn"]
    film: bool = _SPEC["film"]  # False: OAT's λ draw and loss without FiLM (an ablation; λ acts through dual BN)
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
    amp: str = "auto"  # bf16 on CUDA; on a CPU bf16 when measured faster (oat.train.precision); bf16 | off
    channels_last: bool = True
    device: str = "auto"
    keep_checkpoints: int = 2
    nonfinite: str = "stop"
    # Beyond the paper (defaults = the reference): see oat.nn.film and oat.train.sampling.
    film_form: str = _SPEC["film_form"]
    zero_share: float | None = None
    lam_weights: list | None = None
    init_from: str | None = None
    film_lr_scale: float = 1.0
    # Where ours differs from the authors' code, a setting (ARCHITECTURE.md says which default is whose).
    scalar_draw: str = "continuous"  # the scalar encoding's training λ: U(0, max λ] or the discrete set
    pgdat_clean_pass_at_1: bool = False  # dedicated λ = 1: also run the clean pass (BN statistics)
    train_attack_precision: str = "fp32"  # the training PGD outside autocast (fp32) or inside it (amp)
    drop_last: bool = False  # drop the last partial batch of an epoch (always under several processes)
    # A convenience, not a field: ``lam=X`` means ``lams=[X]`` for a pgdat model.
    lam: InitVar[float | None] = None

    def __post_init__(self, lam=None):
        if lam is not None:
            if self.objective != "pgdat":
                raise ConfigError(f"lam is the one λ of a pgdat model; an {self.objective} model takes lams "
                                  f"(got lam={lam!r})")
            if self.lams is not None:
                raise ConfigError("give lam or lams, not both (lam=X means lams=[X])")
            if isinstance(lam, bool) or not isinstance(lam, (int, float)):
                raise ConfigError(f"config key 'lam' expects float; got {lam!r} ({type(lam).__name__})")
            self.lams = [float(lam)]
        if self.lams is None:
            self.lams = [1.0] if self.objective == "pgdat" else list(_SPEC["lams"])
        if self.model is None:
            self.model = CONVERTED if self.model_file else DEFAULT_MODEL
        self.validate()

    def validate(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.objective!r}; known: {', '.join(OBJECTIVES)}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ConfigError(f"amp must be auto, bf16 or off; got {self.amp!r}")
        if self.nonfinite not in ("stop", "skip"):
            raise ConfigError(f"nonfinite must be stop or skip; got {self.nonfinite!r}")
        if self.objective == "pgdat" and len(self.lams) != 1:
            raise ConfigError(f"a pgdat model trains at one λ; got lams={list(self.lams)} (train one run per λ)")
        if self.model_file is not None and self.model != CONVERTED:
            raise ConfigError(f"give model or model_file, not both (model={self.model!r} is a registered model, "
                              f"model_file={self.model_file!r} your own network)")
        if self.model == CONVERTED and self.objective == "oats":
            raise ConfigError("a converted network keeps your convolutions as they are, so it has one width; OATS "
                              "trains slimmable widths of a registered model (use objective oat or pgdat)")
        if self.train_attack_precision not in ATTACK_PRECISIONS:
            raise ConfigError(f"train_attack_precision must be fp32 or amp; got {self.train_attack_precision!r}")
        if self.scalar_draw not in SCALAR_DRAWS:
            raise ConfigError(f"scalar_draw must be continuous or discrete; got {self.scalar_draw!r}")
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
            LamSampling(self.zero_share, weights).check(tuple(self.lams), self.continuous_draw)

    @property
    def continuous_draw(self) -> bool:
        """Whether OAT training draws λ ~ U(0, max λ] (encodings that accept any λ) or from the set."""
        if self.objective == "pgdat" or self.encoding not in ENCODINGS:
            return False
        if self.encoding == "scalar" and self.scalar_draw == "discrete":
            return False
        return not ENCODINGS[self.encoding].index_based

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a mapping, refusing unknown keys and values of the wrong type."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        evals = sorted(set(d) & set(LEGACY_EVAL_KEYS))
        if evals:
            raise ConfigError(f"{', '.join(evals)}: evaluation settings are not training settings; give them to "
                              "the evaluation plan (oat train --eval-split/--eval-attacks/--eval-subset, "
                              "oat.fit(..., plan=EvalPlan(...)))")
        unknown = sorted(set(d) - set(fields) - {"lam"})
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(fields)}")
        hints = typing.get_type_hints(cls)
        hints["lam"] = float | None
        return cls(**{k: _check_type(k, v, hints[k]) for k, v in d.items()})

    @classmethod
    def from_saved(cls, d: dict) -> TrainConfig:
        """A config read back from a run folder, including one written by an earlier version:
        its ``eval_*`` keys (evaluation now has its own plan) are dropped, and ``lam`` (a pgdat
        model's λ, then stored beside an unused ``lams``) becomes ``lams=[lam]``."""
        return cls.from_dict(translate_legacy(d))

    def replace(self, **overrides) -> TrainConfig:
        base = self.to_dict()
        if "lam" in overrides:
            base.pop("lams")
        return TrainConfig.from_dict({**base, **overrides})


def translate_legacy(d: dict) -> dict:
    """A saved config dict in today's keys (see :meth:`TrainConfig.from_saved`)."""
    d = {k: v for k, v in d.items() if k not in LEGACY_EVAL_KEYS}
    if "lam" in d:
        lam = d.pop("lam")
        if d.get("objective") == "pgdat":
            d["lams"] = [lam]
    return d


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
