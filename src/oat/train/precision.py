"""What ``amp=auto`` means: bf16 autocast where it is measured faster, fp32 elsewhere.

On CUDA bf16 is the default (tensor cores). On a CPU it depends on the processor: with native
bf16 (AVX-512-BF16, AMX) oneDNN runs bf16 convolutions and matmuls faster than fp32; without it
bf16 is emulated and several times slower. So ``auto`` on a CPU with native bf16 times the
training network's forward and backward at the run's batch in both precisions (a copy in eval
mode: the run's BN statistics and random streams are untouched), projects the speed of a whole
training step from it (the training PGD runs outside autocast by default, so only the two
training passes of a step gain), and takes bf16 only when that step is clearly faster; where no
pass speed could make the step fast enough (PGD-7 in fp32, the default) it times nothing. Elsewhere
``auto`` is fp32, and so it is where a timing must not decide: ``deterministic`` runs and runs
of several processes (which must agree). A resumed run of an earlier version, saved with
``amp: auto``, keeps that version's meaning (bf16 on CUDA, fp32 on a CPU).

The choice is written into the run's configuration (``amp: bf16`` or ``off``) with the
timings, so a resumed run trains in the precision it started with.
"""

from __future__ import annotations

import copy
import time

import torch

# bf16 is chosen only when a whole training step is projected to run at least this many times
# faster: the check is short, a shared CPU is noisy, and bf16 rounds the training gradients.
MIN_SPEEDUP = 1.3
# Forward-backward passes of one training step under autocast (the clean and the adversarial pass).
TRAIN_PASSES = 2


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512-BF16 or AMX), as PyTorch detects it."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def step_speedup(fp32_s: float, bf16_s: float, fp32_passes: int, amp_passes: int = TRAIN_PASSES) -> float:
    """A training step's projected speed-up under bf16 autocast: ``fp32_passes`` passes (the
    training PGD's, when it runs outside autocast) cost the same in both, ``amp_passes`` gain."""
    passes = fp32_passes + amp_passes
    return passes * fp32_s / (fp32_passes * fp32_s + amp_passes * bf16_s) if bf16_s > 0 else 0.0


def resolve_amp(requested: str, device: torch.device, *, measure=None, fp32_passes: int = 0,
                reproducible: bool = False, why_reproducible: str = "a reproducible run") -> tuple[str, dict]:
    """``(amp, record)``: ``bf16`` or ``off`` for ``requested`` (``auto``, ``bf16`` or ``off``).

    Args:
        measure: a callable returning ``(fp32_s, bf16_s)``, one training pass in each
            precision; called only for ``auto`` on a CPU with native bf16.
        fp32_passes: passes of a step that stay fp32 whatever the autocast (the training
            attack's steps when it runs in fp32).
        reproducible: a timing must not decide (``auto`` is then fp32 on the CPU);
            ``why_reproducible`` says why, for the record.
    """
    record = {"requested": requested}
    if requested != "auto":
        return requested, {**record, "chosen": requested, "why": "asked"}
    if device.type == "cuda":
        return "bf16", {**record, "chosen": "bf16", "why": "CUDA"}
    if device.type != "cpu" or not native_bf16_cpu():
        return "off", {**record, "chosen": "off", "why": "no native bf16 on this device"}
    if reproducible or measure is None:
        return "off", {**record, "chosen": "off", "why": f"{why_reproducible}: not chosen by a timing"}
    if step_speedup(1.0, 1e-12, fp32_passes) < MIN_SPEEDUP:  # not even a free bf16 pass would do
        return "off", {**record, "chosen": "off", "fp32_passes": fp32_passes,
                       "why": f"{fp32_passes} fp32 passes a step: bf16 cannot make it {MIN_SPEEDUP:g}× faster"}
    fp32_s, bf16_s = measure()
    speedup = step_speedup(fp32_s, bf16_s, fp32_passes)
    chosen = "bf16" if speedup >= MIN_SPEEDUP else "off"
    why = (f"measured: a step {speedup:.2f}× faster in bf16 (a pass {fp32_s / bf16_s:.2f}×, {fp32_passes} "
           f"fp32 passes a step; chosen at ≥ {MIN_SPEEDUP:g}×)")
    return chosen, {**record, "chosen": chosen, "fp32_s": fp32_s, "bf16_s": bf16_s, "fp32_passes": fp32_passes,
                    "speedup": speedup, "why": why}


def time_train_pass(model: torch.nn.Module, shape: tuple[int, ...], lam: float, *, repeats: int = 3,
                    channels_last: bool = False) -> tuple[float, float]:
    """Median seconds of one forward + backward of ``model`` on a ``shape`` batch, fp32 then bf16.

    Runs on a copy in eval mode with a private generator, so the model, its BN statistics and
    every random stream of the run are left as they were. The two precisions alternate.
    """
    net = copy.deepcopy(model).eval()
    device = next(net.parameters()).device
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)

    def one(bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = net(x, lam).float().logsumexp(1).sum()
        loss.backward()
        net.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    one(False), one(True)  # first calls set up oneDNN's kernels
    times = {False: [], True: []}
    for _ in range(repeats):
        for bf16 in (False, True):
            times[bf16].append(one(bf16))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return med[False], med[True]
