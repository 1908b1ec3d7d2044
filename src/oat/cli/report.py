"""``oat report``: Markdown + PNG report of a run, beside its dedicated baselines."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("report", help="write report.md, plots and report.html (OAT beside dedicated runs)",
                       description="Report the first run; further runs (dedicated baselines, one λ each) are "
                       "shown beside it. Written into the first run folder unless --out.")
    p.add_argument("runs", nargs="+", help="OAT/OATS run folder, then dedicated run folders")
    p.add_argument("--out", help="output folder (default: the first run folder)")
    p.add_argument("--split", choices=("val", "test"), help="split to report (default: test if evaluated)")
    return p


def run(args) -> int:
    from pathlib import Path

    from oat.errors import OatError
    from oat.evaluate.report import write_report

    for r in args.runs:
        if not (Path(r) / "results.json").exists():
            raise OatError(f"{r} has no results.json; run `oat evaluate {r}` first")
    report = write_report(args.runs, args.out, args.split)
    print(f"report: {report} (interactive: {report.with_name('report.html')})")
    return 0
