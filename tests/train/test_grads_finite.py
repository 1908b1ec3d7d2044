"""The loop's fused finiteness check on gradients (it decides the "non-finite at step N" stop)."""

import pytest
import torch

from oat.train.loop import grads_finite


def _model_with_grads(bad=None):
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    m(torch.randn(5, 3)).sum().backward()
    if bad is not None:
        m[1].weight.grad[0, 1] = bad
    return m


def test_finite_gradients_pass():
    assert grads_finite(_model_with_grads()) is True


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_one_non_finite_entry_is_caught(bad):
    assert grads_finite(_model_with_grads(bad)) is False


def test_huge_but_finite_gradients_are_not_flagged():
    m = _model_with_grads(3e38)  # a 2-norm would overflow to inf here
    assert grads_finite(m) is True


def test_no_gradients_is_finite():
    assert grads_finite(torch.nn.Linear(2, 2)) is True
