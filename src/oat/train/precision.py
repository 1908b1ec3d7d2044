"""What ``amp=auto`` means: bf16 autocast where it is measured faster, fp32 elsewhere.

On CUDA bf16 is the default (tensor cores). On a CPU it depends on the processor: with native
bf16 (AVX-512-BF16, AMX) oneDNN runs bf16 convolutions and matmuls faster than fp32; without it
bf16 is emulated and several times slower. So ``auto`` on a CPU with native bf16 times the
training network's forward and backward at the run's batch in both precisions (a copy in eval
mode: the run's BN statistics and random streams are untouched) and takes bf16 only when it
is clearly faster. Elsewhere, and where a run must be reproducible (``deterministic``, several
processes that must agree, a resumed run of an earlier version), ``auto`` stays fp32.

The choice is written into the run's configuration (``amp: bf16`` or ``off``) with the
timings, so a resumed run trains in the precision it started with.
"""

from __future__ import annotations

import copy
import time

import torch

# bf16 must save at least this share of the fp32 time to be chosen: the check is short and
# a CPU shared with other work is noisy, and bf16 rounds the training gradients.
MIN_SPEEDUP = 1.3


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512-BF16 or AMX), as PyTorch detects it."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_amp(requested: str, device: torch.device, *, measure=None,
                reproducible: bool = False) -> tuple[str, dict]:
    """``(amp, record)``: ``bf16`` or ``off`` for ``requested`` (``auto``, ``bf16`` or ``off``).

    Args:
        measure: a callable returning ``(fp32_s, bf16_s)``, one training pass in each
            precision; called only for ``auto`` on a CPU with native bf16.
        reproducible: the run must not depend on a timing (``auto`` is then fp32 on the CPU).
    """
    record = {"requested": requested}
    if requested != "auto":
        return requested, {**record, "chosen": requested, "why": "asked"}
    if device.type == "cuda":
        return "bf16", {**record, "chosen": "bf16", "why": "CUDA"}
    if device.type != "cpu" or not native_bf16_cpu():
        return "off", {**record, "chosen": "off", "why": "no native bf16 on this device"}
    if reproducible or measure is None:
        return "off", {**record, "chosen": "off", "why": "a reproducible run does not choose by timing"}
    fp32_s, bf16_s = measure()
    speedup = fp32_s / bf16_s if bf16_s > 0 else 0.0
    chosen = "bf16" if speedup >= MIN_SPEEDUP else "off"
    return chosen, {**record, "chosen": chosen, "why": f"measured: bf16 {speedup:.2f}× fp32 "
                    f"(chosen when ≥ {MIN_SPEEDUP:g}×)", "fp32_s": fp32_s, "bf16_s": bf16_s, "speedup": speedup}


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
