"""Training as a library call: config → data → model → objective → loop → checkpoints.

It trains and nothing else; the evaluation and report that follow ``oat train`` are
:mod:`oat.pipeline`'s. Run folder layout (``RUN/``): ``config.json`` (resolved config, data
split, provenance), ``log.jsonl`` (one line per epoch), ``checkpoints/epoch-NNNN/`` +
``checkpoints/latest``.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import torch

from oat.checkpoint import (
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
from oat.conditioning import Conditioning
from oat.data import DeviceLoader, load_data
from oat.env import provenance, seed_everything
from oat.errors import ConfigError, RunFolderError, TrainingInterrupted
from oat.rundir import RunDirSession, checkpoint_written, create_run_dir, inspect_run_dir
from oat.train import distributed as ddp
from oat.train.config import TrainConfig
from oat.train.loop import LoopOptions, LoopState, StopFlag, catch_signals, fit
from oat.train.network import build_network, check_buildable, config_for, record, write_copy
from oat.train.objectives import OAT, OATS, PGDAT, AttackConfig
from oat.train.precision import resolve_amp, time_train_pass
from oat.train.preflight import check_config, check_model
from oat.train.sampling import LamSampling
from oat.train.warm_start import init_from_run


def build_spec(cfg: TrainConfig) -> Conditioning:
    """The conditioning spec the objective needs: dedicated, OAT, or OATS (with widths)."""
    widths = tuple(cfg.widths)
    if cfg.objective != "oats" and len(widths) != 1:
        # One width for pgdat/oat: a model of that width alone (the dedicated slim baseline).
        raise ConfigError(f"--widths {' '.join(f'{w:g}' for w in widths)}: a {cfg.objective} model has one "
                          "width (train one run per width); several widths at once is --objective oats")
    if cfg.objective == "pgdat":
        return Conditioning.dedicated(cfg.lams[0], widths)
    return Conditioning(lams=tuple(cfg.lams), encoding=cfg.encoding, dim=cfg.enc_dim, film=cfg.film,
                        dual_bn=cfg.dual_bn, widths=widths, seed=cfg.seed, film_form=cfg.film_form)


def param_groups(model: torch.nn.Module, film_lr_scale: float) -> list[dict]:
    """One group, or (with ``film_lr_scale`` ≠ 1) FiLM's parameters in a group of their own whose
    lr is scaled: identity-form FiLM starts at zero λ dependence and learns it from there."""
    film = [p for n, p in model.named_parameters() if ".film." in f".{n}"]
    if film_lr_scale == 1.0 or not film:
        return [{"params": list(model.parameters())}]
    ids = {id(p) for p in film}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": rest}, {"params": film, "lr_scale": film_lr_scale}]


def build_objective(cfg: TrainConfig, spec: Conditioning, eps: float):
    """The objective of ``cfg``: its λ set, widths and λ draw are read from ``spec``, the model's own."""
    attack = AttackConfig(eps=eps, steps=cfg.attack_steps, norm=cfg.attack_norm,
                          precision=cfg.train_attack_precision)
    if cfg.objective == "pgdat":
        return PGDAT(spec, attack, clean_pass_at_1=cfg.pgdat_clean_pass_at_1)
    sampling = LamSampling(cfg.zero_share, None if cfg.lam_weights is None else tuple(cfg.lam_weights))
    discrete = not cfg.continuous_draw  # the scalar encoding may train on the discrete set (the authors')
    if cfg.objective == "oats":
        return OATS(spec, attack, sampling=sampling, discrete_draw=discrete)
    return OAT(spec, attack, sampling=sampling, discrete_draw=discrete)


def train(cfg: TrainConfig, out, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
          log=print, dist_timeout: float | None = None, step_hook=None, model=None) -> Path:
    """Train a model as ``cfg`` says, writing everything into the run folder ``out``.

    Under ``torchrun`` every process calls this; only rank 0 writes (logs, progress bar,
    checkpoints, config.json); see :mod:`oat.train.distributed`. Evaluation is not its business:
    :func:`oat.pipeline.train_and_evaluate` follows training with the sweep and the report.

    Args:
        cfg: the resolved configuration (``batch_size`` is the global batch).
        out: run folder.
        resume: continue the run in ``out`` from its newest checkpoint (its saved config wins).
        overwrite: replace a run already in ``out``.
        progress: show a progress bar.
        log: where one-line messages go.
        dist_timeout: seconds a collective may wait for the other ranks (default
            ``$OAT_DIST_TIMEOUT`` or 600).
        step_hook: optional ``(state, model)`` callable after every optimiser step (tests).
        model: your own network instead of ``cfg.model``: a factory (a function or class defined in
            a file, called with ``cfg.model_kwargs``) or a network :func:`oat.convert` made from one,
            trained in place (see :mod:`oat.train.network`); the run records its source.

    Returns:
        The run folder.

    Raises:
        TrainingInterrupted: SIGINT/SIGTERM stopped training after a checkpoint was saved.
    """
    out = Path(out)
    cfg = config_for(cfg, model)
    info, device = ddp.setup(cfg.device, dist_timeout)
    # Only rank 0 writes, so only it locks the folder, until training ends.
    try:
        with RunDirSession(out, info.is_main, log) as session:
            cfg, state = _run(cfg, out, resume, overwrite, info, device, progress, log, step_hook, session, model)
            if state.stopped:
                raise TrainingInterrupted(state.stopped, f"stopped by {signal.Signals(state.stopped).name} "
                                          f"after epoch {state.epoch} + {state.batch} batches (step {state.step}); "
                                          f"checkpoint saved; resume with: oat train --out {out} --resume")
    finally:
        ddp.cleanup()  # also when the lock is refused: the other ranks then fail fast, not at a timeout
    return out


def _run(cfg, out, resume, overwrite, info, device, progress, log, step_hook, session, given):
    """Check, then train (every rank); returns the checked config (a resume's saved one; `amp=auto` is
    resolved when training starts and recorded in config.json) and the state."""
    try:
        cfg, resuming = _prepare(cfg, out, resume, overwrite, info, given)
        if resuming and info.is_main:
            session.resumed()
        state = _train(cfg, out, resuming, overwrite, info, device, progress and info.is_main,
                       log if info.is_main else _quiet, step_hook, given)
        if not state.stopped:
            # Every rank reaches the teardown together: a rank that destroyed its gloo group while
            # the other was still writing the last checkpoint aborted at exit ("terminate called
            # without an active exception"), failing an otherwise finished run.
            ddp.barrier(info)
    finally:
        ddp.cleanup()
    return cfg, state


def _quiet(*_args, **_kw) -> None:
    return None


def _prepare(cfg: TrainConfig, out: Path, resume: bool, overwrite: bool, info, given=None):
    """Every rank checks the run folder (changing nothing) and, to resume, reads its saved config."""
    resuming = inspect_run_dir(out, resume, overwrite)
    ddp.barrier(info)
    if resuming:
        try:
            saved = json.loads((out / "config.json").read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError):
            raise RunFolderError(f"--resume: {out / 'config.json'} is missing or corrupt") from None
        if not isinstance(saved, dict):
            raise RunFolderError(f"--resume: {out / 'config.json'} is corrupt")
        cfg = config_for(TrainConfig.from_saved(saved), given)
    # The whole configuration, before the data is read or anything is written.
    check_config(cfg)
    check_model(cfg, build_spec(cfg))
    check_buildable(cfg, out, resuming, given)
    return cfg, resuming


def _train(cfg: TrainConfig, out: Path, resuming: bool, overwrite: bool, info, device, progress: bool, log,
           step_hook, given=None) -> LoopState:
    seed_everything(cfg.seed, cfg.deterministic)
    data = load_data(cfg.data, cfg.data_dir, download=cfg.download, val_size=cfg.val_size, seed=cfg.seed)
    if len(data.train) == 0:
        raise ConfigError(f"the training split of {cfg.data} is empty")
    if cfg.batch_size > len(data.train):
        raise ConfigError(f"batch size {cfg.batch_size} is larger than the training split ({len(data.train)})")
    local_batch = ddp.local_batch_size(cfg.batch_size, info.world_size)
    eps = data.default_eps if cfg.eps is None else cfg.eps
    model = build_network(cfg, build_spec(cfg), data, out, resuming, given).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # foreach: one multi-tensor op per update term instead of one per parameter (the default
    # on CUDA; on the CPU it is faster too, and equal bit for bit).
    optimizer = torch.optim.SGD(param_groups(model, cfg.film_lr_scale), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay, foreach=True)
    state = LoopState()
    if resuming:
        state = _restore(out, model, optimizer, info)
        for group in optimizer.param_groups:  # a checkpoint of an earlier version saved foreach=None
            group["foreach"] = True
        log(f"resuming {out} after epoch {state.epoch}/{cfg.epochs}" +
            (f" + {state.batch} batches" if state.batch else ""))
    elif cfg.init_from:
        copied, fresh = init_from_run(model, cfg.init_from)
        log(f"init_from {cfg.init_from}: {copied} tensors copied, {fresh} at initialisation (FiLM, λ table)")
    # drop_last with several ranks: every rank must take the same number of steps.
    loader = DeviceLoader(data.train, local_batch, shuffle=True, augment=data.augment, device=device,
                          seed=cfg.seed, channels_last=cfg.channels_last, rank=info.rank,
                          world_size=info.world_size, drop_last=cfg.drop_last or info.enabled)
    if len(loader) == 0:
        raise ConfigError(f"batch size {cfg.batch_size} leaves no full batch of the training split")
    objective = build_objective(cfg, model.spec, eps)
    amp_record = None
    if not resuming:  # a resumed run keeps the precision it started with (its config says which)
        cfg, amp_record = _choose_amp(cfg, model, (local_batch, *data.image_shape), device, info)
    if info.is_main and not resuming:  # the inputs are good: only now create (or replace) the run folder
        create_run_dir(out, overwrite, log)
        meta = {"config": cfg.to_dict(), "eps": eps, "data": data.info(), "world_size": info.world_size,
                "amp": amp_record,
                "distributed": {**info.record(), "global_batch": cfg.batch_size, "batch_per_rank": local_batch,
                                "lr_rule": "lr is for the global batch; not rescaled with world size"},
                **provenance(device)}
        if record(model) is not None:  # a converted network: where its source came from
            meta["network"] = record(model)
            write_copy(out, model)
        atomic_write_text(out / "config.json", json.dumps(meta, indent=1))
    net = ddp.wrap(model, info, device)
    ckpt = _Checkpointer(out, model, optimizer, cfg, eps, info, device, log)
    stop = StopFlag()
    step_hook = step_hook or ddp.sync_check_hook(out, info)
    try:
        with catch_signals(stop):
            opts = LoopOptions(epochs=cfg.epochs, base_lr=cfg.lr, device=device, amp=cfg.amp, seed=cfg.seed,
                               nonfinite=cfg.nonfinite, progress=progress, info=info, step_hook=step_hook)
            fit(net, objective, loader, optimizer, opts, state=state, on_epoch_end=ckpt.epoch_end,
                on_stop=ckpt.mid_epoch, stop=stop)
    except RuntimeError as e:
        if not info.enabled:
            raise
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ddp.DistributedError(f"rank {info.rank}: a distributed step failed (another process died, or "
                                   f"did not answer within {info.timeout_s:g} s): {first}") from e
    return state


def _choose_amp(cfg: TrainConfig, model, shape: tuple[int, ...], device, info) -> tuple[TrainConfig, dict]:
    """``cfg`` with ``amp`` resolved to ``bf16`` or ``off`` (see :mod:`oat.train.precision`), and why."""
    amp, rec = resolve_amp(
        cfg.amp, device,
        measure=lambda: time_train_pass(model, shape, model.spec.lams[-1], channels_last=cfg.channels_last),
        # The training PGD outside autocast costs the same in both precisions.
        fp32_passes=cfg.attack_steps if cfg.train_attack_precision == "fp32" else 0,
        # A timing must not decide a reproducible run, nor differ between the processes of one.
        reproducible=cfg.deterministic or info.enabled,
        why_reproducible="deterministic" if cfg.deterministic else "several processes",
    )
    return cfg.replace(amp=amp), rec


class _Checkpointer:
    """Epoch-end and mid-epoch (signal) checkpoints: BN stats averaged on all ranks, written by rank 0."""

    def __init__(self, out, model, optimizer, cfg, eps, info, device, log=None):
        self.out, self.model, self.optimizer, self.cfg, self.eps = out, model, optimizer, cfg, eps
        self.info, self.device, self.log = info, device, log or _quiet

    def _state(self, st: LoopState) -> dict:
        return {"epoch": st.epoch, "step": st.step, "finished": st.epoch >= self.cfg.epochs,
                "config": self.cfg.to_dict(), "eps": self.eps, "rng": rng_state(),
                "world_size": self.info.world_size}

    def epoch_end(self, st: LoopState, stats: dict) -> None:
        ddp.average_bn_stats(self.model, self.info)
        if not self.info.is_main:
            return
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(stats) + "\n")
        save_checkpoint(self.out / "checkpoints", f"epoch-{st.epoch:04d}", self.model, self.optimizer,
                        self._state(st), keep=self.cfg.keep_checkpoints)
        checkpoint_written(self.out)
        self.log(epoch_line(stats, self.cfg.epochs))

    def mid_epoch(self, st: LoopState) -> None:
        """After a stop signal: the batches done, and every rank's generator state, so the
        resumed epoch continues bit-exactly (same world size)."""
        ddp.average_bn_stats(self.model, self.info)
        gens = [st.gen_state]
        if self.info.enabled:
            gens = [None] * self.info.world_size
            torch.distributed.all_gather_object(gens, st.gen_state)
        if not self.info.is_main:
            return
        doc = {**self._state(st), "batch": st.batch, "gen_states": gens, "partial": st.partial}
        save_checkpoint(self.out / "checkpoints", f"epoch-{st.epoch:04d}-step-{st.step:08d}", self.model,
                        self.optimizer, doc, keep=self.cfg.keep_checkpoints)
        checkpoint_written(self.out)


def epoch_line(stats: dict, epochs: int) -> str:
    """One line per finished epoch, left on the screen (the progress bar of an epoch is not)."""
    parts = [f"epoch {stats.get('epoch', '?')}/{epochs}", f"loss {stats.get('loss', float('nan')):.4f}"]
    if "train_sa" in stats:
        parts.append(f"train SA {100 * stats['train_sa']:.1f}%")
    if "train_ra" in stats:
        parts.append(f"RA {100 * stats['train_ra']:.1f}%")
    parts.append(f"{stats.get('seconds', 0):.1f} s")
    if stats.get("skipped_steps"):
        parts.append(f"{stats['skipped_steps']} non-finite steps skipped")
    return "  ".join(parts)


def _restore(out: Path, model, optimizer, info) -> LoopState:
    """Every rank loads the same checkpoint (a run killed before its first one starts afresh)."""
    if not (out / "checkpoints" / "latest").exists():
        if info.is_main:
            _truncate_log(out / "log.jsonl", 0)
        return LoopState()
    ckpt = resolve_checkpoint(out)
    doc = read_state(ckpt)
    load_weights(model, read_tensors(ckpt / "model.safetensors"), ckpt)
    load_optimizer(optimizer, ckpt, doc)
    if "rng" in doc:
        set_rng_state(doc["rng"])
    state = LoopState(epoch=int(doc["epoch"]), step=int(doc["step"]), batch=int(doc.get("batch", 0)))
    if state.batch:
        gens = doc.get("gen_states") or []
        if len(gens) != info.world_size:
            raise ConfigError(f"{ckpt} was saved mid-epoch by {len(gens)} process(es); resume it with the "
                              f"same number (this job has {info.world_size})")
        state.gen_state, state.partial = gens[info.rank], dict(doc.get("partial") or {})
    if info.is_main:
        _truncate_log(out / "log.jsonl", state.epoch)
    return state


def _truncate_log(log: Path, epoch: int) -> None:
    """Drop log lines of epochs after the checkpoint (a crash may have logged them without one)."""
    if not log.exists():
        return
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    keep = [ln for ln in lines if _epoch_of(ln) <= epoch]
    if len(keep) != len(lines):
        atomic_write_text(log, "".join(ln + "\n" for ln in keep))


def _epoch_of(line: str) -> int:
    try:
        return int(json.loads(line).get("epoch", 0))
    except (ValueError, AttributeError):
        return 1 << 30
