"""Training objectives: turn ``(model, x, y)`` into a loss and metrics.

* :class:`PGDAT` — dedicated adversarial training at a fixed λ:
  ``(1-λ)·CE(f(x), y) + λ·CE(f(x_adv), y)`` (Madry et al. at λ = 1).
* :class:`OAT` — Once-for-All AT (Wang et al. 2020, Alg. 1): per-example λ, no attack
  for λ = 0 examples, loss ``mean_i (1-λ_i)·CE_clean_i + λ_i·CE_adv_i``.
* :class:`OATS` — OAT for every trained width (largest first), gradients accumulated.

Adversarial examples are crafted with the model in eval mode (BN running statistics, no
dropout), each with its own λ, and without parameter gradients; the step size follows
the reference's training rule. The loop knows nothing about λ: each objective reads the λ
set, the widths and whether λ is continuous from the model's :class:`Conditioning` spec.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from oat.attacks import pgd, train_step_size
from oat.conditioning import Conditioning
from oat.models.base import ConditionedNet
from oat.train.sampling import LamSampling, sample_lams


@dataclass
class AttackConfig:
    """The training attack (ε, steps and threat model come from the run's config).

    ``precision="fp32"`` crafts outside any autocast, as the authors' fp32 code does (bf16
    gradients can weaken the attack); ``"amp"`` leaves it under the loop's autocast (faster).
    """

    eps: float
    steps: int
    norm: str = "linf"
    step_size: float | None = None
    precision: str = "fp32"

    def craft(self, model: ConditionedNet, x, y, lam, width=None, generator=None, like=None) -> torch.Tensor:
        if self.eps == 0 or self.steps == 0:
            return x
        step = self.step_size or train_step_size(self.eps, self.steps)
        fp32 = contextlib.nullcontext()
        if self.precision == "fp32" and torch.is_autocast_enabled(x.device.type):
            fp32 = torch.autocast(x.device.type, enabled=False)
        with eval_mode(model), fp32:
            predict = model.predictor(lam, width, x.shape[0], like=like)
            return pgd(predict, x, y, eps=self.eps, steps=self.steps, step_size=step, norm=self.norm,
                       keep_best=False, generator=generator)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Eval mode for crafting, then the previous mode back."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _ce(logits, y):
    return F.cross_entropy(logits.float(), y, reduction="none")


def _metrics(loss, logits_clean, logits_adv, y, y_adv):
    """Sums (not means) as tensors, so the loop can accumulate without a host sync."""
    m = {"loss": loss.detach() * y.shape[0], "n": y.shape[0]}
    if logits_clean is not None:
        m["clean_correct"] = (logits_clean.argmax(1) == y).sum()
        m["n_clean"] = y.shape[0]
    if logits_adv is not None:
        m["adv_correct"] = (logits_adv.argmax(1) == y_adv).sum()
        m["n_adv"] = y_adv.shape[0]
    return m


class PGDAT:
    """Dedicated adversarial training at the spec's one λ (the paper's baselines).

    ``clean_pass_at_1``: at λ = 1 also run the clean pass (weight 0), as the authors'
    dedicated baseline does, so BN running statistics see clean images too (about half).
    """

    name = "pgdat"

    def __init__(self, spec: Conditioning, attack: AttackConfig, clean_pass_at_1: bool = False):
        if len(spec.lams) != 1:
            raise ValueError(f"a dedicated model has one λ; the spec has {list(spec.lams)}")
        self.lam, self.attack, self.clean_pass_at_1 = spec.lams[0], attack, clean_pass_at_1

    def __call__(self, model, x, y, generator=None, width=None):
        lam = self.lam
        logits_c = logits_a = None
        loss = x.new_zeros(())
        if lam < 1 or self.clean_pass_at_1:
            logits_c = model(x, lam, width)
            loss = loss + (1 - lam) * _ce(logits_c, y).mean()
        if lam > 0:
            x_adv = self.attack.craft(model, x, y, lam, width, generator)
            logits_a = model(x_adv, lam, width)
            loss = loss + lam * _ce(logits_a, y).mean()
        return loss, _metrics(loss, logits_c, logits_a, y, y)


class OAT:
    """Once-for-All adversarial training with the reference's per-example λ sampling.

    λ is drawn from the spec's set, or ~ U(0, max λ] when the spec is continuous (its encoding
    accepts any λ) unless ``discrete_draw`` (the authors' scalar encoding trains on the set).
    """

    name = "oat"

    def __init__(self, spec: Conditioning, attack: AttackConfig, sampling: LamSampling = LamSampling(),
                 discrete_draw: bool = False):
        self.spec, self.attack = spec, attack
        self.lams, self.continuous = spec.lams, spec.continuous and not discrete_draw
        sampling.check(self.lams, self.continuous)
        self.sampling = sampling

    def sample(self, batch_size: int, generator=None) -> tuple[torch.Tensor, int]:
        """Per-example λ of one batch (zeros first) and the number of zeros."""
        return sample_lams(batch_size, self.lams, generator, self.continuous, self.sampling)

    def __call__(self, model, x, y, generator=None, width=None):
        lam, n0 = self.sample(x.shape[0], generator)
        return self.loss(model, x, y, lam.to(x.device), n0, generator, width)

    def loss(self, model, x, y, lam, n0, generator=None, width=None):
        """OAT loss for given per-example λ whose first ``n0`` entries are 0."""
        # One context for the step: FiLM's tables for its λ are computed once, in the clean
        # pass, and reused by the attack and the adversarial pass (StepTables).
        ctx = model.condition(lam, width, x.shape[0], step=True)
        logits_c = model(x, ctx, width)
        per_ex = (1 - lam) * _ce(logits_c, y)
        logits_a = None
        if n0 < x.shape[0]:
            # Efficient mode: no attack for λ = 0 examples (their adversarial weight is 0).
            xa, ya, la = x[n0:], y[n0:], lam[n0:]
            x_adv = self.attack.craft(model, xa, ya, la, width, generator, like=ctx)
            logits_a = model(x_adv, model.condition(la, width, xa.shape[0], like=ctx), width)
            per_ex = per_ex + torch.cat([per_ex.new_zeros(n0), la * _ce(logits_a, ya)])
        loss = per_ex.mean()
        return loss, _metrics(loss, logits_c, logits_a, y, y[n0:])


class OATS(OAT):
    """OAT + slimming: the OAT loss at every width, largest first, one optimiser step.

    Each width draws its own λ sample (as slimmable-network training draws per width);
    the returned loss is the sum, whose gradient is the accumulated one. With
    ``backward_per_width`` (the default) each width's gradients are taken as soon as its
    loss exists and its graph is freed, so only one width's activations are alive at a
    time; the returned loss then replays the accumulated gradients when the loop calls
    ``backward()``, so the loop's contract (one ``loss.backward()``) is unchanged.
    Metrics: ``n`` counts each image once (images/s are images, not image-widths).
    """

    name = "oats"

    def __init__(self, spec: Conditioning, attack: AttackConfig, sampling: LamSampling = LamSampling(),
                 discrete_draw: bool = False, backward_per_width: bool = True):
        super().__init__(spec, attack, sampling, discrete_draw)
        self.widths = spec.widths  # largest first
        self.backward_per_width = backward_per_width

    def __call__(self, model, x, y, generator=None, width=None):
        """The summed loss over every trained width, or over ``width`` alone when given."""
        params = None
        # Under DDP the gradients must flow through the wrapper's own backward: sum instead.
        ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
        if self.backward_per_width and torch.is_grad_enabled() and not ddp:
            params = [p for p in model.parameters() if p.requires_grad]
        total, grads, merged = None, None, {}
        for w in self.widths if width is None else (width,):
            lam, n0 = self.sample(x.shape[0], generator)
            loss, m = self.loss(model, x, y, lam.to(x.device), n0, generator, w)
            if params is not None:
                g = torch.autograd.grad(loss, params, allow_unused=True)
                grads = g if grads is None else tuple(_add(a, b) for a, b in zip(grads, g))
                loss = loss.detach()
            total = loss if total is None else total + loss
            for k, v in m.items():
                merged[k] = merged.get(k, 0) + v
        merged["n"] = x.shape[0]
        if params is not None:
            total = _ReplayGrad.apply(total, grads, *params)
        return total, merged


def _add(a, b):
    return b if a is None else (a if b is None else a + b)


class _ReplayGrad(torch.autograd.Function):
    """A scalar whose backward hands precomputed gradients to ``params`` (scaled by the
    incoming gradient), so ``loss.backward()`` accumulates them as if the graph were alive."""

    @staticmethod
    def forward(ctx, value, grads, *params):
        ctx.grads = grads
        return value.detach().clone()

    @staticmethod
    def backward(ctx, g):
        return (None, None, *(None if t is None else t * g for t in ctx.grads))
