"""Our PGD against ART's ProjectedGradientDescent: an independent implementation of the same attack.

Same bound model, ε, steps, step size, loss (cross-entropy), no random start
(``num_random_init=0``, ours ``random_start=False``) and the last iterate (ours
``keep_best=False``): both are deterministic and should follow the same path.

ART clips to [0, 1] and then projects onto the ε-ball; we project and then clip. For L∞
both orders give the same point (two boxes that share x). For L2 they differ once the
[0, 1] box is active, so the L2 case uses images scaled into [0.25, 0.75] with ε = 0.25
(the box is never reached). Measured (trained small-cnn, 180 digits test images, 10
steps of 2.5·ε/10): L∞ ε = 0.1 max |Δ| = 0 (identical); L2 ε = 0.25 interior max |Δ| =
1.2e-7. On raw digits with L2 ε = 1.0 the order matters: 23% of pixels within 1e-5, max
|Δ| 0.12, yet predictions identical on 100% of the examples. Asserted tolerance: ≥ 99%
of pixels within 1e-5, and identical predictions on ≥ 98% of the examples.
"""

import numpy as np
import pytest
import torch

from oat.attacks.pgd import pgd

art = pytest.importorskip("art")
from art.attacks.evasion import ProjectedGradientDescent  # noqa: E402
from art.estimators.classification import PyTorchClassifier  # noqa: E402

N = 180


def _art_pgd(bound, x, y, *, eps, steps, step_size, norm):
    clf = PyTorchClassifier(model=bound, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    attack = ProjectedGradientDescent(clf, norm=np.inf if norm == "linf" else 2, eps=eps, eps_step=step_size,
                                      max_iter=steps, targeted=False, num_random_init=0, batch_size=N,
                                      verbose=False)
    return torch.from_numpy(attack.generate(x=x.numpy(), y=y.numpy())).float()


@pytest.mark.parametrize("norm, eps, interior", [("linf", 0.1, False), ("l2", 0.25, True)])
def test_our_pgd_matches_art(trained_digits_model, digits, norm, eps, interior):
    _, _, xt, yt = digits
    x, y = xt[:N], yt[:N]
    if interior:  # keep the [0, 1] box inactive (see the module docstring)
        x = x * 0.5 + 0.25
    bound = trained_digits_model.at(0.0)
    steps, step = 10, 2.5 * eps / 10
    ours = pgd(bound, x, y, eps=eps, steps=steps, step_size=step, norm=norm, random_start=False, keep_best=False)
    theirs = _art_pgd(bound, x, y, eps=eps, steps=steps, step_size=step, norm=norm)
    diff = (ours - theirs).abs()
    close = float((diff <= 1e-5).float().mean())
    with torch.no_grad():
        p_ours, p_theirs, p_clean = bound(ours).argmax(1), bound(theirs).argmax(1), bound(x).argmax(1)
    same = float((p_ours == p_theirs).float().mean())
    assert close >= 0.99, f"only {100 * close:.2f}% of pixels within 1e-5 (max |Δ| {float(diff.max()):.3g})"
    assert same >= 0.98, f"predictions agree on {100 * same:.1f}% of examples"
    # Not a vacuous agreement: the attack really moved the points and fooled the model.
    assert float(diff.max()) < eps and float((ours - x).abs().max()) > 0
    assert (p_ours != y).sum() > (p_clean != y).sum()
