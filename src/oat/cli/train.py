"""``oat train``: train a dedicated (pgdat), OAT or OATS model into a run folder."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from oat.attacks.registry import list_attacks
from oat.cli.common import number, progress_wanted
from oat.conditioning import PAPER_LAMS, list_encodings
from oat.data import list_datasets
from oat.evaluate.plan import SPLITS, EvalPlan
from oat.models import list_models
from oat.models.source import DEFAULT_FACTORY
from oat.pipeline import AFTER_TRAINING, split_eval_keys
from oat.train.config import OBJECTIVES, TrainConfig, parse_overrides

FLAG_KEYS = ("data", "data_dir", "download", "model", "model_file", "objective", "lam", "lams", "widths", "encoding",
             "eps", "epochs", "batch_size", "lr", "seed", "deterministic", "device", "amp")


def add_parser(sub):
    p = sub.add_parser("train", help="train a model (OAT, OATS or dedicated PGD-AT)",
                       description="Train a model into a run folder: per-epoch checkpoints and logs, then a λ "
                       f"sweep on the {AFTER_TRAINING.split} split and a report. "
                       "Precedence: recipe < flags < key=value.")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="any config key (see `oat recipes --show NAME`), e.g. attack_steps=10 lams=[0,1]")
    p.add_argument("--recipe", help="a recipe name from `oat recipes`, or a YAML file")
    p.add_argument("--data", help=f"data set: {', '.join(list_datasets())}")
    p.add_argument("--data-dir", help="folder holding the data set's official files")
    p.add_argument("--download", action="store_true", default=None, help="download the data set if missing")
    p.add_argument("--model", help=f"model: {', '.join(list_models())} (details: `oat models`)")
    p.add_argument("--model-file", metavar="FILE.py[:FACTORY]",
                   help=f"your own CNN instead of --model: FACTORY (default {DEFAULT_FACTORY}), a function or class "
                   "in FILE.py, returns the nn.Module; each BatchNorm2d becomes dual BN + FiLM (oat.convert), "
                   "model_kwargs={...} are its arguments, and the run records the file's source")
    p.add_argument("--objective", choices=OBJECTIVES, help="pgdat (dedicated), oat, or oats (OAT + slimming)")
    p.add_argument("--lam", type=number, help="λ of a dedicated (pgdat) model (the same as --lams X)")
    p.add_argument("--lams", type=number, nargs="+",
                   help=f"λ set of an OAT/OATS model (default {' '.join(f'{v:g}' for v in PAPER_LAMS)})")
    p.add_argument("--widths", type=number, nargs="+", help="width multipliers of an OATS model")
    p.add_argument("--encoding", help=f"λ encoding: {', '.join(list_encodings())}")
    p.add_argument("--eps", type=number, help="L∞ radius in pixel units, e.g. 8/255 (default per data set)")
    p.add_argument("--epochs", type=int, help="training epochs")
    p.add_argument("--batch-size", type=int, help="batch size (global, across processes)")
    p.add_argument("--lr", type=number, help="initial learning rate (cosine schedule)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--deterministic", action="store_true", default=None, help="bit-reproducible kernels")
    p.add_argument("--device", help="cpu, cuda, cuda:1 … (default: auto)")
    p.add_argument("--amp", choices=("auto", "bf16", "off"),
                   help="bf16 autocast in training (auto: on CUDA, and on a CPU where measured faster)")
    p.add_argument("--out", help="run folder (default runs/<data>-<model>-<objective>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--no-eval", action="store_true", help="skip the λ sweep after training")
    p.add_argument("--eval-split", choices=SPLITS,
                   help=f"split of the sweep after training (default {AFTER_TRAINING.split})")
    p.add_argument("--eval-attacks", nargs="+", metavar="NAME",
                   help=f"attacks of the sweep after training: {', '.join(list_attacks())} "
                   f"(default {' '.join(AFTER_TRAINING.attacks)})")
    p.add_argument("--eval-subset", type=int, metavar="N", help="a seeded subset of N examples for that sweep")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dist-timeout", type=float, metavar="S",
                   help="under torchrun: seconds to wait for the other processes before failing (default 600)")
    return p


EVAL_FLAGS = ("eval_split", "eval_attacks", "eval_subset")


def config_from_args(args) -> TrainConfig:
    """Recipe, then flags, then key=value overrides, validated as one config."""
    return configs_from_args(args)[0]


def configs_from_args(args) -> tuple[TrainConfig, EvalPlan]:
    """The training config and the evaluation plan after training: recipe < flags < key=value,
    where ``eval_*`` keys (``eval_split=test``, ``--eval-attacks``) set the plan."""
    from oat.pipeline import plan_after_training
    from oat.recipes import load_recipe

    recipe = dict(load_recipe(args.recipe)) if args.recipe else {}
    flags = {k: getattr(args, k) for k in FLAG_KEYS + EVAL_FLAGS if getattr(args, k, None) is not None}
    merged: dict = {}
    for source in (recipe, flags, parse_overrides(args.overrides)):
        for keys in (("lam", "lams"), ("model", "model_file")):
            # lam=X is lams=[X], and a model file replaces the model: a later source's choice replaces an earlier one's
            if any(k in source for k in keys):
                for k in keys:
                    merged.pop(k, None)
        merged.update(source)
    train, plan = split_eval_keys(merged)
    return TrainConfig.from_dict(train), plan_after_training(plan)


def default_out(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.data}-{cfg.model}-{cfg.objective}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(args) -> int:
    from oat.pipeline import train_and_evaluate

    cfg, plan = configs_from_args(args)
    if args.resume and not args.out:
        from oat.errors import ConfigError

        raise ConfigError("--resume needs --out RUN (the run folder to continue)")
    if not args.out and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        from oat.errors import ConfigError

        # each process would stamp its own time into the default name
        raise ConfigError("under torchrun pass --out RUN (every process must write to the same run folder)")
    out = Path(args.out) if args.out else default_out(cfg)
    main = int(os.environ.get("RANK", "0") or 0) == 0
    train_and_evaluate(cfg, out, plan=plan, evaluate=not args.no_eval, resume=args.resume, overwrite=args.overwrite,
                       progress=progress_wanted(args.no_progress), dist_timeout=args.dist_timeout)
    given = [k for k in FLAG_KEYS + EVAL_FLAGS if getattr(args, k, None) is not None] + list(args.overrides)
    if args.resume and (given or args.recipe) and main:
        # Resuming continues the saved run exactly; silently dropping options would mislead. Said
        # after the run, so that an error stays the only line a failed resume prints.
        print(f"note: --resume continued the saved configuration; ignored: "
              f"{', '.join(given + (['--recipe'] if args.recipe else []))}", file=sys.stderr)
    if main:
        print(f"run folder: {out}")
    return 0
