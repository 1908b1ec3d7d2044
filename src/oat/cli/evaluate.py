"""``oat evaluate``: sweep λ × width × attack on a trained run; results go into the run folder."""

from __future__ import annotations

import os

from oat.attacks.registry import list_attacks
from oat.attacks.threat import list_threats
from oat.cli.common import lam_or_all, number, progress_wanted
from oat.errors import ConfigError
from oat.evaluate.plan import SPLITS, EvalPlan
from oat.evaluate.plan import default as D


def add_parser(sub):
    p = sub.add_parser("evaluate", help="SA and RA of a run at every λ (× width) under chosen attacks",
                       description="Evaluate a run's newest checkpoint; rows are merged into RUN/results.json, "
                       "per-example outcomes into RUN/eval/<split>-per-example.csv, and RUN/report.md "
                       "and RUN/report.html are rewritten. Checkpoints are never touched. An interrupted "
                       "evaluation resumes when the same command is run again. Checks against gradient masking "
                       "run by default; a failed check makes the command exit non-zero (results are still written).")
    p.add_argument("run", help="run folder (or checkpoint folder inside it)")
    p.add_argument("--split", choices=SPLITS, default=D("split"), help=f"data split (default {D('split')})")
    p.add_argument("--lams", type=lam_or_all, nargs="+", default=None, help="λ values, or `all` (default)")
    p.add_argument("--widths", type=lam_or_all, nargs="+", default=None, help="widths, or `all` (default)")
    p.add_argument("--attacks", nargs="+", default=list(D("attacks")),
                   help=f"attacks: {', '.join(list_attacks())} (default {' '.join(D('attacks'))}); "
                   "with several, a `worst` row per example is added")
    p.add_argument("--subset", type=int, help="a seeded subset of N examples (default: the whole split)")
    p.add_argument("--eps", type=number, help="attack radius (default: the run's ε)")
    p.add_argument("--norm", choices=list_threats(), default=D("norm"), help=f"threat model (default {D('norm')})")
    p.add_argument("--batch-size", type=int, default=D("batch_size"),
                   help=f"examples per forward pass (default {D('batch_size')})")
    p.add_argument("--device", default=D("device"), help=f"cpu, cuda … (default {D('device')})")
    p.add_argument("--seed", type=int, default=D("seed"),
                   help=f"seed of the subset and the attacks' random starts (default {D('seed')})")
    p.add_argument("--data-dir", help="read the data set from here (default: the folder the run was trained on)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks (faster)")
    p.add_argument("--check-subset", type=int, default=D("check_subset"),
                   help=f"examples per check (default {D('check_subset')})")
    p.add_argument("--allow-failed-checks", action="store_true", help="exit 0 even if a check fails")
    p.add_argument("--no-resume", action="store_true", help="recompute every batch (ignore finished ones)")
    p.add_argument("--gallery", type=int, default=D("gallery"), metavar="N",
                   help=f"images shown in report.html with their adversarial versions at each λ (default "
                   f"{D('gallery')}; 0: none)")
    p.add_argument("--replace", action="store_true",
                   help="let these rows supersede earlier rows of the same checkpoint and setting at other subsets "
                   "(default: rows of another checkpoint, subset or ε are kept; reports use the largest n)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-ra", type=number, metavar="X",
                        help="print the λ (and width) with RA ≥ X (a fraction, e.g. 0.45) and the best SA, "
                        "chosen on the validation split (evaluated first if needed)")
    target.add_argument("--target-sa", type=number, metavar="X", help="the same with SA ≥ X and the best RA")
    return p


def plan_from_args(args) -> EvalPlan:
    """The evaluation plan the flags describe (checked before a checkpoint or data set is read)."""
    if args.subset is not None and args.subset < 1:
        raise ConfigError(f"--subset must be a positive number of examples; got {args.subset}")
    lams = None if args.lams is None or "all" in args.lams else args.lams
    widths = None if args.widths is None or "all" in args.widths else args.widths
    return EvalPlan(split=args.split, lams=lams, widths=widths, attacks=tuple(args.attacks), subset=args.subset,
                    eps=args.eps, norm=args.norm, batch_size=args.batch_size, device=args.device, seed=args.seed,
                    checks=not args.no_checks, check_subset=args.check_subset,
                    allow_failed_checks=args.allow_failed_checks, resume=not args.no_resume,
                    data_dir=args.data_dir, replace=args.replace, gallery=args.gallery)


def run(args) -> int:
    from oat.evaluate.api import choose_operating_point, evaluate_run

    plan = plan_from_args(args)
    progress = progress_wanted(args.no_progress)
    if args.target_ra is not None or args.target_sa is not None:
        kw = {k: getattr(plan, k) for k in ("subset", "batch_size", "device", "seed", "checks", "check_subset",
                                             "allow_failed_checks", "resume", "data_dir", "replace")}
        row = choose_operating_point(args.run, target_ra=args.target_ra, target_sa=args.target_sa,
                                     attacks=args.attacks, eps=args.eps, norm=args.norm, progress=progress, **kw)
        return 0 if row is not None else 1
    evaluate_run(args.run, plan, progress=progress)
    return 0


def hoist_run(argv: list[str]) -> list[str]:
    """Let RUN come after ``--attacks a b`` (or ``--lams``/``--widths``), whose ``nargs="+"`` would take it.

    The last bare word that names an existing file or folder, when it follows such a list, is
    moved to the front of the sub-command's arguments: that is the run. Everything else is
    left for argparse.
    """
    lists, bare = ("--attacks", "--lams", "--widths"), None
    in_list = False
    for i, a in enumerate(argv):
        if a.startswith("-"):
            in_list = a.split("=", 1)[0] in lists and "=" not in a
        elif in_list and os.path.exists(a):
            bare = i
    if bare is None:
        return argv
    return [argv[bare], *argv[:bare], *argv[bare + 1:]]
