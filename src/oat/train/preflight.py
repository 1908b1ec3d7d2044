"""Checks of a whole training configuration that run before the run folder is touched.

``TrainConfig`` checks each value's type; these check what only shows later (a NaN lr
diverges at step one, an unknown threat model fails at the first attack, an unknown model
keyword fails at model creation), so that ``--overwrite`` never replaces a good run with
a configuration that cannot work.
"""

from __future__ import annotations

import torch

from oat import validate
from oat.attacks.threat import get_threat
from oat.errors import ConfigError, OatError

# Far above any published λ encoding (the paper's is 128): FiLM's first layer is enc_dim wide,
# so enc_dim=1e9 would try to allocate gigabytes before saying anything.
MAX_ENC_DIM = 4096


def check_config(cfg) -> None:
    """Refuse, with one line, a configuration that would fail or mislead later."""
    for name in ("lr", "momentum", "weight_decay"):
        validate.finite(name, getattr(cfg, name))
    if cfg.eps is not None:
        validate.finite("eps", cfg.eps)
    for name in ("lams", "widths"):
        for v in getattr(cfg, name):
            validate.finite(f"{name} value", v)
    validate.seed(cfg.seed)
    validate.positive_int("enc_dim", cfg.enc_dim, at_most=MAX_ENC_DIM)
    get_threat(cfg.attack_norm)


def check_model(cfg, spec) -> None:
    """Build the model on the meta device (no memory, milliseconds) to try its keyword arguments."""
    from oat.models import create_model
    from oat.models.conversion import CONVERTED
    from oat.models.registry import COMPOSITES
    from oat.models.source import parse_model_file

    if cfg.model == CONVERTED:  # built from the user's code once the data's shape is known (oat.train.runner)
        if cfg.model_file is not None:
            parse_model_file(cfg.model_file)
        return
    if cfg.model in COMPOSITES:
        raise ConfigError(f"model {cfg.model!r} blends trained runs (oat mix); it is not trained itself")
    try:
        with torch.device("meta"):
            create_model(cfg.model, spec, in_channels=3, num_classes=10, **cfg.model_kwargs)
    except OatError:
        raise
    except (TypeError, ValueError, RuntimeError) as e:
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ConfigError(f"model_kwargs {cfg.model_kwargs} do not fit model {cfg.model!r}: {first}") from None
