"""Warm start (``init_from=RUN``): a new run begins from a trained run's weights.

Uses: OAT from a clean or a PGD-AT model (the shared layers already know the data), and
the weight-interpolation alternative (a robust model fine-tuned from a clean one, so the
two lie in one basin; Wortsman et al. 2022, model soups). Tensors are copied by name; what
the source lacks starts as a fresh model would:

* a single-BN source (a dedicated model) fills both the clean and the adversarial BN of a
  dual-BN model;
* FiLM layers and the λ encoding table keep their initialisation (with ``film_form=identity``
  the warm-started OAT model then computes exactly the source model at every λ).

Anything else that does not match (another architecture, width or class count) is refused.
"""

from __future__ import annotations

import re

import torch

from oat.checkpoint import read_tensors, resolve_checkpoint
from oat.errors import ConfigError

_ADV_BN = re.compile(r"(.*\.bns\.\d+\.)1(\..*)")
_FRESH = re.compile(r"(^|.*\.)(film\..*|lam_table)$")


def init_from_run(model: torch.nn.Module, source) -> tuple[int, int]:
    """Copy the weights of the run or checkpoint ``source`` into ``model``.

    Returns:
        ``(copied, fresh)``: tensors copied from the source, tensors left at initialisation.

    Raises:
        ConfigError: the source's network does not fit ``model``.
    """
    src = read_tensors(resolve_checkpoint(source) / "model.safetensors")
    own = model.state_dict()
    new, fresh = {}, 0
    for key, t in own.items():
        if _FRESH.match(key):  # FiLM and the λ table are this model's own
            fresh += 1
            continue
        s = src.get(key)
        if s is None and (m := _ADV_BN.match(key)):
            s = src.get(f"{m.group(1)}0{m.group(2)}")  # single BN → both branches
        if s is None or s.shape != t.shape:
            why = "missing" if s is None else f"shaped {tuple(s.shape)}, not {tuple(t.shape)}"
            raise ConfigError(f"init_from={source}: its network does not fit this model (tensor {key} {why}); "
                              "warm start needs the same architecture, widths and classes")
        new[key] = s.to(dtype=t.dtype)
    with torch.no_grad():
        for key, t in own.items():
            if key in new:
                t.copy_(new[key])
    return len(new), fresh
