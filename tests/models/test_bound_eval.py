"""``model.at(λ, width)`` is an eval-mode inference view that never changes its parent's state.

Exporting it (``torch.onnx.export`` restores the mode it found), tracing it, or calling
``train()``/``eval()`` on it must leave the shared parent's ``training`` flags and every
tensor of its state dict (BN running statistics included) exactly as they were.
"""

import io

import pytest
import torch

import oat
from oat.checkpoint import save_checkpoint


@pytest.fixture
def loaded(tiny_model, tmp_path):
    """The tiny model saved as a checkpoint and loaded back with ``oat.load`` (eval mode)."""
    save_checkpoint(tmp_path / "checkpoints", "epoch-0001", tiny_model, state={"epoch": 1, "finished": True})
    return oat.load(tmp_path / "checkpoints" / "epoch-0001")


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _flags(model):
    return [m.training for m in model.modules()]


def _unchanged(model, state, flags):
    assert _flags(model) == flags
    now = model.state_dict()
    assert now.keys() == state.keys()
    changed = [k for k, v in state.items() if not torch.equal(now[k], v)]
    assert not changed, f"tensors rewritten: {changed}"


def test_at_returns_an_eval_module(loaded):
    assert not loaded.training
    bound = loaded.at(0.2)
    assert bound.training is False
    assert not any(m.training for m in bound.modules())


def test_onnx_export_leaves_the_parent_alone(loaded, batch):
    pytest.importorskip("onnx")
    x, _ = batch
    state, flags = _state(loaded), _flags(loaded)
    bound = loaded.at(0.2)
    with torch.no_grad():
        expected = bound(x)
    torch.onnx.export(bound, (x,), io.BytesIO(), dynamo=False)
    _unchanged(loaded, state, flags)
    assert bound.training is False
    with torch.no_grad():  # later forward passes must not update BN running statistics
        torch.testing.assert_close(bound(x), expected)
        loaded(x, 0.2)
        loaded.at(0.2)(x)
    _unchanged(loaded, state, flags)


def test_train_and_trace_do_not_reach_the_parent(loaded, batch):
    x, _ = batch
    state, flags = _state(loaded), _flags(loaded)
    bound = loaded.at(0.2)
    bound.train()
    assert bound.training and _flags(loaded) == flags
    bound.eval()
    with torch.no_grad():
        traced = torch.jit.trace(bound, (x,))
        traced(x)
        bound(x)
    _unchanged(loaded, state, flags)


def test_explicit_train_mode_is_honoured_and_undone(loaded, batch):
    # A bound model put in training mode on purpose computes with batch statistics (and
    # updates the running ones, as training does), but the parent's flags are put back.
    x, _ = batch
    state, flags = _state(loaded), _flags(loaded)
    bound = loaded.at(0.2).train()
    with torch.no_grad():
        bound(x)
    assert _flags(loaded) == flags
    assert any(not torch.equal(loaded.state_dict()[k], v) for k, v in state.items() if "running" in k)


def test_parent_in_training_mode_keeps_its_flags(loaded, batch):
    x, _ = batch
    loaded.train()
    state, flags = _state(loaded), _flags(loaded)
    with torch.no_grad():
        loaded.at(0.2)(x)  # eval view: no BN update, and the parent stays in training mode
    _unchanged(loaded, state, flags)
