"""``oat evaluate``: sweep λ × width × attack on a trained run; results go into the run folder."""

from __future__ import annotations

from oat.cli.common import lam_or_all, number


def add_parser(sub):
    p = sub.add_parser("evaluate", help="SA and RA of a run at every λ (× width) under chosen attacks",
                       description="Evaluate a run's newest checkpoint; rows are merged into RUN/results.json "
                       "and RUN/report.md is rewritten. Checkpoints are never touched.")
    p.add_argument("run", help="run folder (or checkpoint folder inside it)")
    p.add_argument("--split", choices=("val", "test"), default="test", help="data split (default test)")
    p.add_argument("--lams", type=lam_or_all, nargs="+", default=None, help="λ values, or `all` (default)")
    p.add_argument("--widths", type=lam_or_all, nargs="+", default=None, help="widths, or `all` (default)")
    p.add_argument("--attacks", nargs="+", default=["pgd20"],
                   help="attacks: clean, fgsm, pgd20, pgd100-r5, cw-pgd, autoattack (default pgd20)")
    p.add_argument("--subset", type=int, help="a seeded subset of N examples (default: the whole split)")
    p.add_argument("--eps", type=number, help="attack radius (default: the run's ε)")
    p.add_argument("--batch-size", type=int, default=512, help="examples per forward pass")
    p.add_argument("--device", default="auto", help="cpu, cuda … (default auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and the attacks' random starts")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args) -> int:
    from oat.evaluate.api import evaluate_run

    lams = None if args.lams is None or "all" in args.lams else args.lams
    widths = None if args.widths is None or "all" in args.widths else args.widths
    evaluate_run(args.run, split=args.split, lams=lams, widths=widths, attacks=args.attacks, subset=args.subset,
                 eps=args.eps, batch_size=args.batch_size, device=args.device, seed=args.seed,
                 progress=not args.no_progress)
    return 0
