"""``oat evaluate`` as a library call: sweep a trained run and record its results."""

from __future__ import annotations

import json
from pathlib import Path

from oat.data import load_data
from oat.env import resolve_device
from oat.errors import ConfigError
from oat.evaluate.results import merge_results
from oat.evaluate.sweep import sweep, to_rows
from oat.train.checkpoint import load_model


def resolve_lams(model, lams) -> list[float]:
    """``None``/``"all"`` → the trained set; else each value checked against the model."""
    if lams is None or lams == "all" or lams == ["all"]:
        return list(model.spec.lams)
    return [model.spec.check_lam(float(v)) for v in lams]


def resolve_widths(model, widths) -> list:
    """``None``/``"all"`` → every trained width (``[None]`` for a model that is not slimmable)."""
    if not model.spec.slimmable:
        if widths not in (None, "all", ["all"]) and any(abs(float(w) - 1.0) > 1e-6 for w in widths):
            model.spec.width_index(float(widths[0]))
        return [None]
    if widths is None or widths == "all" or widths == ["all"]:
        return list(model.spec.widths)
    return [model.spec.widths[model.spec.width_index(float(w))] for w in widths]


def run_header(run: Path) -> dict:
    """The results.json top level, from the run's config.json."""
    meta = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else {}
    cfg = meta.get("config", {})
    return {"objective": cfg.get("objective"), "model": cfg.get("model"), "data": cfg.get("data"),
            "eps": meta.get("eps"), "seed": cfg.get("seed"),
            "lam": cfg.get("lam") if cfg.get("objective") == "pgdat" else None}


def evaluate_run(run, *, split: str = "test", lams=None, widths=None, attacks=("pgd20",), subset=None,
                 eps: float | None = None, batch_size: int = 512, device="auto", seed: int = 0,
                 progress: bool = False, report: bool = True, log=print) -> list[dict]:
    """Evaluate the run's newest checkpoint and merge the rows into ``RUN/results.json``.

    Args:
        run: run folder.
        split: ``"test"`` (default) or ``"val"``.
        lams: λ values, or None/"all" for the trained set.
        widths: widths, or None/"all" for every trained width.
        attacks: attack names (see ``oat.attacks.list_attacks()``).
        subset: a seeded subset of this many examples (default: the whole split).
        eps: attack radius (default: the run's ε).
        batch_size: examples per forward pass.
        device: evaluation device.
        seed: seed of the subset and attack starts.
        progress: progress bar.
        report: rewrite ``RUN/report.md`` afterwards.
        log: where the table goes.

    Returns:
        The new rows.
    """
    run = Path(run)
    if split not in ("val", "test"):
        raise ConfigError(f"split must be val or test; got {split!r}")
    device = resolve_device(device) if isinstance(device, str) else device
    model = load_model(run, device)
    cfg = model.checkpoint_state.get("config", {})
    eps = float(model.checkpoint_state.get("eps", 0.0)) if eps is None else float(eps)
    data = load_data(cfg.get("data", "digits"), cfg.get("data_dir"), val_size=cfg.get("val_size"),
                     seed=cfg.get("seed", 0))
    if model.arch.get("in_channels") != data.image_shape[0]:
        raise ConfigError(f"{data.name} images have {data.image_shape[0]} channels; the model expects "
                          f"{model.arch.get('in_channels')}")
    dataset = data.val if split == "val" else data.test
    result = sweep(model, dataset, lams=resolve_lams(model, lams), widths=resolve_widths(model, widths),
                   attacks=list(attacks), eps=eps, batch_size=batch_size, device=device, seed=seed,
                   subset=subset, progress=progress)
    rows = to_rows(result, eps=eps, split=split, slimmable=model.spec.slimmable)
    merge_results(run, run_header(run), rows)
    log(format_rows(rows))
    if report:
        from oat.evaluate.report import write_report

        write_report([run])
    return rows


def format_rows(rows: list[dict]) -> str:
    """A plain-text table of result rows."""
    lines = [f"{'lam':>6} {'width':>6} {'attack':>10} {'SA':>7} {'RA':>7} {'n':>6}"]
    for r in rows:
        w = "-" if r["width"] is None else f"{r['width']:g}"
        lines.append(f"{r['lam']:>6g} {w:>6} {r['attack']:>10} {100 * r['sa']:>6.2f}% {100 * r['ra']:>6.2f}% "
                     f"{r['n']:>6}")
    return "\n".join(lines)
