"""``oat demo``: the main job on scikit-learn's bundled digits, end to end."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("demo", help="train OAT + dedicated models on digits, evaluate, report (~5 min on CPU)",
                       description="Train one OAT model and one dedicated PGD-AT model per λ on scikit-learn's "
                       "digits, evaluate SA and PGD-20 RA on the test split, and write report.md + plots.")
    p.add_argument("--out", help="run folder (default runs/demo-<time>; a fresh folder every time)")
    p.add_argument("--epochs", type=int, help="epochs of every model (default 30)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args) -> int:
    from oat.cli.common import progress_wanted
    from oat.demo import run_demo

    run_demo(args.out, epochs=args.epochs, overwrite=args.overwrite, progress=progress_wanted(args.no_progress))
    return 0
