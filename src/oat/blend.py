"""``oat mix`` (:func:`mix`): the two-model alternative to OAT as a run folder that ``oat evaluate`` takes.

Given two trained runs (typically a clean model, λ = 0, and a robust one, λ = 1), writes a run
folder holding one blended model (:mod:`oat.models.mixture`) whose knob α replaces λ: α = 0 is
the first run's model, α = 1 the second's. ``oat evaluate MIX`` then sweeps α with every attack
run through the blend as one model, and the report shows its SA–RA curve like an OAT model's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from oat.checkpoint import atomic_write_text, load_model, resolve_checkpoint, save_checkpoint
from oat.data import load_data
from oat.errors import ConfigError, RunFolderError
from oat.models import create_model
from oat.models.mixture import COMBINES, alpha_spec
from oat.rundir import write_marker

DEFAULT_ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def mix(run_a, run_b, out, *, combine: str = "probs", alphas=DEFAULT_ALPHAS, member_lams=(None, None),
        bn: str = "interpolate", bn_images: int = 2048, log=print) -> Path:
    """Blend two trained runs into the run folder ``out``.

    Args:
        run_a, run_b: run (or checkpoint) folders; α = 0 is ``run_a``'s model, α = 1 ``run_b``'s.
        out: a new (or empty) folder for the blended run.
        combine: ``"probs"`` or ``"logits"`` (output mixture) or ``"weights"`` (weight interpolation,
            same architecture; meaningful when one was fine-tuned from the other, ``init_from``).
        alphas: the α grid that ``oat evaluate`` sweeps by default (any α in [0, 1] is accepted,
            except with ``bn="reestimate"``).
        member_lams: the λ each member runs at (None: its only trained λ; needed for OAT members).
        bn: weight interpolation only: ``"interpolate"`` the BN statistics too, or ``"reestimate"``
            them at each α of the grid on ``bn_images`` training images of the first run's data.
        log: where one-line messages go.

    Returns:
        The run folder.
    """
    if combine not in COMBINES:
        raise ConfigError(f"unknown combine {combine!r}; known: {', '.join(COMBINES)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunFolderError(f"{out} exists and is not an empty folder; oat mix writes a new run folder")
    members = [load_model(r) for r in (run_a, run_b)]
    lams = [_member_lam(m, v, r) for m, v, r in zip(members, member_lams, (run_a, run_b))]
    _check_compatible(members)
    spec = alpha_spec(alphas)
    first = members[0]
    kw = dict(members=[{"arch": m.arch, "conditioning": m.spec.to_dict()} for m in members], member_lams=lams)
    if combine == "weights":
        kw.update(bn=bn, bn_alphas=list(spec.lams) if bn == "reestimate" else [])
        name = "interp-weights"
    else:
        kw.update(combine=combine)
        name = "mix-outputs"
    model = create_model(name, spec, in_channels=first.arch["in_channels"], num_classes=first.num_classes, **kw)
    for net, src in zip(model.members, members):
        net.load_state_dict(src.state_dict())
    model.eval()
    cfg = dict(first.checkpoint_state.get("config", {}))
    if combine == "weights" and bn == "reestimate":
        model.reestimate_bn(_train_images(cfg, bn_images))
    eps = max(float(m.checkpoint_state.get("eps", 0.0)) for m in members)
    sources = [{"run": str(Path(r)), "checkpoint": resolve_checkpoint(r).name, "lam": v}
               for r, v in zip((run_a, run_b), lams)]
    blend = {"combine": combine, "bn": bn if combine == "weights" else None, "members": sources}
    cfg.update(objective="mix", model=name)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out)
    save_checkpoint(out / "checkpoints", "mix", model, None, {"config": cfg, "eps": eps, "mix": blend,
                                                               "finished": True})
    atomic_write_text(out / "config.json", json.dumps({"config": cfg, "eps": eps, "mix": blend}, indent=1))
    log(f"mix: {name} ({combine}) of {run_a} (α = 0) and {run_b} (α = 1) → {out}")
    return out


def _member_lam(model, lam, run) -> float:
    if lam is None:
        if len(model.spec.lams) != 1 and not model.spec.continuous:
            trained = ", ".join(f"{v:g}" for v in model.spec.lams)
            raise ConfigError(f"{run} is conditioned on λ ({trained}): say which λ it runs at (--member-lams)")
        return float(model.spec.lams[0]) if len(model.spec.lams) == 1 else 1.0
    return model.spec.check_lam(float(lam))


def _check_compatible(members) -> None:
    a, b = (m.arch for m in members)
    if (a["in_channels"], a["num_classes"]) != (b["in_channels"], b["num_classes"]):
        raise ConfigError("the two runs take different images or classes; they cannot be mixed")
    da, db = (m.checkpoint_state.get("config", {}).get("data") for m in members)
    if da != db:
        raise ConfigError(f"the two runs were trained on different data ({da} and {db})")


def _train_images(cfg: dict, n: int) -> torch.Tensor:
    data = load_data(cfg.get("data", "digits"), cfg.get("data_dir"), val_size=cfg.get("val_size"),
                     seed=cfg.get("seed", 0))
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(data.train), generator=g)[:n]
    return data.train.images[idx].float() / 255.0


__all__ = ["DEFAULT_ALPHAS", "mix"]
