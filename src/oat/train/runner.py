"""``oat train`` as a library call: config → data → model → objective → loop → checkpoints.

Run folder layout (``RUN/``): ``config.json`` (resolved config, data split, provenance),
``log.jsonl`` (one line per epoch), ``checkpoints/epoch-NNNN/`` + ``checkpoints/latest``,
then ``results.json`` and ``report.md`` from the evaluation.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from oat.conditioning import Conditioning
from oat.data import DeviceLoader, load_data
from oat.env import provenance, resolve_device, seed_everything
from oat.errors import ConfigError, RunFolderError
from oat.models import create_model
from oat.train.checkpoint import (
    atomic_write_text,
    load_optimizer,
    load_weights,
    read_state,
    read_tensors,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from oat.train.config import TrainConfig
from oat.train.loop import LoopState, fit
from oat.train.objectives import OAT, OATS, PGDAT, AttackConfig


def build_spec(cfg: TrainConfig) -> Conditioning:
    """The conditioning spec the objective needs: dedicated, OAT, or OATS (with widths)."""
    widths = tuple(cfg.widths) if cfg.objective == "oats" else (1.0,)
    if cfg.objective == "pgdat":
        return Conditioning.dedicated(cfg.lam, widths)
    return Conditioning(lams=tuple(cfg.lams), encoding=cfg.encoding, dim=cfg.enc_dim, film=True,
                        dual_bn=cfg.dual_bn, widths=widths, seed=cfg.seed)


def build_objective(cfg: TrainConfig, eps: float):
    attack = AttackConfig(eps=eps, steps=cfg.attack_steps, norm=cfg.attack_norm)
    continuous = cfg.encoding in ("continuous", "scalar")
    if cfg.objective == "pgdat":
        return PGDAT(cfg.lam, attack)
    if cfg.objective == "oats":
        return OATS(tuple(cfg.lams), attack, tuple(cfg.widths), continuous)
    return OAT(tuple(cfg.lams), attack, continuous)


def has_run(out: Path) -> bool:
    return (out / "config.json").exists() or (out / "checkpoints").exists()


def prepare_run_dir(out: Path, resume: bool, overwrite: bool, log=print) -> bool:
    """Create/inspect ``out``; returns True when an existing run is to be resumed."""
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out} exists and is not a folder")
    if has_run(out):
        if resume:
            return True
        if overwrite:
            log(f"--overwrite: replacing the run in {out}")
            shutil.rmtree(out)
        else:
            raise RunFolderError(f"{out} already holds a training run; pass --resume to continue it or "
                                 "--overwrite to replace it")
    elif resume:
        raise RunFolderError(f"--resume: {out} holds no run to resume")
    out.mkdir(parents=True, exist_ok=True)
    return False


def train(cfg: TrainConfig, out, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
          evaluate: bool = True, log=print) -> Path:
    """Train a model as ``cfg`` says, writing everything into the run folder ``out``.

    Args:
        cfg: the resolved configuration.
        out: run folder.
        resume: continue the run in ``out`` from its newest checkpoint (its saved config wins).
        overwrite: replace a run already in ``out``.
        progress: show a progress bar.
        evaluate: after training, sweep λ (× width) on ``cfg.eval_split`` and write the report.
        log: where one-line messages go.

    Returns:
        The run folder.
    """
    out = Path(out)
    resuming = prepare_run_dir(out, resume, overwrite, log)
    if resuming:
        cfg = TrainConfig.from_dict(json.loads((out / "config.json").read_text())["config"])
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, cfg.deterministic)
    data = load_data(cfg.data, cfg.data_dir, download=cfg.download, val_size=cfg.val_size, seed=cfg.seed)
    if cfg.batch_size > len(data.train):
        raise ConfigError(f"batch size {cfg.batch_size} is larger than the training split ({len(data.train)})")
    eps = data.default_eps if cfg.eps is None else cfg.eps
    model = create_model(cfg.model, build_spec(cfg), in_channels=data.image_shape[0],
                         num_classes=data.num_classes, **cfg.model_kwargs).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    state = LoopState()
    if resuming:
        state = _restore(out, model, optimizer)
        log(f"resuming {out} after epoch {state.epoch}/{cfg.epochs}")
    else:
        meta = {"config": cfg.to_dict(), "eps": eps, "data": data.info(), "world_size": 1,
                **provenance(device)}
        atomic_write_text(out / "config.json", json.dumps(meta, indent=1))
    loader = DeviceLoader(data.train, cfg.batch_size, shuffle=True, augment=data.augment, device=device,
                          seed=cfg.seed, channels_last=cfg.channels_last)

    def on_epoch_end(st: LoopState, stats: dict) -> None:
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(stats) + "\n")
        save_checkpoint(out / "checkpoints", f"epoch-{st.epoch:04d}", model, optimizer,
                        {"epoch": st.epoch, "step": st.step, "finished": st.epoch >= cfg.epochs,
                         "config": cfg.to_dict(), "eps": eps, "rng": rng_state()}, keep=cfg.keep_checkpoints)

    fit(model, build_objective(cfg, eps), loader, optimizer, epochs=cfg.epochs, base_lr=cfg.lr, device=device,
        state=state, on_epoch_end=on_epoch_end, amp=cfg.amp, seed=cfg.seed, nonfinite=cfg.nonfinite,
        progress=progress)
    if evaluate:
        from oat.evaluate.api import evaluate_run

        evaluate_run(out, split=cfg.eval_split, attacks=cfg.eval_attacks, subset=cfg.eval_subset,
                     device=device, progress=progress, log=log)
    return out


def _restore(out: Path, model, optimizer) -> LoopState:
    ckpt = resolve_checkpoint(out)
    doc = read_state(ckpt)
    load_weights(model, read_tensors(ckpt / "model.safetensors"), ckpt)
    load_optimizer(optimizer, ckpt, doc)
    if "rng" in doc:
        set_rng_state(doc["rng"])
    return LoopState(epoch=int(doc["epoch"]), step=int(doc["step"]))
