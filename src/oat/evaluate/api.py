"""``oat evaluate`` as a library call: sweep a trained run and record its results."""

from __future__ import annotations

import json
from pathlib import Path

from oat.attacks.autoattack import package_version
from oat.checkpoint import load_model, resolve_checkpoint
from oat.data import load_data
from oat.env import resolve_device
from oat.errors import ConfigError
from oat.evaluate.checks import ChecksFailed, failed, run_checks
from oat.evaluate.checks import summary as check_summary
from oat.evaluate.gallery import make_gallery, write_gallery
from oat.evaluate.journal import Journal, journal_name
from oat.evaluate.plan import EvalPlan
from oat.evaluate.provenance import check_eps, check_inside, checkpoint_sha256, current_rows, provenance
from oat.evaluate.results import larger_kept, merge_results, read_results, write_per_example
from oat.evaluate.select import describe, select_operating_point
from oat.evaluate.sweep import per_example, sweep
from oat.runlock import locked


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
    lam = None
    if cfg.get("objective") == "pgdat":  # its one λ (``lam`` in run folders of earlier versions)
        lam = cfg["lam"] if "lam" in cfg else (cfg.get("lams") or [None])[0]
    return {"objective": cfg.get("objective"), "model": cfg.get("model"), "data": cfg.get("data"),
            "eps": meta.get("eps"), "seed": cfg.get("seed"), "lam": lam}


def run_folder(path) -> Path:
    """The run folder of a run or of a checkpoint folder inside it (results never go into a checkpoint)."""
    path = Path(path)
    if (path / "model.safetensors").exists() and path.parent.name == "checkpoints":
        return path.parent.parent
    return path


def make_plan(plan: EvalPlan | None = None, **settings) -> EvalPlan:
    """``plan`` with ``settings`` applied (each an :class:`EvalPlan` field), or a plan of ``settings``."""
    if plan is None:
        return EvalPlan.from_dict(settings)
    return EvalPlan.from_dict({**{f: getattr(plan, f) for f in plan.__dataclass_fields__}, **settings})


@locked(lambda run, *_, **__: run_folder(run), "oat evaluate")  # one writer per run folder
def evaluate_run(run, plan: EvalPlan | None = None, *, progress: bool = False, report: bool = True, log=print,
                 **settings) -> list[dict]:
    """Evaluate the run's newest checkpoint and merge the rows into ``RUN/results.json``.

    Also writes ``RUN/eval/<split>-per-example.csv`` (every row recomputable), the example
    images of ``report.html`` (``RUN/eval/<split>-gallery.json``, ``plan.gallery`` of them) and keeps a
    journal of finished batches under ``RUN/eval/journal/``: the same call after an
    interruption continues where it stopped and gives the same numbers.

    Rows carry their provenance (checkpoint name and weights hash, subset and seed, ε,
    attack settings) and are keyed by it: an evaluation of another checkpoint, subset or ε
    adds rows beside the earlier ones and never replaces them (see
    :mod:`oat.evaluate.provenance`).

    Args:
        run: run folder (or a checkpoint folder inside it).
        plan: what to measure (:class:`~oat.evaluate.plan.EvalPlan`; its defaults when None).
        progress: progress bar (without one, AutoAttack logs a line per finished component).
        report: rewrite ``RUN/report.md`` and ``RUN/report.html`` afterwards.
        log: where the table goes.
        **settings: :class:`EvalPlan` fields (``split="val"``, ``attacks=[...]`` …), applied on
            top of ``plan``.

    Returns:
        The new rows.
    """
    plan = make_plan(plan, **settings)
    ckpt_path = resolve_checkpoint(run)
    run = run_folder(run)
    read_results(run)  # a corrupt results.json is said now, not after the sweep
    eps = None if plan.eps is None else check_eps(plan.eps)
    split, norm, subset, seed, batch_size = plan.split, plan.norm, plan.subset, plan.seed, plan.batch_size
    check_inside(run, ckpt_path)
    device = resolve_device(plan.device) if isinstance(plan.device, str) else plan.device
    model = load_model(ckpt_path, device)
    eps = check_eps(model.checkpoint_state.get("eps", 0.0)) if eps is None else eps
    dataset = eval_dataset(model, split, plan.data_dir)
    lams, widths = resolve_lams(model, plan.lams), resolve_widths(model, plan.widths)
    sha = checkpoint_sha256(ckpt_path)
    jpath = run / "eval" / "journal" / journal_name(split=split, norm=norm, eps=eps, subset=subset, seed=seed,
                                                    batch_size=batch_size, ckpt=sha[:12])
    if not plan.resume and jpath.exists():
        jpath.unlink()
    result = sweep(model, dataset, lams=lams, widths=widths, attacks=list(plan.attacks), eps=eps,
                   batch_size=batch_size, device=device, seed=seed, subset=subset, progress=progress, norm=norm,
                   journal=Journal(jpath, checkpoint=sha, log=log), batch_lams=plan.batch_lams, log=log)
    items = [({**r, **provenance(ckpt_path, sha, subset=subset, n_split=len(dataset), seed=seed,
                                 attack=r["attack"])}, c, cl)
             for r, c, cl in per_example(result, eps=eps, split=split, slimmable=model.spec.slimmable, norm=norm)]
    rows = [_annotate(r) for r, _, _ in items]
    if model.spec.slimmable:  # OATS: FLOPs, parameters and latency of each width's slim network
        from oat.evaluate.cost import add_cost

        add_cost(rows, model, tuple(dataset.images.shape[1:]), device)
    found = []
    if plan.checks:
        log(f"sanity checks: {plan.check_subset} examples per check (ε = 0, monotone in ε, large ε, steps, "
            "gradients, determinism) …")
        found = run_checks(model, dataset, lams=lams, widths=widths, eps=eps, norm=norm, seed=seed,
                           n=plan.check_subset, device=device, rows=rows)
        found = [{**c, "split": split, "eps": eps, "norm": norm, "checkpoint": ckpt_path.name,
                  "checkpoint_sha256": sha} for c in found]
    _store(run, split, rows, found, items, result, replace=plan.replace, log=log)
    if plan.gallery:  # the example images of report.html, while the model and the split are loaded
        doc = make_gallery(model, dataset, indices=result.indices, lams=lams, widths=widths, attacks=plan.attacks,
                           eps=eps, norm=norm, seed=seed, device=device, n=plan.gallery)
        write_gallery(run, split, doc, checkpoint=ckpt_path.name, sha=sha)
    if plan.checks:
        log(check_summary(found))
    if report:
        from oat.evaluate.report import write_report

        write_report([run])
    if failed(found) and not plan.allow_failed_checks:
        raise ChecksFailed(f"{check_summary(found)}; results were written to {run / 'results.json'} "
                           "(--allow-failed-checks accepts them)")
    return rows


def _store(run: Path, split: str, rows, found, items, result, *, replace: bool, log) -> None:
    """Merge the rows, checks and per-example records into the run folder and log the table."""
    doc = merge_results(run, run_header(run), rows, found, replace=replace)
    write_per_example(run, split, items, result.indices, result.labels, replace=replace)
    log(format_rows(rows))
    kept = larger_kept(doc, rows)
    if kept:  # stored beside them, not instead: say so, since the report will show the larger n
        log(f"kept {len(kept)} earlier rows of this checkpoint and setting with a larger n "
            f"(n = {max(r['n'] for r in kept)}); reports use the largest n (--replace lets these rows supersede them)")


def eval_dataset(model, split: str, data_dir=None):
    """The split a model is evaluated on, read as its checkpoint says (or from ``data_dir``)."""
    cfg = model.checkpoint_state.get("config", {})
    data = load_data(cfg.get("data", "digits"), data_dir or cfg.get("data_dir"), val_size=cfg.get("val_size"),
                     seed=cfg.get("seed", 0))
    if model.arch.get("in_channels") != data.image_shape[0]:
        raise ConfigError(f"{data.name} images have {data.image_shape[0]} channels; the model expects "
                          f"{model.arch.get('in_channels')}")
    return data.val if split == "val" else data.test


def _annotate(row: dict) -> dict:
    """Name the implementation behind AutoAttack rows (its package version and AutoAttack version)."""
    if row["attack"] in ("autoattack", "apgd-ce"):
        row = {**row, "implementation": f"pyautoattack {package_version()}",
               "aa_version": "standard" if row["attack"] == "autoattack" else "custom: apgd-ce"}
    return row


def choose_operating_point(run, *, target_ra: float | None = None, target_sa: float | None = None,
                           attacks=EvalPlan.attacks, eps: float | None = None, norm: str = EvalPlan.norm, log=print,
                           **eval_kw) -> dict | None:
    """``--target-ra``/``--target-sa``: the (λ, width) meeting the target on the validation split.

    Evaluates the validation split first when its rows for ``attacks`` (at ``eps``) are missing
    for any (λ, width). Returns the chosen row, or None if no (λ, width) meets the target; the
    answer (with the measured numbers) goes to ``log`` as one line.
    """
    if (target_ra is None) == (target_sa is None):
        raise ConfigError("give exactly one of --target-ra and --target-sa")
    run = run_folder(run)
    if eps is not None:
        eps = check_eps(eps)
    ckpt = resolve_checkpoint(run)
    model = load_model(ckpt, "cpu")
    eps = check_eps(model.checkpoint_state.get("eps", 0.0)) if eps is None else eps
    attack = "worst" if len(set(attacks)) > 1 else list(attacks)[0]
    wanted = {(round(lam, 9), w if model.spec.slimmable else None)
              for lam in resolve_lams(model, None) for w in resolve_widths(model, None)}
    sha = checkpoint_sha256(ckpt)

    def val_rows():  # the newest checkpoint's rows only, the largest n of each
        rows, _ = current_rows(read_results(run), "val", eps=eps, norm=norm, checkpoint=sha)
        return [r for r in rows if r["attack"] == attack]

    have = {(round(r["lam"], 9), r["width"]) for r in val_rows()}
    if not wanted <= have:
        log(f"evaluating the validation split ({', '.join(attacks)}) to choose the operating point")
        evaluate_run(run, split="val", attacks=attacks, eps=eps, norm=norm, log=log, **eval_kw)
    rows = val_rows()
    row = select_operating_point(rows, target_ra=target_ra, target_sa=target_sa, attack=attack, split="val",
                                 eps=eps)
    log(describe(row, rows, target_ra=target_ra, target_sa=target_sa))
    return row


def format_rows(rows: list[dict]) -> str:
    """A plain-text table of result rows."""
    lines = [f"{'lam':>6} {'width':>6} {'attack':>10} {'SA':>7} {'RA':>7} {'n':>6}"]
    for r in rows:
        w = "-" if r["width"] is None else f"{r['width']:g}"
        lines.append(f"{r['lam']:>6g} {w:>6} {r['attack']:>10} {100 * r['sa']:>6.2f}% {100 * r['ra']:>6.2f}% "
                     f"{r['n']:>6}")
    return "\n".join(lines)
