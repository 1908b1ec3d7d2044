"""The two-model alternatives (oat mix): blends that behave as one model and are attacked as one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import oat
from oat.attacks import pgd
from oat.cli.main import main
from oat.errors import ConfigError, LamError, RunFolderError
from oat.evaluate.api import evaluate_run

T = dict(data="digits", val_size=300, epochs=2, batch_size=64, attack_steps=1, eps=0.3, seed=0)


def _fit(out, **kw):
    return oat.fit({**T, **kw}, out, progress=False, evaluate=False, log=lambda *_: None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("mix")
    clean = _fit(base / "clean", objective="pgdat", lam=0.0)
    robust = _fit(base / "robust", objective="pgdat", lam=1.0)
    tuned = _fit(base / "tuned", objective="pgdat", lam=1.0, init_from=str(clean))
    return {"base": base, "clean": clean, "robust": robust, "tuned": tuned}


@pytest.fixture
def x(digits):
    return digits[2][:24].view(-1, 1, 8, 8)


def test_probability_mixture_is_each_member_at_the_ends_and_a_mixture_between(runs, x, tmp_path):
    m = oat.load(oat.mix(runs["clean"], runs["robust"], tmp_path / "m", log=lambda *_: None))
    pa, pb = (F.softmax(oat.load(runs[k])(x, lam), 1) for k, lam in (("clean", 0.0), ("robust", 1.0)))
    torch.testing.assert_close(m(x, 0.0).exp(), pa)
    torch.testing.assert_close(m(x, 1.0).exp(), pb)
    torch.testing.assert_close(m(x, 0.3).exp(), 0.7 * pa + 0.3 * pb)
    per_example = torch.tensor([0.0, 0.3] * 12)  # a per-example α, as the batched sweep passes it
    torch.testing.assert_close(m(x, per_example)[1::2], m(x[1::2], 0.3))


def test_logit_mixture_is_linear_in_alpha(runs, x, tmp_path):
    m = oat.load(oat.mix(runs["clean"], runs["robust"], tmp_path / "m", combine="logits", log=lambda *_: None))
    za, zb = oat.load(runs["clean"])(x, 0.0), oat.load(runs["robust"])(x, 1.0)
    torch.testing.assert_close(m.at(0.25)(x), 0.75 * za + 0.25 * zb)


def test_weight_interpolation_is_each_member_at_the_ends(runs, x, tmp_path):
    m = oat.load(oat.mix(runs["clean"], runs["tuned"], tmp_path / "m", combine="weights", log=lambda *_: None))
    torch.testing.assert_close(m(x, 0.0), oat.load(runs["clean"])(x, 0.0))
    torch.testing.assert_close(m(x, 1.0), oat.load(runs["tuned"])(x, 1.0))
    mid = m(x, 0.5)
    assert not torch.allclose(mid, m(x, 0.0)) and not torch.allclose(mid, m(x, 1.0))


def test_reestimated_bn_is_saved_and_limits_alpha_to_its_grid(runs, x, tmp_path):
    out = oat.mix(runs["clean"], runs["tuned"], tmp_path / "m", combine="weights", bn="reestimate",
                  alphas=(0.0, 0.5, 1.0), bn_images=256, log=lambda *_: None)
    m = oat.load(out)
    fresh = oat.load(oat.mix(runs["clean"], runs["tuned"], tmp_path / "i", combine="weights", log=lambda *_: None))
    assert not torch.allclose(m(x, 0.5), fresh(x, 0.5))  # other BN statistics than the interpolated ones
    with pytest.raises(LamError, match="re-estimated"):
        m(x, 0.3)


def test_the_blend_is_attacked_as_one_model_not_through_a_member(runs, digits, tmp_path):
    """A case built for it: member b has no input gradient (a zeroed head), so an attack through b
    alone moves nothing, while the blend's prediction still depends on member a. Attacking b alone
    would report the blend robust; the end-to-end attack that ``oat evaluate`` runs does not."""
    m = oat.load(oat.mix(runs["clean"], runs["robust"], tmp_path / "m", combine="logits", log=lambda *_: None))
    head = [mod for mod in m.members[1].modules() if isinstance(mod, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    x, y = digits[2][:200].view(-1, 1, 8, 8), digits[3][:200]
    kw = dict(eps=0.3, steps=10, step_size=0.075, norm="linf", keep_best=True)
    blend = m.at(0.5)

    def ra(x_adv):
        with torch.no_grad():
            return float(((blend(x_adv).argmax(1) == y) & (blend(x).argmax(1) == y)).float().mean())

    through_b = ra(pgd(m.members[1].at(1.0), x, y, generator=torch.Generator().manual_seed(0), **kw))
    end_to_end = ra(pgd(blend, x, y, generator=torch.Generator().manual_seed(0), **kw))
    assert end_to_end < through_b - 0.3
    # oat evaluate on the saved blend runs the end-to-end attack: save the edited model and check.
    from oat.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "m" / "checkpoints", "mix", m, None, m.checkpoint_state)
    row = evaluate_run(tmp_path / "m", lams=[0.5], attacks=["pgd20"], subset=200, report=False, checks=False,
                       log=lambda *_: None)[0]
    assert row["ra"] < through_b - 0.3


def test_bad_blends_are_refused_in_one_line(runs, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not an empty folder"):
        oat.mix(runs["clean"], runs["robust"], tmp_path / "busy", log=lambda *_: None)
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="combine"):
        oat.mix(runs["clean"], runs["robust"], tmp_path / "x", combine="average", log=lambda *_: None)
    oat_run = _fit(tmp_path / "oat", objective="oat", epochs=1, attack_steps=0)
    with pytest.raises(ConfigError, match="member-lams"):
        oat.mix(runs["clean"], oat_run, tmp_path / "y", log=lambda *_: None)
    other = _fit(tmp_path / "wide", objective="pgdat", lam=1.0, epochs=1, attack_steps=0, model_kwargs={"base": 8})
    with pytest.raises(ConfigError, match="same architecture"):
        oat.mix(runs["clean"], other, tmp_path / "z", combine="weights", log=lambda *_: None)


def test_cli_mix_then_evaluate(runs, tmp_path, capsys):
    out = tmp_path / "cli-mix"
    assert main(["mix", str(runs["clean"]), str(runs["robust"]), "--out", str(out), "--alphas", "0", "0.5", "1"]) == 0
    assert main(["evaluate", str(out), "--attacks", "fgsm", "--subset", "20", "--no-progress", "--no-checks"]) == 0
    assert (out / "results.json").exists() and (out / "report.md").exists() and (out / "oat-run.json").exists()
    assert main(["mix", str(runs["clean"]), str(runs["robust"]), "--out", str(out)]) == 2
    assert "not an empty folder" in capsys.readouterr().err


def test_blends_are_not_architectures_to_train(tmp_path):
    assert "mix-outputs" not in oat.list_models() and "interp-weights" not in oat.list_models()
    assert main(["train", "--out", str(tmp_path / "r"), "--model", "mix-outputs", "--epochs", "1"]) == 2
    assert not (tmp_path / "r").exists()
