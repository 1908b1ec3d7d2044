"""``amp=auto``: bf16 only where measured faster on a CPU with native bf16; the choice is recorded."""

import json

import pytest
import torch

import oat
from oat.conditioning import PAPER_LAMS, Conditioning
from oat.models import create_model
from oat.train import precision
from oat.train.precision import MIN_SPEEDUP, resolve_amp, time_train_pass

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _never():
    raise AssertionError("measured where it must not be")


@pytest.mark.parametrize("asked", ["bf16", "off"])
def test_an_explicit_choice_is_kept(asked):
    assert resolve_amp(asked, CPU, measure=_never)[0] == asked


def test_auto_on_cuda_is_bf16_without_measuring():
    amp, rec = resolve_amp("auto", CUDA, measure=_never)
    assert amp == "bf16" and rec["why"] == "CUDA"


def test_auto_without_native_bf16_is_fp32(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16_cpu", lambda: False)
    assert resolve_amp("auto", CPU, measure=_never)[0] == "off"


@pytest.mark.parametrize("fp32_s,bf16_s,expected", [(1.0, 0.5, "bf16"), (1.0, 1.0 / (MIN_SPEEDUP - 0.05), "off"),
                                                    (1.0, 3.0, "off")])
def test_auto_with_native_bf16_chooses_by_the_measurement(monkeypatch, fp32_s, bf16_s, expected):
    monkeypatch.setattr(precision, "native_bf16_cpu", lambda: True)
    amp, rec = resolve_amp("auto", CPU, measure=lambda: (fp32_s, bf16_s))
    assert amp == expected and rec["chosen"] == expected
    assert rec["speedup"] == pytest.approx(fp32_s / bf16_s)


def test_a_reproducible_run_is_not_decided_by_a_timing(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16_cpu", lambda: True)
    assert resolve_amp("auto", CPU, measure=_never, reproducible=True)[0] == "off"


def test_the_timing_leaves_the_model_and_the_random_streams_alone():
    torch.manual_seed(0)
    m = create_model("small-cnn", Conditioning(lams=PAPER_LAMS), in_channels=1, base=4).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    rng = torch.get_rng_state()
    fp32_s, bf16_s = time_train_pass(m, (8, 1, 8, 8), 1.0, repeats=1)
    assert fp32_s > 0 and bf16_s > 0
    assert m.training and all(p.grad is None for p in m.parameters())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def _fit(tmp_path, name, **kw):
    cfg = dict(data="digits", val_size=300, model_kwargs={"base": 4}, epochs=1, batch_size=200, attack_steps=1,
               seed=0, device="cpu", **kw)
    return oat.fit(cfg, tmp_path / name, evaluate=False, progress=False, log=lambda *_: None)


def _recorded(run):
    meta = json.loads((run / "config.json").read_text())
    return meta["config"]["amp"], meta["amp"]


def _interrupted_run(tmp_path, monkeypatch, speed):
    """A run stopped by SIGINT after its first step (as a user's Ctrl-C), bf16 measured ``speed``× per pass."""
    import os
    import signal

    from oat.errors import TrainingInterrupted
    from oat.train.config import TrainConfig
    from oat.train.runner import train

    monkeypatch.setattr(precision, "native_bf16_cpu", lambda: True)
    monkeypatch.setattr("oat.train.runner.time_train_pass", lambda *a, **k: (1.0, 1.0 / speed))
    cfg = TrainConfig.from_dict(dict(data="digits", val_size=300, model_kwargs={"base": 4}, epochs=2, batch_size=200,
                                     attack_steps=1, train_attack_precision="amp", seed=0, device="cpu"))
    run = tmp_path / "run"
    sent = []

    def ctrl_c_once(state, model):
        if not sent:
            sent.append(os.kill(os.getpid(), signal.SIGINT))

    with pytest.raises(TrainingInterrupted):
        train(cfg, run, progress=False, log=lambda *_: None, step_hook=ctrl_c_once)
    return run


def _amps_used(monkeypatch):
    from oat.train import loop

    used, real = [], loop.autocast_for
    monkeypatch.setattr(loop, "autocast_for", lambda device, amp: used.append(amp) or real(device, amp))
    return used


def test_the_run_records_the_measured_choice_and_resumes_in_it(tmp_path, monkeypatch):
    run = _interrupted_run(tmp_path, monkeypatch, speed=2.0)
    amp, rec = _recorded(run)
    assert amp == "bf16" and rec["requested"] == "auto" and rec["speedup"] == pytest.approx(2.0)
    # Resumed where nothing may be measured, the run trains on in the precision it started with.
    monkeypatch.setattr("oat.train.runner.time_train_pass", lambda *a, **k: _never())
    used = _amps_used(monkeypatch)
    oat.fit({}, run, resume=True, evaluate=False, progress=False, log=lambda *_: None)
    assert used and set(used) == {"bf16"}


def test_a_run_saved_with_auto_by_an_earlier_version_resumes_in_fp32_on_the_cpu(tmp_path, monkeypatch):
    run = _interrupted_run(tmp_path, monkeypatch, speed=2.0)
    meta = json.loads((run / "config.json").read_text())
    meta["config"]["amp"] = "auto"  # as written before auto was resolved
    meta.pop("amp")
    (run / "config.json").write_text(json.dumps(meta))
    monkeypatch.setattr("oat.train.runner.time_train_pass", lambda *a, **k: _never())
    used = _amps_used(monkeypatch)
    oat.fit({}, run, resume=True, evaluate=False, progress=False, log=lambda *_: None)
    from oat.train.loop import autocast_for

    assert used and set(used) == {"auto"}
    assert not autocast_for(CPU, "auto")._enabled  # an earlier version's auto: fp32 on the CPU


def test_a_step_gains_only_in_its_autocast_passes(monkeypatch):
    """With the training PGD in fp32 a 2.7× faster pass is a 1.16× faster step (3 fp32 passes: 1.4×)."""
    monkeypatch.setattr(precision, "native_bf16_cpu", lambda: True)
    assert precision.step_speedup(2.7, 1.0, 7) == pytest.approx(9 * 2.7 / (7 * 2.7 + 2 * 1.0))
    amp, rec = resolve_amp("auto", CPU, measure=lambda: (2.7, 1.0), fp32_passes=3)
    assert amp == "bf16" and rec["speedup"] == pytest.approx(5 * 2.7 / (3 * 2.7 + 2 * 1.0))
    assert resolve_amp("auto", CPU, measure=lambda: (1.2, 1.0), fp32_passes=3)[0] == "off"
    assert resolve_amp("auto", CPU, measure=lambda: (2.7, 1.0), fp32_passes=0)[0] == "bf16"


def test_no_timing_where_no_pass_speed_could_reach_the_bar(monkeypatch):
    """PGD-7 in fp32 (the default) leaves 2 of 9 passes to gain: at most 1.29×, so nothing is measured."""
    monkeypatch.setattr(precision, "native_bf16_cpu", lambda: True)
    amp, rec = resolve_amp("auto", CPU, measure=_never, fp32_passes=7)
    assert amp == "off" and "cannot" in rec["why"]


def test_a_deterministic_run_records_fp32(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16_cpu", lambda: True)
    monkeypatch.setattr("oat.train.runner.time_train_pass", lambda *a, **k: _never())
    amp, rec = _recorded(_fit(tmp_path, "det", deterministic=True))
    assert amp == "off" and rec["chosen"] == "off"
