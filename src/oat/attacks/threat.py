"""Threat models as three small operations (random start, step, project), looked up by name.

Pixels live in [0, 1]; every operation keeps ``x + delta`` inside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from oat.errors import ConfigError


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def _rand(shape, like: torch.Tensor, generator: torch.Generator | None, normal: bool = False) -> torch.Tensor:
    fn = torch.randn if normal else torch.rand
    gen_device = generator.device if generator is not None else like.device
    return fn(shape, generator=generator, device=gen_device, dtype=like.dtype).to(like.device)


def linf_init(x, eps, generator):
    return (_rand(x.shape, x, generator) * 2 - 1) * eps


def linf_step(delta, grad, step_size):
    return delta + step_size * grad.sign()


def linf_project(delta, eps):
    return delta.clamp(-eps, eps)


def l2_init(x, eps, generator):
    # Uniform in the L2 ball: a Gaussian direction with radius eps·U^(1/d).
    d = _rand(x.shape, x, generator, normal=True)
    dim = x[0].numel()
    r = _rand((x.shape[0],), x, generator).pow(1.0 / dim).view(-1, *([1] * (x.dim() - 1)))
    return d / _flat_norm(d) * r * eps


def l2_step(delta, grad, step_size):
    return delta + step_size * grad / _flat_norm(grad)


def l2_project(delta, eps):
    return delta * (eps / _flat_norm(delta)).clamp(max=1.0)


@dataclass(frozen=True)
class Threat:
    name: str
    init: Callable
    step: Callable
    project: Callable


THREATS = {
    "linf": Threat("linf", linf_init, linf_step, linf_project),
    "l2": Threat("l2", l2_init, l2_step, l2_project),
}


def get_threat(name: str) -> Threat:
    if name not in THREATS:
        raise ConfigError(f"unknown threat model {name!r}; known: {', '.join(THREATS)}")
    return THREATS[name]


def list_threats() -> list[str]:
    return sorted(THREATS)
