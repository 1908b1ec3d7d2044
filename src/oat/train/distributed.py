"""Data-parallel training across processes: ``torchrun`` + DistributedDataParallel.

Launch: ``torchrun --nproc_per_node=N -m oat train ...`` (multi-node: ``--nnodes``,
``--rdzv-endpoint``). As in nanoGPT, the process reads ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` from the environment torchrun sets; without them it is one process and
nothing here does anything. NCCL on CUDA, gloo on the CPU; never ``DataParallel``.

Decisions, and why:

* ``--batch-size`` is the *global* batch: each rank takes ``B / world_size`` examples, so
  the optimisation (and the learning rate, which is not rescaled) is that of a
  1-process run with batch ``B``.
* λ is drawn per rank with ``ceil(b / K)`` zeros in each local batch ``b = B / W``: the
  global batch then holds between ``ceil(B/K)`` and ``ceil(B/K) + W - 1`` zeros (exactly
  ``ceil(B/K)`` when ``W·K`` divides ``B``, or e.g. 22 of 128 for K = 6, W = 2). We keep
  the per-rank rule rather than split ``ceil(B/K)`` exactly across ranks because every
  rank must use both BN branches in every step: DDP waits for a gradient of every
  parameter, and a rank whose batch held no λ = 0 example would leave the clean BN
  without one (``find_unused_parameters`` cannot help: it is incompatible with the
  objective's two forward passes before one backward).
* Batch norm: ``broadcast_buffers=False`` and each rank normalises with its own batch
  statistics, exactly as a 1-process run with batch ``b`` would; the running statistics
  are *averaged* across ranks (:func:`average_bn_stats`) before every evaluation and
  checkpoint. Averaging costs one all-reduce per epoch; SyncBatchNorm would add one
  all-gather per BN layer per forward (two forwards per step, dual BN) and does not run
  on gloo/CPU, so it is not offered. DDP's default (broadcast rank 0's buffers at every
  forward) would throw away the other ranks' statistics.
* Timeouts: the process group is created with a timeout (``--dist-timeout``, env
  ``OAT_DIST_TIMEOUT``, default 600 s), so a rank that dies or hangs ends the job with
  an error instead of a hang; under torchrun the agent also stops the others at once.
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from oat.errors import ConfigError, OatError

DEFAULT_TIMEOUT_S = 600.0


class DistributedError(OatError):
    """Another rank failed, or the ranks could not agree in time."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def record(self) -> dict:
        """What the run folder's config.json records about the job."""
        return {"world_size": self.world_size, "backend": self.backend, "timeout_s": self.timeout_s}


def env_info() -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` from torchrun's environment (``(0, 0, 1)`` without it)."""
    try:
        return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                int(os.environ.get("WORLD_SIZE", 1)))
    except ValueError as e:
        raise ConfigError(f"RANK/LOCAL_RANK/WORLD_SIZE must be integers ({e})") from None


def timeout_from_env(timeout_s: float | None = None) -> float:
    if timeout_s is not None:
        return float(timeout_s)
    try:
        return float(os.environ.get("OAT_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError:
        raise ConfigError("OAT_DIST_TIMEOUT must be a number of seconds") from None


def setup(device_name: str = "auto", timeout_s: float | None = None) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun described (if any) and pick this rank's device.

    Returns:
        ``(info, device)``: CUDA ranks take ``cuda:LOCAL_RANK``; CPU ranks the CPU.
    """
    rank, local_rank, world = env_info()
    timeout = timeout_from_env(timeout_s)
    if timeout <= 0:
        raise ConfigError(f"the distributed timeout must be positive; got {timeout}")
    cuda = torch.cuda.is_available() and device_name in ("auto", "cuda") or device_name.startswith("cuda")
    if world <= 1:
        from oat.env import resolve_device

        return DistInfo(timeout_s=timeout), resolve_device(device_name)
    backend = "nccl" if cuda else "gloo"
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return DistInfo(rank, local_rank, world, backend, timeout), device


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_batch_size(global_batch: int, world_size: int) -> int:
    """``B / world_size``; a global batch that does not split evenly is refused."""
    if global_batch % world_size:
        raise ConfigError(f"--batch-size {global_batch} is the global batch and must be divisible by the "
                          f"{world_size} processes")
    return global_batch // world_size


class OatDDP(DistributedDataParallel):
    """DDP wrapper that still looks like a :class:`~oat.models.ConditionedNet` to objectives.

    The objective calls ``model(x, ctx, width)`` for the training forward passes: those go
    through DDP, so the backward all-reduces the gradients. It crafts adversarial examples
    through ``model.predictor(...)``, which goes to the inner module directly: crafting
    needs no gradient sync (PGD differentiates w.r.t. the perturbation only) and must not
    register a forward with DDP's reducer.
    """

    def predictor(self, *args, **kw):
        return self.module.predictor(*args, **kw)

    def condition(self, *args, **kw):
        return self.module.condition(*args, **kw)

    @property
    def spec(self):
        return self.module.spec


def wrap(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """The model to hand to the objective: ``model`` itself, or its DDP wrapper."""
    if not info.enabled:
        return model
    freeze_unreachable_bn(model)
    ids = [device.index] if device.type == "cuda" else None
    # No buffer broadcast at each forward (see the module docstring); newer torch spells it
    # forward_sync_buffers (which still syncs at init: every rank starts from rank 0's state).
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return OatDDP(model, device_ids=ids, **no_sync)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def freeze_unreachable_bn(model: torch.nn.Module) -> None:
    """Mark BN branches no training example can reach as frozen (DDP needs a gradient for
    every trainable parameter): the clean BN of a dual-BN model whose λ set lacks 0, the
    adversarial BN of one whose λ set is only 0. A 1-process run leaves them untouched too."""
    from oat.nn.dual_bn import DualBN

    spec = getattr(model, "spec", None)
    if spec is None or not spec.dual_bn:
        return
    has_zero, has_pos = any(v <= 1e-6 for v in spec.lams), any(v > 1e-6 for v in spec.lams)
    for m in model.modules():
        if isinstance(m, DualBN) and m.dual:
            for pair in m.bns:
                for idx, reachable in ((0, has_zero), (1, has_pos)):
                    if not reachable:
                        pair[idx].requires_grad_(False)


def average_bn_stats(model: torch.nn.Module, info: DistInfo) -> None:
    """Average every BN layer's running mean and variance across ranks (in place)."""
    if not info.enabled:
        return
    bufs = [b for n, b in unwrap(model).named_buffers() if n.endswith(("running_mean", "running_var"))]
    if not bufs:
        return
    flat = torch.cat([b.detach().float().reshape(-1) for b in bufs])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for b in bufs:
        b.copy_(flat[offset: offset + b.numel()].view_as(b))
        offset += b.numel()


def all_reduce_sums(sums: dict, info: DistInfo, device: torch.device) -> dict:
    """Sum each rank's epoch metrics (counts, correct, loss·n) so rank 0 logs the global figures."""
    if not info.enabled or not sums:
        return sums
    keys = sorted(sums)
    t = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def agree(flags: list[bool], info: DistInfo, device: torch.device) -> list[bool]:
    """Logical OR of per-rank flags (non-finite step, stop requested), so all ranks act alike."""
    if not info.enabled:
        return flags
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def param_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's bytes (to check the ranks hold identical weights)."""
    h = hashlib.sha256()
    for p in unwrap(model).parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_in_sync(model: torch.nn.Module, info: DistInfo) -> str:
    """Raise if the ranks' parameters differ; returns the common digest."""
    mine = param_digest(model)
    if not info.enabled:
        return mine
    digests: list = [None] * info.world_size
    dist.all_gather_object(digests, mine)
    if len(set(digests)) != 1:
        raise DistributedError(f"parameters differ across ranks: {digests}")
    return mine


def sync_check_hook(out, info: DistInfo):
    """With ``OAT_CHECK_SYNC=1``: after every step compare the ranks' parameter digests (a
    debugging aid, one all-gather per step); rank 0 appends ``step digest`` to
    ``RUN/sync-check.log``. None otherwise."""
    if os.environ.get("OAT_CHECK_SYNC") != "1":
        return None

    def hook(state, model):
        digest = check_in_sync(model, info)
        if info.is_main:
            with open(f"{out}/sync-check.log", "a") as f:
                f.write(f"{state.step} {digest}\n")

    return hook
