"""oat: Once-for-All Adversarial Training (OAT) and slimming (OATS) in PyTorch.

Train one model, then dial the accuracy/robustness trade-off λ (and, with OATS, the
width) at test time::

    import oat
    model = oat.load("runs/my-run")           # eval mode
    logits = model(x, lam=0.2)                # or a per-example (N,) λ tensor
    clf = model.at(1.0)                        # plain nn.Module x -> logits
"""

import sys as _sys
import types as _types

from oat.conditioning import PAPER_LAMS, Conditioning
from oat.models import create_model, list_models
from oat.train.checkpoint import load_model as load
from oat.train.config import TrainConfig

__version__ = "0.1.0"


def train(config, out, **kwargs):
    """Train as ``oat train`` does; see :func:`oat.train.runner.train`."""
    from oat.train.runner import train as _train

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    return _train(cfg, out, **kwargs)


def evaluate(run, **kwargs):
    """Evaluate a run as ``oat evaluate`` does; see :func:`oat.evaluate.api.evaluate_run`."""
    from oat.evaluate.api import evaluate_run

    return evaluate_run(run, **kwargs)


def report(runs, out=None, **kwargs):
    """Write a report as ``oat report`` does; see :func:`oat.evaluate.report.write_report`."""
    from oat.evaluate.report import write_report

    return write_report(runs, out, **kwargs)


def demo(out=None, **kwargs):
    """Run the main job on digits as ``oat demo`` does; see :func:`oat.demo.run_demo`."""
    from oat.demo import run_demo

    return run_demo(out, **kwargs)


__all__ = ["PAPER_LAMS", "Conditioning", "TrainConfig", "create_model", "demo", "evaluate", "list_models", "load",
           "report", "train"]


class _Api(_types.ModuleType):
    """Keeps ``oat.train``/``oat.evaluate``/``oat.demo`` the functions above: the first import of
    the subpackage or module of the same name (``oat.evaluate.api``, ``oat.demo``) would
    otherwise rebind the attribute to that module, and ``oat.evaluate(run)`` would fail."""

    def __setattr__(self, name, value):
        if name in ("train", "evaluate", "demo") and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Api

