"""``oat evaluate``: sweep λ × width × attack on a trained run; results go into the run folder."""

from __future__ import annotations

import os

from oat.cli.common import lam_or_all, number, progress_wanted


def add_parser(sub):
    p = sub.add_parser("evaluate", help="SA and RA of a run at every λ (× width) under chosen attacks",
                       description="Evaluate a run's newest checkpoint; rows are merged into RUN/results.json, "
                       "per-example outcomes into RUN/eval/<split>-per-example.csv, and RUN/report.md is "
                       "rewritten. Checkpoints are never touched. An interrupted evaluation resumes when the "
                       "same command is run again. Checks against gradient masking run by default; a failed "
                       "check makes the command exit non-zero (results are still written).")
    p.add_argument("run", help="run folder (or checkpoint folder inside it)")
    p.add_argument("--split", choices=("val", "test"), default="test", help="data split (default test)")
    p.add_argument("--lams", type=lam_or_all, nargs="+", default=None, help="λ values, or `all` (default)")
    p.add_argument("--widths", type=lam_or_all, nargs="+", default=None, help="widths, or `all` (default)")
    p.add_argument("--attacks", nargs="+", default=["pgd20"],
                   help="attacks: clean, fgsm, pgd20, pgd100-r5, cw-pgd, apgd-ce, autoattack (default pgd20); "
                   "with several, a `worst` row per example is added")
    p.add_argument("--subset", type=int, help="a seeded subset of N examples (default: the whole split)")
    p.add_argument("--eps", type=number, help="attack radius (default: the run's ε)")
    p.add_argument("--norm", choices=("linf", "l2"), default="linf", help="threat model (default linf)")
    p.add_argument("--batch-size", type=int, default=512, help="examples per forward pass")
    p.add_argument("--device", default="auto", help="cpu, cuda … (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and the attacks' random starts")
    p.add_argument("--data-dir", help="read the data set from here (default: the folder the run was trained on)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks (faster)")
    p.add_argument("--check-subset", type=int, default=64, help="examples per check (default 64)")
    p.add_argument("--allow-failed-checks", action="store_true", help="exit 0 even if a check fails")
    p.add_argument("--no-resume", action="store_true", help="recompute every batch (ignore finished ones)")
    p.add_argument("--replace", action="store_true",
                   help="let these rows supersede earlier rows of the same checkpoint and setting at other subsets "
                   "(default: rows of another checkpoint, subset or ε are kept; reports use the largest n)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-ra", type=number, metavar="X",
                        help="print the λ (and width) with RA ≥ X (a fraction, e.g. 0.45) and the best SA, "
                        "chosen on the validation split (evaluated first if needed)")
    target.add_argument("--target-sa", type=number, metavar="X", help="the same with SA ≥ X and the best RA")
    return p


def run(args) -> int:
    from oat import validate
    from oat.evaluate.api import choose_operating_point, evaluate_run

    if args.subset is not None and args.subset < 1:
        from oat.errors import ConfigError

        raise ConfigError(f"--subset must be a positive number of examples; got {args.subset}")
    # Refused here, before a checkpoint or data set is read and before any sweep runs.
    validate.eval_args(batch_size=args.batch_size, check_subset=args.check_subset, seed_value=args.seed)
    lams = None if args.lams is None or "all" in args.lams else args.lams
    widths = None if args.widths is None or "all" in args.widths else args.widths
    kw = dict(subset=args.subset, batch_size=args.batch_size, device=args.device, seed=args.seed,
              progress=progress_wanted(args.no_progress), checks=not args.no_checks, check_subset=args.check_subset,
              allow_failed_checks=args.allow_failed_checks, resume=not args.no_resume, data_dir=args.data_dir,
              replace=args.replace)
    if args.target_ra is not None or args.target_sa is not None:
        row = choose_operating_point(args.run, target_ra=args.target_ra, target_sa=args.target_sa,
                                     attacks=args.attacks, eps=args.eps, norm=args.norm, **kw)
        return 0 if row is not None else 1
    evaluate_run(args.run, split=args.split, lams=lams, widths=widths, attacks=args.attacks, eps=args.eps,
                 norm=args.norm, **kw)
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
