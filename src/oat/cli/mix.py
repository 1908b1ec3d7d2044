"""``oat mix``: blend two trained runs (the two-model alternative to OAT) into a run folder."""

from __future__ import annotations

from oat.cli.common import number


def add_parser(sub):
    from oat.blend import DEFAULT_ALPHAS
    from oat.models.mixture import COMBINES

    p = sub.add_parser("mix", help="blend two trained runs by a weight α (the two-model alternative to OAT)",
                       description="Write a run folder whose model blends RUN_A (α = 0) and RUN_B (α = 1): on their "
                       "probabilities or logits, or by interpolating their weights. `oat evaluate OUT` then sweeps "
                       "α, attacking the blend end to end as one model.")
    p.add_argument("run_a", help="the α = 0 run (e.g. a clean model)")
    p.add_argument("run_b", help="the α = 1 run (e.g. a robust model)")
    p.add_argument("--out", required=True, help="a new run folder")
    p.add_argument("--combine", choices=COMBINES, default="probs", help="how to blend (default probs)")
    p.add_argument("--alphas", type=number, nargs="+", default=list(DEFAULT_ALPHAS),
                   help="the α grid `oat evaluate` sweeps by default")
    p.add_argument("--member-lams", type=number, nargs=2, default=(None, None), metavar=("LAM_A", "LAM_B"),
                   help="the λ each run's model runs at (needed for OAT runs)")
    p.add_argument("--bn", choices=("interpolate", "reestimate"), default="interpolate",
                   help="with --combine weights: interpolate BN statistics, or re-estimate them at each α")
    return p


def run(args) -> int:
    from oat.blend import mix

    mix(args.run_a, args.run_b, args.out, combine=args.combine, alphas=args.alphas,
        member_lams=tuple(args.member_lams), bn=args.bn)
    return 0
