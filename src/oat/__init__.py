"""oat: Once-for-All Adversarial Training (OAT) and slimming (OATS) in PyTorch.

Train one model, then dial the accuracy/robustness trade-off λ (and, with OATS, the
width) at test time::

    import oat
    model = oat.load("runs/my-run")           # eval mode
    model = oat.load("pretrained:oat")        # or a bundled model (`oat pretrained` lists them)
    logits = model(x, lam=0.2)                # or a per-example (N,) λ tensor
    clf = model.at(1.0)                        # plain nn.Module x -> logits

Your own CNN (any ``nn.Module`` with ``BatchNorm2d`` layers) becomes an OAT model with
:func:`convert`; :func:`fit` trains it (``model=``) as ``oat train --model-file`` does.

The CLI's sub-commands are library calls: :func:`fit` (``oat train``), :func:`evaluate_run`
(``oat evaluate``), :func:`report` (``oat report``), :func:`mix` (``oat mix``), :func:`export`
(``oat export``; the module is :mod:`oat.deploy`), :func:`run_demo` (``oat demo``). They are
not named ``train``/``evaluate``/``demo`` because those are the subpackages ``oat.train``,
``oat.evaluate`` and the module ``oat.demo``, which a function of the same name would shadow.
"""


from oat.checkpoint import load_model as load
from oat.conditioning import PAPER_LAMS, Conditioning
from oat.evaluate.plan import EvalPlan
from oat.models import ConvertOptions, create_model, list_models
from oat.models.conversion import convert
from oat.train.config import TrainConfig

__version__ = "0.1.0"


def fit(config, out, **kwargs):
    """Train, then evaluate and report, as ``oat train`` does; ``evaluate=False`` trains only.

    See :func:`oat.pipeline.train_and_evaluate` (``plan=EvalPlan(...)`` sets the evaluation;
    ``model=`` trains your own network: a factory, or a network :func:`convert` made from one).
    """
    from oat.pipeline import train_and_evaluate

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    return train_and_evaluate(cfg, out, **kwargs)


def evaluate_run(run, **kwargs):
    """Evaluate a run as ``oat evaluate`` does; see :func:`oat.evaluate.api.evaluate_run`."""
    from oat.evaluate.api import evaluate_run as _evaluate_run

    return _evaluate_run(run, **kwargs)


def report(runs, out=None, **kwargs):
    """Write a report as ``oat report`` does; see :func:`oat.evaluate.report.write_report`."""
    from oat.evaluate.report import write_report

    return write_report(runs, out, **kwargs)


def mix(run_a, run_b, out, **kwargs):
    """Blend two trained runs into a run folder as ``oat mix`` does; see :func:`oat.blend.mix`."""
    from oat.blend import mix as _mix

    return _mix(run_a, run_b, out, **kwargs)


def export(run_or_model, out, **kwargs):
    """Write a (λ, width) or the λ-input model as ONNX/safetensors as ``oat export`` does; see
    :func:`oat.deploy.export`."""
    from oat.deploy import export as _export

    return _export(run_or_model, out, **kwargs)


def run_demo(out=None, **kwargs):
    """Run the main job on digits as ``oat demo`` does; see :func:`oat.demo.run_demo`."""
    from oat.demo import run_demo as _run_demo

    return _run_demo(out, **kwargs)


__all__ = ["PAPER_LAMS", "Conditioning", "ConvertOptions", "EvalPlan", "TrainConfig", "convert", "create_model",
           "evaluate_run", "export", "fit", "list_models", "load", "mix", "report", "run_demo"]

