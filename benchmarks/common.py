"""Helpers shared by the benchmarks: machine info, JSON results, tables, data and timing.

Import from a benchmark script in this folder as ``from common import ...`` (the
script's folder is on ``sys.path`` when it is run as ``python benchmarks/X.py``).
Importing this module also puts the checkout's ``src`` first on ``sys.path`` so the
benchmarks run from a source tree without an install.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages: other processes share the CPU, so record them."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("numpy", "art"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # optional peer libraries
            pass
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=SRC, capture_output=True,
                                           text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


def machine(device: torch.device) -> dict:
    """What ran the benchmark: platform, CPU, threads, GPU, and the load at the time."""
    info = {"platform": platform.platform(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": str(device), "load_average": load_average()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return info


def _script_name() -> str:
    """The running script relative to the repository root (no machine path in the results)."""
    script = Path(sys.argv[0]).resolve()
    try:
        return script.relative_to(RESULTS.parents[1]).as_posix()
    except ValueError:
        return script.name


def portable(value: str) -> str:
    """A path as results may record it: relative to the repository when inside it, else its last
    name (a committed result names no machine path); anything else unchanged."""
    key, eq, val = value.partition("=") if value.startswith("--") else ("", "", value)
    p = Path(val)
    if not p.is_absolute():
        return value
    try:
        val = p.resolve().relative_to(RESULTS.parents[1]).as_posix()
    except ValueError:
        val = p.name
    return f"{key}{eq}{val}"


def portable_argv(argv: list[str] | None = None) -> list[str]:
    """The command-line arguments (default ``sys.argv[1:]``) with every absolute path made portable."""
    return [portable(a) for a in (sys.argv[1:] if argv is None else argv)]


def write_result(name: str, doc: dict, path: Path | None = None) -> Path:
    """Write ``doc`` (plus machine, versions, date, command) as ``results/<name>.json``."""
    device = torch.device(doc.get("settings", {}).get("device", "cpu"))
    full = {"benchmark": name, **doc, "machine": machine(device), "versions": versions(), "date": now_iso(),
            "command": "python " + " ".join([_script_name(), *portable_argv()])}
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(full, indent=1) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    return path


def table(rows: list[dict], cols: list[str] | None = None) -> str:
    """A plain fixed-width table of ``rows`` (dicts); floats get 4 significant digits."""
    cols = cols or list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.4g}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def set_threads(n: int | None) -> None:
    """Pin intra-op threads: on a shared 2-core box one thread gives the steadiest figures."""
    if n:
        torch.set_num_threads(n)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """``with Timer(device) as t: ...`` then ``t.seconds`` (synchronises CUDA at both ends)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        sync(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.seconds = time.perf_counter() - self.t0


def digits_resized(size: int | None, channels: int = 1, seed: int = 0):
    """The embedded digits (real data, 8×8) upsampled to ``size``×``size`` as uint8 splits.

    Returns (train, val, test) :class:`oat.data.ArrayDataset` and the digits' default ε.
    """
    from oat.data import ArrayDataset, load_data

    d = load_data("digits", None, seed=seed)

    def resize(ds):
        x = ds.images
        if size and size != x.shape[-1]:
            x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
            x = x.round().clamp(0, 255).to(torch.uint8)
        if channels != x.shape[1]:
            x = x.expand(-1, channels, -1, -1)
        return ArrayDataset(x.contiguous(), ds.labels, ds.num_classes)

    return resize(d.train), resize(d.val), resize(d.test), d.default_eps


def synthetic(n: int, shape: tuple[int, int, int], num_classes: int = 10, seed: int = 0):
    """Random uint8 images and labels (throughput only: nothing is learnt from them)."""
    from oat.data import ArrayDataset

    g = torch.Generator().manual_seed(seed)
    return ArrayDataset(torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g),
                        torch.randint(0, num_classes, (n,), generator=g), num_classes)


@torch.no_grad()
def clean_accuracy(predict, ds, device, batch: int = 500) -> float:
    correct = 0
    for i in range(0, len(ds), batch):
        x = ds.images[i:i + batch].to(device).float().div_(255)
        correct += int((predict(x).argmax(1) == ds.labels[i:i + batch].to(device)).sum())
    return correct / len(ds)


def pgd_accuracy(predict, ds, device, eps: float, steps: int = 20, batch: int = 500, seed: int = 0) -> float:
    """Robust accuracy under oat's PGD-20 (evaluation step size, keep the worst iterate).

    Counted as ``results.json`` counts RA: an example is robust only if it is also classified
    correctly when clean (a wrong clean prediction that an attack happens to flip to the
    right class is no robustness).
    """
    from oat.attacks import pgd

    g = torch.Generator(device=device).manual_seed(seed)
    correct = 0
    for i in range(0, len(ds), batch):
        x = ds.images[i:i + batch].to(device).float().div_(255)
        y = ds.labels[i:i + batch].to(device)
        xa = pgd(predict, x, y, eps=eps, steps=steps, generator=g)
        with torch.no_grad():
            correct += int(((predict(xa).argmax(1) == y) & (predict(x).argmax(1) == y)).sum())
    return correct / len(ds)
