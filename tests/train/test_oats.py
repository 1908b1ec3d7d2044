"""OATS training: widths largest first, accumulated gradients, dedicated slim baselines, and a
short digits run that shows the trade-off at every width and survives save → load."""

import copy

import pytest
import torch

from oat.cli.main import main
from oat.conditioning import Conditioning
from oat.errors import ConfigError
from oat.models import create_model
from oat.train.config import TrainConfig
from oat.train.loop import LoopOptions, fit
from oat.train.objectives import OATS, AttackConfig
from oat.train.runner import build_objective, build_spec

WIDTHS = (0.5, 0.75, 1.0)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("small-cnn", Conditioning(widths=WIDTHS, dim=16), in_channels=1, base=8)


def _batch(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _objective(model, per_width=True):
    return OATS(model.spec, AttackConfig(eps=0.1, steps=2), backward_per_width=per_width)


def test_each_width_in_turn_largest_first(model):
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[2]))
    x, y = _batch()
    loss, metrics = _objective(model)(model, x, y, generator=torch.Generator().manual_seed(0))
    # one clean and one adversarial training pass per width (attacks go through predictor())
    assert seen == [1.0, 1.0, 0.75, 0.75, 0.5, 0.5]
    assert metrics["n"] == 12  # images, not image-widths


@pytest.mark.parametrize("per_width", [True, False])
def test_gradient_is_the_sum_over_widths(model, per_width):
    x, y = _batch()
    obj = _objective(model, per_width)
    # reference (a copy taken first: the step moves BN statistics, which the attack reads):
    # the OAT loss at each width from the same λ draws, summed, one backward
    ref_model, g, total = copy.deepcopy(model), torch.Generator().manual_seed(0), 0
    loss, _ = obj(model, x, y, generator=torch.Generator().manual_seed(0))
    loss.backward()
    got = [p.grad.clone() for p in model.parameters()]
    from oat.train.sampling import sample_lams

    for w in obj.widths:
        lam, n0 = sample_lams(12, obj.lams, g)
        total = total + obj.loss(ref_model, x, y, lam, n0, g, w)[0]
    total.backward()
    torch.testing.assert_close(loss.detach(), total.detach())
    for a, p in zip(got, ref_model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-6)


def test_fit_steps_the_same_with_or_without_per_width_backward(model):
    batches = [_batch(16, s) for s in range(2)]
    out = []
    for per_width in (True, False):
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        fit(m, _objective(m, per_width), batches, opt, LoopOptions(epochs=1, base_lr=0.1, progress=False))
        out.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert not torch.equal(out[0], torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-6)


def test_build_spec_dedicated_slim_baseline():
    spec = build_spec(TrainConfig(objective="pgdat", lam=1.0, widths=[0.5]))
    assert spec.widths == (0.5,) and not spec.film and spec.lams == (1.0,)
    assert build_spec(TrainConfig(objective="oats", widths=[0.5, 1.0, 0.75])).widths == (1.0, 0.75, 0.5)
    cfg = TrainConfig(objective="oats", widths=[0.5, 1.0])
    obj = build_objective(cfg, build_spec(cfg), 0.1)
    assert isinstance(obj, OATS) and obj.widths == (1.0, 0.5)
    for objective in ("pgdat", "oat"):
        with pytest.raises(ConfigError, match="--objective oats"):
            build_spec(TrainConfig(objective=objective, widths=[0.5, 1.0]))


# ---------------------------------------------------------------- a short run on digits
EPOCHS = 6  # enough for the trade-off at both widths with this seed (~16 s of CPU)


@pytest.fixture(scope="module")
def oats_run(tmp_path_factory):
    from oat.train.runner import train

    out = tmp_path_factory.mktemp("oats") / "run"
    cfg = TrainConfig(data="digits", model="small-cnn", objective="oats", widths=[0.5, 1.0], eps=0.3,
                      epochs=EPOCHS, batch_size=64, lams=[0.0, 0.4, 1.0], seed=0, amp="off")
    train(cfg, out, progress=False, log=lambda *a: None)
    return out


@pytest.fixture(scope="module")
def oats_rows(oats_run):
    from oat.evaluate.api import evaluate_run

    rows = evaluate_run(oats_run, split="test", lams=[0.0, 1.0], attacks=["pgd20"], device="cpu", checks=False,
                        log=lambda *a: None)
    return {(r["lam"], r["width"]): r for r in rows}


@pytest.mark.slow
@pytest.mark.parametrize("width", [0.5, 1.0])
def test_trade_off_at_every_width(oats_rows, width):
    lo, hi = oats_rows[(0.0, width)], oats_rows[(1.0, width)]
    assert lo["sa"] > hi["sa"], (lo, hi)
    assert hi["ra"] > lo["ra"] + 0.05, (lo, hi)


@pytest.mark.slow
def test_rows_carry_the_cost_of_each_width(oats_run, oats_rows):
    small, full = oats_rows[(1.0, 0.5)], oats_rows[(1.0, 1.0)]
    for r in (small, full):
        assert r["latency_ms"] > 0 and r["latency_batch"] > 0
    assert small["flops"] < 0.4 * full["flops"] and small["params"] < 0.4 * full["params"]
    report = (oats_run / "report.md").read_text()
    assert "## Accuracy, robustness and compute (OATS)" in report and (oats_run / "ra_vs_flops.png").exists()


@pytest.mark.slow
def test_save_load_keeps_every_output(oats_run, tmp_path):
    import oat
    from oat.checkpoint import save_checkpoint

    model = oat.load(oats_run)
    save_checkpoint(tmp_path / "checkpoints", "epoch-0001", model, None, {"epoch": 1, "step": 0})
    again = oat.load(tmp_path)
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for lam in model.spec.lams:
        for w in model.spec.widths:
            assert torch.equal(model(x, lam, w), again(x, lam, w))
            assert torch.equal(model.at(lam, w)(x), again.at(lam, w)(x))


@pytest.mark.slow
def test_evaluate_refuses_an_untrained_width(oats_run, capsys):
    assert main(["evaluate", str(oats_run), "--widths", "0.75", "--subset", "8", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("oat: error:") and "width 0.75 was not trained" in err and "\n" not in err
