"""The evaluation checks: they pass on an honest model and flag a gradient-masked one."""

import json

import pytest
import torch

from oat.checkpoint import load_model
from oat.cli.main import main
from oat.data import load_data
from oat.evaluate import api
from oat.evaluate.checks import row_checks, run_checks, summary, tolerance
from oat.evaluate.results import read_results
from oat.models.base import ConditionedNet


class Rounded(ConditionedNet):
    """Gradient masking on purpose: the input is quantised to 4 levels (zero gradient a.e.)."""

    def __init__(self, inner: ConditionedNet):
        super().__init__(inner.spec)
        self.inner, self.arch = inner, inner.arch

    def forward_ctx(self, x, ctx):
        return self.inner.forward_ctx(torch.round(x * 3) / 3, ctx)


@pytest.fixture
def model_and_data(eval_run):
    return load_model(eval_run), load_data("digits", seed=0).test


def test_checks_pass_on_a_trained_model(model_and_data):
    model, test = model_and_data
    checks = run_checks(model, test, lams=[0.0, 1.0], widths=[None], eps=0.1, n=64)
    names = {c["check"] for c in checks}
    assert names == {"ra-eps0-equals-sa", "ra-nonincreasing-in-eps", "ra-chance-at-large-eps",
                     "more-steps-no-higher-ra", "input-gradients-finite-nonzero", "deterministic-eval"}
    assert len(checks) == 2 * len(names)
    assert all(c["passed"] for c in checks), summary(checks)


def test_gradient_masking_is_flagged(model_and_data):
    model, test = model_and_data
    masked = Rounded(model).eval()
    checks = run_checks(masked, test, lams=[0.0, 1.0], widths=[None], eps=0.1, n=64)
    bad = {c["check"] for c in checks if not c["passed"]}
    assert "input-gradients-finite-nonzero" in bad
    assert "ra-chance-at-large-eps" in bad  # a gradient attack cannot move it even at ε = 0.5
    assert "input-gradients-finite-nonzero (λ=0, λ=1)" in summary(checks)


def test_random_model_fails_the_determinism_check(model_and_data):
    model, test = model_and_data

    class Noisy(Rounded):
        def forward_ctx(self, x, ctx):
            return self.inner.forward_ctx(x, ctx) + torch.randn(x.shape[0], 10)

    checks = run_checks(Noisy(model).eval(), test, lams=[1.0], widths=[None], eps=0.1, n=32)
    assert not next(c for c in checks if c["check"] == "deterministic-eval")["passed"]


def test_row_checks_compare_attacks_with_a_stated_tolerance():
    def row(attack, ra, n=200):
        return {"lam": 0.0, "width": None, "attack": attack, "ra": ra, "sa": 0.9, "n": n}

    tol = tolerance(200)
    assert tol == pytest.approx(0.01 + 2 / 200)
    ok = row_checks([row("pgd20", 0.50), row("pgd100-r5", 0.50 + tol / 2), row("autoattack", 0.45)])
    assert [c["passed"] for c in ok] == [True, True]
    bad = row_checks([row("pgd20", 0.50), row("pgd100-r5", 0.53), row("autoattack", 0.56)])
    assert {c["check"] for c in bad if not c["passed"]} == {"more-steps-no-higher-ra", "autoattack-le-pgd"}


def test_cli_exits_non_zero_on_a_failed_check_but_writes_results(eval_run, monkeypatch, capsys):
    real = api.run_checks

    def one_fails(*a, **k):
        out = real(*a, **k)
        out[0] = {**out[0], "passed": False}
        return out

    monkeypatch.setattr(api, "run_checks", one_fails)
    argv = ["evaluate", str(eval_run), "--subset", "30", "--check-subset", "24", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checks failed" in err[0] and "ra-eps0-equals-sa" in err[0]
    doc = read_results(eval_run)
    assert doc["rows"] and any(not c["passed"] for c in doc["checks"])
    report = (eval_run / "report.md").read_text()
    assert 'color:red' in report and "FAILED" in report
    assert main(argv + ["--allow-failed-checks"]) == 0
    assert main(argv + ["--no-checks"]) == 0
    assert json.loads((eval_run / "results.json").read_text())["rows"]
