"""The conditioned model: ``model(x, lam, width=None) -> logits`` and ``model.at(lam, width)``.

Every architecture in the registry is a :class:`ConditionedNet`. Its
:class:`~oat.conditioning.Conditioning` spec decides the form: OAT/OATS (FiLM + dual
BN, a λ set, widths) or dedicated (no FiLM, one BN, a single λ). One class for both
means loading, sweeping and reporting never branch on the kind of model.
"""

from __future__ import annotations

import torch
from torch import nn

from oat.conditioning import ENCODINGS, LAM_TOL, Conditioning, make_table
from oat.errors import LamError
from oat.nn.context import Ctx, StepTables


class ConditionedNet(nn.Module):
    """Base class: λ/width handling shared by every architecture.

    Subclasses build their layers from ``self.spec`` and implement :meth:`forward_ctx`.
    ``self.arch`` records the registry name and constructor arguments so a checkpoint
    rebuilds the same network.
    """

    def __init__(self, spec: Conditioning):
        super().__init__()
        self.spec = spec
        self.arch: dict = {}
        # The encoding table is a buffer: saved with the weights, never re-drawn at load.
        self.register_buffer("lam_table", make_table(spec))

    # ------------------------------------------------------------------ conditioning
    def condition(self, lam, width: float | None = None, n: int | None = None, *,
                  film_cache: bool = False, step: bool = False, like: Ctx | None = None) -> Ctx:
        """Build the :class:`Ctx` for a float λ or a per-example ``(N,)`` λ tensor.

        ``step=True`` gives the context :class:`~oat.nn.context.StepTables`; ``like``, a
        context of the same training step whose λ include these, lends its encodings and
        tables, so FiLM computes each table once per step (:meth:`OAT.loss
        <oat.train.objectives.OAT.loss>`).
        """
        widx = self.spec.width_index(width)
        ctx_kw = dict(width=self.spec.widths[widx], width_idx=widx, film_cache={} if film_cache else None)
        if isinstance(lam, torch.Tensor) and lam.dim() == 0:
            lam = float(lam)
        if not isinstance(lam, torch.Tensor):
            lam = self.spec.check_lam(lam)
            route = "clean" if lam <= LAM_TOL else "adv"
            ctx = Ctx(enc=None, inverse=None, route=route, values=(lam,), **ctx_kw)
        else:
            ctx = self._condition_tensor(lam, n, ctx_kw)
        return self._encoded(ctx, like, step)

    def _encoded(self, ctx: Ctx, like: Ctx | None, step: bool) -> Ctx:
        """``ctx`` with its encodings: its own, or rows of ``like``'s (and ``like``'s tables)."""
        if like is None:
            ctx.enc, ctx.step = self._encode(list(ctx.values)), StepTables() if step else None
            return ctx
        # like's λ went through float32 (a tensor); a float λ may not have: match within LAM_TOL.
        found = [next((i for i, u in enumerate(like.values) if abs(u - v) <= LAM_TOL), None) for v in ctx.values]
        if None in found:
            missing = [v for v, i in zip(ctx.values, found) if i is None]
            raise ValueError(f"λ {missing} are not among the shared context's {list(like.values)}")
        if len(like.values) > 1:
            # Each example's row in like's table (one row for all when ctx has a single λ).
            rows = torch.tensor(found, device=self.lam_table.device)
            ctx.inverse = rows if ctx.inverse is None else rows[ctx.inverse]
        ctx.enc, ctx.values, ctx.step = like.enc, like.values, like.step
        return ctx

    def _condition_tensor(self, lam: torch.Tensor, n: int | None, ctx_kw: dict) -> Ctx:
        if lam.dim() != 1 or (n is not None and lam.shape[0] != n):
            raise LamError(f"a λ tensor must have shape (N,) matching the batch; got {tuple(lam.shape)}")
        lam = lam.to(device=self.lam_table.device, dtype=torch.float32)
        uniq, inverse = torch.unique(lam, return_inverse=True)
        values = tuple(self.spec.check_lam(float(v)) for v in uniq.tolist())
        clean = lam <= LAM_TOL
        n_clean = int(clean.sum())
        route, cidx, aidx, prefix = "mixed", None, None, None
        if n_clean == 0 or n_clean == lam.shape[0]:
            route = "clean" if n_clean else "adv"
        elif bool(clean[:n_clean].all()):  # λ = 0 first (the OAT sampler's order): slices, no gather
            prefix = n_clean
        else:
            cidx, aidx = clean.nonzero().squeeze(1), (~clean).nonzero().squeeze(1)
        return Ctx(enc=None, inverse=None if len(values) == 1 else inverse, route=route, clean_idx=cidx,
                   adv_idx=aidx, n_clean_prefix=prefix, values=values, **ctx_kw)

    def _encode(self, values: list[float]) -> torch.Tensor | None:
        if not self.spec.film:
            return None
        enc = ENCODINGS[self.spec.encoding]
        if enc.index_based:
            idx = torch.tensor([self.spec.lam_index(v) for v in values], device=self.lam_table.device)
            return self.lam_table[idx]
        lam = torch.tensor(values, device=self.lam_table.device)
        return enc.make(lam, self.spec.dim)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, lam, width: float | None = None) -> torch.Tensor:
        """Logits for images ``x`` in [0, 1] at trade-off ``lam`` (float or ``(N,)``) and ``width``.

        ``lam`` may also be a :class:`Ctx` from :meth:`condition`, whose width then applies
        (``width`` is ignored): objectives pass one this way, through any DDP wrapper.
        """
        if isinstance(lam, Ctx):
            return self.forward_ctx(x, lam)
        return self.forward_ctx(x, self.condition(lam, width, x.shape[0]))

    def forward_ctx(self, x: torch.Tensor, ctx: Ctx) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def predictor(self, lam, width: float | None = None, n: int | None = None, *, like: Ctx | None = None):
        """A ``x -> logits`` callable for attacks: the context (and FiLM scale/shift, computed
        once without parameter gradients) is reused across every call; ``like`` as in
        :meth:`condition` (a training step's attack reuses the step's FiLM tables)."""
        ctx = self.condition(lam, width, n, film_cache=True, like=like)
        return lambda x: self.forward_ctx(x, ctx)

    def at(self, lam: float, width: float | None = None) -> BoundModel:
        """A plain ``nn.Module`` mapping images to logits at a fixed (λ, width), in eval mode.

        The bound model is an inference view of this model (see :class:`BoundModel`): its
        ``train()``/``eval()`` never change this model's mode.
        """
        lam = self.spec.check_lam(lam)
        self.spec.width_index(width)
        return BoundModel(self, lam, width)

    @property
    def num_classes(self) -> int:
        return self.arch.get("num_classes", 0)


class BoundModel(nn.Module):
    """``model.at(lam, width)``: an ordinary classifier ``x -> logits`` for attacks, ART, ONNX.

    It shares storage with its parent and computes only the (λ, width) sub-network.

    It starts in eval mode, and its own ``training`` flag alone decides how it computes:
    ``bound.train(mode)`` sets that flag and does not recurse into the shared parent, and
    each forward runs the parent in the bound model's mode, putting every parent module's
    flag back afterwards. So tools that toggle modes around their work (``torch.onnx.export``
    restores the mode it found; ART's ``predict`` calls ``train(False)``) can never leave the
    parent in training mode, and an eval-mode bound model never updates BN running statistics.
    Calling ``bound.train()`` explicitly (to fine-tune the sub-network) does make its forward
    passes use batch statistics and update the parent's running statistics, as asked.
    """

    def __init__(self, parent: ConditionedNet, lam: float, width: float | None):
        super().__init__()
        self.parent = parent
        self.lam = float(lam)
        self.width = width
        self.training = False

    def train(self, mode: bool = True) -> BoundModel:
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode  # the parent is shared: its flags are only switched inside forward
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = list(self.parent.modules())
        saved = [m.training for m in modules]
        if all(flag == self.training for flag in saved):
            return self.parent(x, self.lam, self.width)
        try:
            for m in modules:
                m.training = self.training
            return self.parent(x, self.lam, self.width)
        finally:
            for m, flag in zip(modules, saved):
                m.training = flag

    def extra_repr(self) -> str:
        return f"lam={self.lam:g}, width={self.width}"
