"""``oat train`` end to end: train, then evaluate, then report.

Training (:mod:`oat.train`) and evaluation (:mod:`oat.evaluate`) stand side by side and
never import each other; this module is the one place that runs them in sequence, for
``oat train``, :func:`oat.fit` and the demo. The sweep after training is an
:class:`~oat.evaluate.plan.EvalPlan` (by default: the validation split, PGD-20).
"""

from __future__ import annotations

import os
from pathlib import Path

from oat.evaluate.plan import EvalPlan
from oat.train.config import TrainConfig

# The sweep that follows training: the validation split (the test split is for `oat evaluate`).
AFTER_TRAINING = EvalPlan(split="val")
# ``key=value`` overrides and recipe keys with this prefix set the plan: eval_split=test, eval_attacks=[…].
EVAL_PREFIX = "eval_"


def split_eval_keys(d: dict) -> tuple[dict, dict]:
    """A recipe or override mapping → (training keys, evaluation-plan keys without the prefix)."""
    train = {k: v for k, v in d.items() if not k.startswith(EVAL_PREFIX)}
    plan = {k[len(EVAL_PREFIX):]: v for k, v in d.items() if k.startswith(EVAL_PREFIX)}
    return train, plan


def plan_after_training(plan: EvalPlan | dict | None = None) -> EvalPlan:
    """The evaluation that follows training: :data:`AFTER_TRAINING` with ``plan``'s settings."""
    if isinstance(plan, EvalPlan):
        return plan
    from oat.evaluate.api import make_plan

    return make_plan(AFTER_TRAINING, **(plan or {}))


def train_and_evaluate(cfg: TrainConfig, out, *, plan: EvalPlan | dict | None = None, evaluate: bool = True,
                       report: bool = True, progress: bool = True, log=print, **train_kw) -> Path:
    """Train ``cfg`` into ``out``; then (``evaluate``) sweep it as ``plan`` says and write the report.

    Args:
        cfg: the training configuration.
        out: run folder.
        plan: the evaluation after training (default :data:`AFTER_TRAINING`; a dict of
            :class:`EvalPlan` fields is applied on top of it). Checked before training starts.
        evaluate: False trains only.
        report: rewrite ``RUN/report.md`` after the evaluation.
        progress: progress bars.
        log: where one-line messages go.
        **train_kw: :func:`oat.train.runner.train`'s options (``resume``, ``overwrite``,
            ``dist_timeout``, ``step_hook``, ``model``).

    Returns:
        The run folder.
    """
    from oat.train.runner import train

    plan = plan_after_training(plan) if evaluate else None
    if plan is not None and plan.device == "auto":
        plan = plan.replace_(device=cfg.device)  # evaluate where training ran
    out = train(cfg, out, progress=progress, log=log, **train_kw)
    if plan is not None and int(os.environ.get("RANK", "0") or 0) == 0:  # under torchrun, rank 0 alone
        from oat.evaluate.api import evaluate_run

        evaluate_run(out, plan, progress=progress, report=report, log=log)
    return out
