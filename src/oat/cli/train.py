"""``oat train``: train a dedicated (pgdat), OAT or OATS model into a run folder."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from oat.cli.common import number, progress_wanted
from oat.train.config import OBJECTIVES, TrainConfig, parse_overrides

FLAG_KEYS = ("data", "data_dir", "download", "model", "objective", "lam", "lams", "widths", "encoding", "eps",
             "epochs", "batch_size", "lr", "seed", "deterministic", "device", "amp")


def add_parser(sub):
    p = sub.add_parser("train", help="train a model (OAT, OATS or dedicated PGD-AT)",
                       description="Train a model into a run folder: per-epoch checkpoints and logs, then a λ "
                       "sweep on the validation split and a report. Precedence: recipe < flags < key=value.")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="any config key (see `oat recipes --show NAME`), e.g. attack_steps=10 lams=[0,1]")
    p.add_argument("--recipe", help="a recipe name from `oat recipes`, or a YAML file")
    p.add_argument("--data", help="data set: digits, mnist, fashion-mnist, cifar10, cifar100, svhn, stl10")
    p.add_argument("--data-dir", help="folder holding the data set's official files")
    p.add_argument("--download", action="store_true", default=None, help="download the data set if missing")
    p.add_argument("--model", help="model name (see `oat models`)")
    p.add_argument("--objective", choices=OBJECTIVES, help="pgdat (dedicated), oat, or oats (OAT + slimming)")
    p.add_argument("--lam", type=number, help="λ of a dedicated (pgdat) model")
    p.add_argument("--lams", type=number, nargs="+", help="λ set of an OAT/OATS model (default 0 .1 .2 .3 .4 1)")
    p.add_argument("--widths", type=number, nargs="+", help="width multipliers of an OATS model")
    p.add_argument("--encoding", help="λ encoding: random-orthogonal, one-hot, dct, scalar, continuous")
    p.add_argument("--eps", type=number, help="L∞ radius in pixel units, e.g. 8/255 (default per data set)")
    p.add_argument("--epochs", type=int, help="training epochs")
    p.add_argument("--batch-size", type=int, help="batch size (global, across processes)")
    p.add_argument("--lr", type=number, help="initial learning rate (cosine schedule)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--deterministic", action="store_true", default=None, help="bit-reproducible kernels")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: auto)")
    p.add_argument("--amp", choices=("auto", "bf16", "off"), help="bf16 autocast in training (auto: on CUDA)")
    p.add_argument("--out", help="run folder (default runs/<data>-<model>-<objective>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--no-eval", action="store_true", help="skip the λ sweep after training")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dist-timeout", type=float, metavar="S",
                   help="under torchrun: seconds to wait for the other processes before failing (default 600)")
    return p


def config_from_args(args) -> TrainConfig:
    """Recipe, then flags, then key=value overrides, validated as one config."""
    from oat.recipes import load_recipe

    merged: dict = dict(load_recipe(args.recipe)) if args.recipe else {}
    for key in FLAG_KEYS:
        v = getattr(args, key, None)
        if v is not None:
            merged[key] = v
    merged.update(parse_overrides(args.overrides))
    return TrainConfig.from_dict(merged)


def default_out(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.data}-{cfg.model}-{cfg.objective}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(args) -> int:
    from oat.train.runner import train

    cfg = config_from_args(args)
    if args.resume and not args.out:
        from oat.errors import ConfigError

        raise ConfigError("--resume needs --out RUN (the run folder to continue)")
    if not args.out and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        from oat.errors import ConfigError

        # each process would stamp its own time into the default name
        raise ConfigError("under torchrun pass --out RUN (every process must write to the same run folder)")
    out = Path(args.out) if args.out else default_out(cfg)
    main = int(os.environ.get("RANK", "0") or 0) == 0
    train(cfg, out, resume=args.resume, overwrite=args.overwrite, progress=progress_wanted(args.no_progress),
          evaluate=not args.no_eval, dist_timeout=args.dist_timeout)
    given = [k for k in FLAG_KEYS if getattr(args, k, None) is not None] + list(args.overrides)
    if args.resume and (given or args.recipe) and main:
        # Resuming continues the saved run exactly; silently dropping options would mislead. Said
        # after the run, so that an error stays the only line a failed resume prints.
        print(f"note: --resume continued the saved configuration; ignored: "
              f"{', '.join(given + (['--recipe'] if args.recipe else []))}", file=sys.stderr)
    if main:
        print(f"run folder: {out}")
    return 0
