"""Every GPU figure in one short run: what a 15-minute accelerator slot can measure.

One command, on one GPU with PyTorch installed and no network, writes one JSON and a Markdown
table into the folder it is given. Each phase has its own time cap (together at most 8 minutes)
and records what it measured before its cap; a phase that fails records its error and the next
one runs. Phases:

1. ``matmul``  — the device's measured bf16 and fp32 matrix-multiply rate (the FLOP yardstick);
2. ``step``    — images/s of one OAT step (ResNet-34, paper λ set, PGD-7, SGD) at batches 128–512
   for fp32 eager and bf16 + channels_last; peak memory per image;
3. ``flops``   — FLOPs of one step counted with ``torch.utils.flop_counter`` and the share of the
   measured bf16 rate the bf16 step reaches;
4. ``sweep``   — evaluation PGD-20 over the 6 λ: all λ in one batch against λ by λ (oat's two
   sweep paths), on a ResNet-34-shaped model;
5. ``epoch``   — one epoch of CIFAR-shaped OAT training through the library's ``DeviceLoader``
   (uint8 data made on the device, crop + flip there) and the projected 200-epoch CIFAR-10 time;
6. ``compile`` — the bf16 + channels_last step again under ``torch.compile``. It runs last because its
   compilation (in the warm-up, before any deadline can be checked) is the one thing whose length is
   not known in advance; the JSON and table are rewritten after every phase, so a run stopped from
   outside keeps every phase that finished.

    python benchmarks/gpu_suite.py --out OUT            # on the GPU machine (≤ 8 min)
    python benchmarks/gpu_suite.py --dry-run --out OUT  # tiny sizes on the CPU (the test suite runs it)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import table, write_result  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from oat.conditioning import PAPER_LAMS, Conditioning  # noqa: E402
from oat.data.arrays import ArrayDataset  # noqa: E402
from oat.data.device_loader import DeviceLoader  # noqa: E402
from oat.evaluate.sweep import sweep  # noqa: E402
from oat.models import create_model  # noqa: E402
from oat.train.objectives import OAT, AttackConfig  # noqa: E402

# Seconds each phase may take; together ≤ 480 (8 minutes), so a 15-minute slot (start-up included)
# leaves room for one rerun.
CAPS = {"matmul": 15, "step": 110, "flops": 25, "sweep": 90, "epoch": 120, "compile": 120}
CIFAR_TRAIN = 45_000  # the paper's CIFAR-10 training split (50,000 less 5,000 for validation)
PAPER_EPOCHS = 200


@dataclass
class Sizes:
    """Model and data sizes of a run: the real ones, or tiny ones for ``--dry-run``."""

    model: str = "resnet34"
    model_kwargs: dict = field(default_factory=dict)
    image: int = 32
    batches: tuple[int, ...] = (128, 256, 512)
    matmul: int = 8192
    sweep_images: int = 512
    epoch_images: int = CIFAR_TRAIN
    steps: int = 10  # timed steps per (setting, batch), after two warm-up steps
    compile: bool = True


# Big enough for every code path (each BN branch sees > 1 value per channel), small enough for seconds.
DRY = Sizes(model="resnet34", model_kwargs={"base": 4}, image=16, batches=(12,), matmul=64, sweep_images=2,
            epoch_images=24, steps=1, compile=False)


class Phase:
    """A phase's deadline and record: ``with Phase(doc, "step") as ph: ... ph.left()``."""

    def __init__(self, doc: dict, name: str, scale: float = 1.0):
        self.doc, self.name, self.cap = doc, name, CAPS[name] * scale
        self.out: dict = {"cap_s": self.cap}

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def left(self) -> float:
        return self.cap - (time.perf_counter() - self.t0)

    def __exit__(self, kind, err, tb):
        self.out["wall_s"] = time.perf_counter() - self.t0
        if err is not None:  # record and go on: one broken phase must not cost the others
            self.out["error"] = f"{kind.__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            self.out["traceback_tail"] = traceback.format_exception(kind, err, tb)[-1].strip()[:300]
        self.doc["phases"][self.name] = self.out
        print(f"[{self.name}] {self.out['wall_s']:.1f} s" + (f"  ERROR {self.out['error']}" if err else ""), flush=True)
        return True


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(n: int, dtype, device, deadline: float) -> float:
    """FLOP/s of an n×n matrix multiply (2n³ FLOPs), best of up to 10 within the deadline."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    (a @ b).sum().item()
    best, t_end = float("inf"), time.perf_counter() + deadline
    for _ in range(10):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() > t_end:
            break
    return 2 * n**3 / best


def make_step(sz: Sizes, device, batch: int, amp: bool, channels_last: bool, compiled: bool):
    """One OAT training step (paper λ set, PGD-7, SGD) on a fixed batch, as a closure."""
    torch.manual_seed(0)
    model = create_model(sz.model, Conditioning(lams=PAPER_LAMS), in_channels=3, num_classes=10,
                         **sz.model_kwargs).to(device)
    x = torch.rand(batch, 3, sz.image, sz.image, device=device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    if compiled:
        model.forward_ctx = torch.compile(model.forward_ctx)
    objective = OAT(model.spec, AttackConfig(eps=8 / 255, steps=7))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    model.train()

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, _ = objective(model, x, y, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def time_steps(step, device, n: int, deadline: float) -> tuple[float, int, float]:
    """Seconds per step over up to ``n`` timed steps (after 2 warm-up steps) before ``deadline``, the
    number timed (0 when the warm-up, e.g. a compilation, used up the time) and the warm-up's seconds."""
    t0 = time.perf_counter()
    for _ in range(2):
        step()
    sync(device)
    warm = time.perf_counter() - t0
    t0, done = time.perf_counter(), 0
    while done < n and time.perf_counter() < deadline:
        step()
        done += 1
    sync(device)
    return (time.perf_counter() - t0) / max(done, 1), done, warm


def phase_matmul(doc, sz, device, scale):
    with Phase(doc, "matmul", scale) as ph:
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            ph.out[f"{name}_tflops"] = matmul_rate(sz.matmul, dtype, device, ph.left() / 2) / 1e12


SETTINGS = {"fp32": (False, False, False), "bf16+cl": (True, True, False), "bf16+cl+compile": (True, True, True)}


def phase_step(doc, sz, device, scale, name="step", settings=("fp32", "bf16+cl"), batches=None):
    with Phase(doc, name, scale) as ph:
        rows = []
        plan = [(s, b) for s in settings for b in batches or sz.batches]
        for i, (setting, batch) in enumerate(plan):
            share = ph.left() / (len(plan) - i)  # what is left, shared by the measurements still to come
            if share <= 0:
                rows.append({"setting": setting, "batch": batch, "skipped": "phase cap reached"})
                continue
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            amp, cl, comp = SETTINGS[setting]
            try:
                sec, n, warm = time_steps(make_step(sz, device, batch, amp, cl, comp), device, sz.steps,
                                          time.perf_counter() + share)
            except RuntimeError as e:  # e.g. out of memory at the largest batch: record, go on
                rows.append({"setting": setting, "batch": batch, "error": str(e).splitlines()[0][:160]})
                continue
            if n == 0:  # the warm-up (a compilation) ate the share: no timing to report
                rows.append({"setting": setting, "batch": batch, "warmup_s": warm, "skipped": "no time left"})
                continue
            row = {"setting": setting, "batch": batch, "images_per_s": batch / sec, "timed_steps": n,
                   "warmup_s": warm}
            if device.type == "cuda":
                row["peak_mib_per_image"] = torch.cuda.max_memory_allocated(device) / 2**20 / batch
            rows.append(row)
        ph.out["rows"] = rows


def phase_compile(doc, sz, device, scale):
    # One batch only: each batch size is a compilation of its own (minutes for this model).
    if sz.compile:
        phase_step(doc, sz, device, scale, name="compile", settings=("bf16+cl+compile",),
                   batches=(sz.batches[len(sz.batches) // 2],))


def phase_flops(doc, sz, device, scale):
    with Phase(doc, "flops", scale) as ph:
        batch = sz.batches[0]
        step = make_step(sz, device, batch, amp=True, channels_last=True, compiled=False)
        with FlopCounterMode(display=False) as fc:
            step()
        flops = fc.get_total_flops()
        ph.out.update(batch=batch, flops_per_step=flops, flops_per_image=flops / batch)
        rate = doc["phases"].get("matmul", {}).get("bf16_tflops")
        ips = [r["images_per_s"] for r in doc["phases"].get("step", {}).get("rows", [])
               if r.get("setting") == "bf16+cl" and r.get("batch") == batch and "images_per_s" in r]
        if rate and ips:  # achieved FLOP/s of the bf16 step over the measured bf16 matmul rate
            ph.out["bf16_share_of_matmul_rate"] = flops / batch * ips[0] / (rate * 1e12)


def phase_sweep(doc, sz, device, scale):
    with Phase(doc, "sweep", scale) as ph:
        torch.manual_seed(0)
        model = create_model(sz.model, Conditioning(lams=PAPER_LAMS), in_channels=3, num_classes=10,
                             **sz.model_kwargs).to(device).eval()
        g = torch.Generator().manual_seed(0)
        data = ArrayDataset(torch.randint(0, 256, (sz.sweep_images, 3, sz.image, sz.image), dtype=torch.uint8,
                                          generator=g), torch.randint(0, 10, (sz.sweep_images,), generator=g), 10)
        for name, batched in (("batched", True), ("per_lam", False)):
            if ph.left() <= 0:
                ph.out[name] = "skipped: phase cap reached"
                continue
            sync(device)
            t0 = time.perf_counter()
            sweep(model, data, lams=list(PAPER_LAMS), widths=[None], attacks=["pgd20"], eps=8 / 255,
                  batch_size=min(512, sz.sweep_images), device=device, batch_lams=batched)
            sync(device)
            ph.out[f"{name}_image_lams_per_s"] = sz.sweep_images * len(PAPER_LAMS) / (time.perf_counter() - t0)
        if "batched_image_lams_per_s" in ph.out and "per_lam_image_lams_per_s" in ph.out:
            ph.out["batched_over_per_lam"] = ph.out["batched_image_lams_per_s"] / ph.out["per_lam_image_lams_per_s"]


def phase_epoch(doc, sz, device, scale):
    with Phase(doc, "epoch", scale) as ph:
        batch = sz.batches[0]
        g = torch.Generator(device=device).manual_seed(0)
        images = torch.randint(0, 256, (sz.epoch_images, 3, sz.image, sz.image), dtype=torch.uint8, device=device,
                               generator=g)
        labels = torch.randint(0, 10, (sz.epoch_images,), device=device, generator=g)
        loader = DeviceLoader(ArrayDataset(images, labels, 10), batch, shuffle=True, augment=("crop", "flip"),
                              device=device, seed=0, channels_last=True)
        torch.manual_seed(0)
        model = create_model(sz.model, Conditioning(lams=PAPER_LAMS), in_channels=3, num_classes=10,
                             **sz.model_kwargs).to(device).to(memory_format=torch.channels_last).train()
        objective = OAT(model.spec, AttackConfig(eps=8 / 255, steps=7))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        gen = torch.Generator().manual_seed(0)
        sync(device)
        t0, seen = time.perf_counter(), 0
        for x, y in loader:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss, _ = objective(model, x, y, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += x.shape[0]
            if ph.left() <= 0:
                break
        sync(device)
        sec = time.perf_counter() - t0
        ph.out.update(batch=batch, images=seen, of=sz.epoch_images, images_per_s=seen / sec,
                      complete=seen >= sz.epoch_images - batch + 1)
        ph.out["epoch_s"] = sz.epoch_images / ph.out["images_per_s"]
        ph.out["projected_paper_run_h"] = CIFAR_TRAIN / ph.out["images_per_s"] * PAPER_EPOCHS / 3600


PHASES = (phase_matmul, phase_step, phase_flops, phase_sweep, phase_epoch, phase_compile)


def markdown(doc: dict) -> str:
    p = doc["phases"]
    lines = [f"## GPU suite: {doc['machine'].get('gpu') or doc['settings']['device']}", "",
             f"`{doc['command']}`" if "command" in doc else "", ""]
    if "matmul" in p:
        lines.append(f"Matmul: bf16 {p['matmul'].get('bf16_tflops', float('nan')):.1f} TFLOP/s, "
                     f"fp32 {p['matmul'].get('fp32_tflops', float('nan')):.1f} TFLOP/s.\n")
    rows = p.get("step", {}).get("rows", []) + p.get("compile", {}).get("rows", [])
    if rows:
        lines.append("### OAT step (PGD-7, paper λ set)\n")
        lines.append(table(rows))
    for name in ("flops", "sweep", "epoch"):
        if name in p:
            body = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in p[name].items()
                             if k != "traceback_tail")
            lines.append(f"**{name}**: {body}\n")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for gpu_suite.json and gpu_suite.md")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes, short caps (CPU; the test suite)")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sz, scale = (DRY, 1.0) if args.dry_run else (Sizes(), 1.0)  # a dry run's phases end far below their caps
    if args.dry_run:
        torch.set_num_threads(1)  # the test suite's setting: tiny models, a shared box
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    doc = {"settings": {**asdict(sz), "device": str(device), "dry_run": args.dry_run, "caps_s": CAPS,
                        "scale": scale}, "phases": {}}
    t0, out = time.perf_counter(), Path(args.out)
    for phase in PHASES:
        phase(doc, sz, device, scale)
        doc["total_s"] = time.perf_counter() - t0
        save(doc, out)  # after every phase: a run stopped from outside keeps what finished
    return 1 if any("error" in ph for ph in doc["phases"].values()) else 0


def save(doc: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    written = json.loads(write_result("gpu_suite", doc, out / "gpu_suite.json").read_text())
    (out / "gpu_suite.md").write_text(markdown(written))


if __name__ == "__main__":
    sys.exit(main())
