"""The network a run trains: a registered model, or the user's own network converted by :func:`oat.convert`.

The user's network comes from ``model_file`` (``oat train --model-file FILE.py[:FACTORY]``) or
is handed to :func:`oat.fit` (``model=``: a factory, or a network already converted). Either way
the run records its source: every checkpoint holds the file's text, SHA-256, factory and
arguments (what :func:`oat.load` rebuilds from), and the run folder a readable copy,
``RUN/network.py``. A resumed run rebuilds the network its checkpoint recorded, not the file as
it is now. The factory is called with ``model_kwargs``, plus the data set's ``in_channels`` and
``num_classes`` when it takes them and they are not given.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from oat.checkpoint import atomic_write_text, build_from_state, read_state, resolve_checkpoint
from oat.conditioning import Conditioning
from oat.errors import ConfigError
from oat.models import ConditionedNet, create_model
from oat.models.conversion import CONVERTED, ConvertedNet, ConvertOptions, convert
from oat.models.source import ModelSource
from oat.train.config import DEFAULT_MODEL, TrainConfig

COPY_NAME = "network.py"  # the run folder's copy of the network's source


def config_for(cfg: TrainConfig, given) -> TrainConfig:
    """The config of a run that trains ``given`` (a network handed to :func:`oat.fit`): model ``converted``."""
    if given is None:
        return cfg
    if cfg.model_file is not None:
        raise ConfigError(f"two networks: model_file={cfg.model_file!r} and the one handed to oat.fit; give one")
    if cfg.model not in (DEFAULT_MODEL, CONVERTED):
        raise ConfigError(f"two networks: model={cfg.model!r} and the one handed to oat.fit; give one")
    if isinstance(given, ConvertedNet) and cfg.model_kwargs:
        raise ConfigError("model_kwargs are a factory's arguments; the network handed to oat.fit is built already")
    return cfg.replace(model=CONVERTED)


def check_buildable(cfg: TrainConfig, out: Path, resuming: bool, given) -> None:
    """A ``converted`` config without a network to convert is refused before anything is read."""
    if cfg.model != CONVERTED or given is not None or cfg.model_file is not None:
        return
    if resuming and (out / "checkpoints" / "latest").exists():
        return  # the checkpoint records the network
    raise ConfigError(f"model {CONVERTED!r} is your own network: give model_file (oat train --model-file "
                      "FILE.py[:FACTORY]) or hand it to oat.fit (oat.fit(config, out, model=make_net))")


def build_network(cfg: TrainConfig, spec: Conditioning, data, out: Path, resuming: bool, given=None):
    """The network to train, checked against the data's image channels and classes."""
    channels, classes = data.image_shape[0], data.num_classes
    if cfg.model != CONVERTED:
        return create_model(cfg.model, spec, in_channels=channels, num_classes=classes, **cfg.model_kwargs)
    if isinstance(given, ConvertedNet):
        _check_given(given, spec)
        model = given
    elif given is None and resuming and (out / "checkpoints" / "latest").exists():
        # The network the run recorded, not the user's file as it is now (it may have been edited).
        model = build_from_state(read_state(resolve_checkpoint(out)))
    else:
        source = _source(cfg, given)
        extra = {k: v for k, v in (("in_channels", channels), ("num_classes", classes))
                 if k not in source.kwargs and source.accepts(k)}
        model = convert(source.with_kwargs(**extra), spec, ConvertOptions(input_shape=tuple(data.image_shape)))
    found = (model.arch["in_channels"], model.num_classes)
    if found != (channels, classes):
        raise ConfigError(f"the network takes {found[0]}-channel images and gives {found[1]} classes; {data.name} "
                          f"has {channels} channels and {classes} classes")
    return model


def _source(cfg: TrainConfig, given) -> ModelSource:
    if given is None:
        return ModelSource.from_file(cfg.model_file, cfg.model_kwargs)
    if isinstance(given, nn.Module):
        raise ConfigError("oat.fit needs a network its run can rebuild: hand it the factory (a function or class "
                          "defined in a file) or a network converted from one, not a module instance")
    return ModelSource.of_factory(given, cfg.model_kwargs)


def _check_given(model: ConvertedNet, spec: Conditioning) -> None:
    if model.source is None:
        raise ConfigError("oat.fit needs a network its run can rebuild: this one was converted from a module "
                          "instance; convert its factory (a function or class defined in a file) instead")
    diff = [f.name for f in dataclasses.fields(Conditioning) if f.compare
            and getattr(model.spec, f.name) != getattr(spec, f.name)]
    if diff:
        what = ", ".join(f"{k} {getattr(model.spec, k)!r} vs {getattr(spec, k)!r}" for k in diff)
        raise ConfigError(f"the network's conditioning differs from the config's ({what}); convert it with "
                          "oat.train.runner.build_spec(config), or hand oat.fit the factory")


def record(model: ConditionedNet) -> dict | None:
    """What ``config.json`` says of a converted network's source (its text is in :data:`COPY_NAME`)."""
    source = getattr(model, "source", None) if isinstance(model, ConvertedNet) else None
    if source is None:
        return None
    return {"copy": COPY_NAME, "file": source.filename, "factory": source.factory, "kwargs": source.kwargs,
            "sha256": source.sha256}


def write_copy(out: Path, model: ConditionedNet) -> None:
    """The run folder's readable copy of the network's source (checkpoints hold the text that loads)."""
    if record(model) is not None:
        atomic_write_text(out / COPY_NAME, model.source.text)
