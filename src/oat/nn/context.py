"""The per-forward conditioning context handed to every conditioned layer.

Nothing about λ or width is global or stored on modules: each forward pass builds one
:class:`Ctx` from its own arguments and passes it down. Routing to the clean or the
adversarial BN is derived from each example's λ (λ == 0 → clean), never from where the
example sits in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Ctx:
    """Conditioning of one forward pass.

    Attributes:
        enc: encodings of the distinct λ values of the batch, ``(U, d)``, or None (no FiLM).
        inverse: ``(N,)`` index of each example's λ into ``enc`` (None when U == 1; ``(1,)``, one
            row for the whole batch, for a single-λ context that borrows a larger ``enc``).
        route: ``"clean"``, ``"adv"`` or ``"mixed"`` (dual BN only).
        clean_idx / adv_idx: example indices of each BN branch when ``route == "mixed"`` and
            the clean examples are not a prefix.
        n_clean_prefix: when the clean examples are exactly the first k of a mixed batch (as
            the OAT sampler orders them), k: the branches are then two slices and a ``cat``.
        width: active width multiplier; width_idx: its index in the trained widths.
        film_cache: when a dict, FiLM scale/shift are computed once (without gradients
            w.r.t. parameters) and reused, e.g. across the steps of an attack.
        values: the distinct λ of ``enc``'s rows.
        step: FiLM tables shared by the passes of one training step (see :class:`StepTables`).
    """

    enc: torch.Tensor | None
    inverse: torch.Tensor | None
    route: str
    clean_idx: torch.Tensor | None = None
    adv_idx: torch.Tensor | None = None
    n_clean_prefix: int | None = None
    width: float = 1.0
    width_idx: int = 0
    film_cache: dict | None = field(default=None, repr=False)
    values: tuple[float, ...] | None = None
    step: StepTables | None = field(default=None, repr=False)


class StepTables:
    """FiLM ``[scale | shift]`` tables of one training step, computed once with their graph.

    An OAT step runs the clean pass, the attack and the adversarial pass on the same λ draw:
    the FiLM MLPs' outputs for its distinct λ are the same in all three, so the first pass
    computes them (with gradients) and the others reuse them, and the backward runs through
    each MLP once. Valid for one step only: the optimiser changes the MLPs, and a backward
    frees the tables' graph. Held by the context (a dataclass, which DDP's input mover passes
    through as it is), so every pass of the step sees the same object.
    """

    __slots__ = ("tables",)

    def __init__(self):
        self.tables: dict = {}
