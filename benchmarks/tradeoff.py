"""The paper's claim, measured: one OAT model against a dedicated PGD-AT model per λ.

Trains, through the library API, one OAT model on the paper's λ set and one dedicated
PGD-AT model per λ (same architecture, epochs, optimiser, batch and seeds), evaluates SA
and RA on the test split, and writes ``benchmarks/results/tradeoff-<data>.json`` (one row
per (dataset, λ, attack): OAT and dedicated means over seeds, gaps = OAT − dedicated, their
standard deviations), a Markdown table and a plot. ``--continuous`` adds OAT with the
continuous λ encoding, evaluated at λ values it never saw exactly, against dedicated models
trained there; ``--ablations`` adds single vs dual BN and every λ encoding.

Every trained model is cached in its run folder (``RUNS/<data>/seed-<s>/<name>``) with its
wall time and evaluation rows, so an interrupted benchmark picks up where it stopped.

    python benchmarks/tradeoff.py --data digits --continuous --ablations
    python benchmarks/tradeoff.py --data fashion-mnist                  # ~1 h a seed on one CPU core
    python benchmarks/tradeoff.py --data fashion-mnist --full           # paper-scale, for a GPU
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import tradeoff_stats as ts  # noqa: E402
from common import machine  # noqa: E402

import oat  # noqa: E402
from oat.conditioning import PAPER_LAMS  # noqa: E402
from oat.errors import DataError  # noqa: E402
from oat.evaluate.api import evaluate_run  # noqa: E402
from oat.evaluate.results import per_example_path, read_per_example  # noqa: E402

CONT_LAMS = (0.05, 0.15, 0.25, 0.5, 0.7)

# CPU settings, chosen so each benchmark fits its budget on 2 shared cores (see the README of
# the results). digits uses ε = 0.3 as the demo does: at its default 0.1 adversarial training
# costs this easy data no clean accuracy, so there would be no trade-off to dial.
PRESETS = {
    "digits": dict(
        model="small-cnn", model_kwargs={}, eps=0.3, epochs=30, batch_size=64, lr=0.1, train_size=None, ra_subset=None
    ),
    # Every training image (55k train + the library's 5k validation) and every test image, 3 epochs
    # at batch 32 (~5,200 steps, well past the plateau a FiLM-conditioned net starts on): one seed
    # trains and evaluates in about an hour on one core, so two seeds, one process each
    # (--seeds 0 / --seeds 1, --threads 1), take about an hour on 2 cores.
    "fashion-mnist": dict(
        model="small-cnn",
        model_kwargs={"base": 16},
        eps=0.1,
        epochs=3,
        batch_size=32,
        lr=0.05,
        train_size=None,
        ra_subset=None,
    ),
    "cifar10": dict(
        lr=0.1,
        model="resnet18",
        model_kwargs={},
        eps=8 / 255,
        epochs=10,
        batch_size=128,
        train_size=None,
        ra_subset=1000,
    ),
}
# --full: the paper's scale (a GPU's work): every training and test image, longer training.
FULL = {
    "digits": dict(epochs=60),
    "fashion-mnist": dict(model_kwargs={}, epochs=30, batch_size=128, lr=0.1, train_size=None, ra_subset=None),
    "cifar10": dict(model="resnet34", epochs=200, ra_subset=None),
}
TRAIN_SPLIT = {"digits": None, "fashion-mnist": 60000, "cifar10": 50000}

# Ablation variants (OAT on the paper's λ set): name -> TrainConfig overrides.
ABLATIONS = {
    "oat": {},  # random-orthogonal encoding, dual BN: the reference's default
    "single-bn": {"dual_bn": False},
    "one-hot": {"encoding": "one-hot"},
    "dct": {"encoding": "dct"},
    "scalar": {"encoding": "scalar"},
    "oat-continuous": {"encoding": "continuous"},
    "continuous-d16": {"encoding": "continuous", "enc_dim": 16},
}


# OAT variants beyond the paper (each a TrainConfig setting; see oat.nn.film, oat.train.sampling,
# oat.train.warm_start). "warm" starts from the same seed's dedicated λ = 0 (clean) model, "warm1"
# from its λ = 1 (robust) one, so its cost is that model's plus its own.
VARIANTS = {
    "oat": {},
    "oat-id": {"film_form": "identity"},
    "oat-id-w": {"film_form": "identity", "lam_weights": [1, 1, 1, 1, 4]},
    "oat-id-z": {"film_form": "identity", "zero_share": 0.3},
    "oat-id-zw": {"film_form": "identity", "zero_share": 0.3, "lam_weights": [1, 1, 1, 1, 4]},
    "oat-id-warm": {"film_form": "identity", "init_from": "@dedicated-lam-0"},
    "oat-id-warm-flr10": {"film_form": "identity", "init_from": "@dedicated-lam-0", "film_lr_scale": 10.0},
    "oat-id-zw-warm": {"film_form": "identity", "zero_share": 0.3, "lam_weights": [1, 1, 1, 1, 4],
                       "init_from": "@dedicated-lam-0"},
    "oat-id-warm-flr30": {"film_form": "identity", "init_from": "@dedicated-lam-0", "film_lr_scale": 30.0},
    "oat-id-warm-flr10-w": {"film_form": "identity", "init_from": "@dedicated-lam-0", "film_lr_scale": 10.0,
                            "lam_weights": [1, 1, 1, 1, 4]},
    # Warm from the robust end instead: λ = 1 starts where the dedicated robust model is.
    "oat-id-warm1-flr10": {"film_form": "identity", "init_from": "@dedicated-lam-1", "film_lr_scale": 10.0},
    "oat-id-warm1-flr10-z": {"film_form": "identity", "init_from": "@dedicated-lam-1", "film_lr_scale": 10.0,
                             "zero_share": 0.3},
}
WARM_FROM = {"@dedicated-lam-0": 0.0, "@dedicated-lam-1": 1.0}

# The two-model alternatives (oat mix), each attacked end to end as one model:
# name -> (α = 0 member folder, α = 1 member folder, oat.mix options). "robust-from-clean" is a
# PGD-AT λ = 1 model fine-tuned from the clean one (same epochs), so the two share a basin.
ALTERNATIVES = {
    "mix-probs": ("dedicated-lam-0", "dedicated-lam-1", {"combine": "probs"}),
    "mix-logits": ("dedicated-lam-0", "dedicated-lam-1", {"combine": "logits"}),
    "interp": ("dedicated-lam-0", "robust-from-clean", {"combine": "weights"}),
    "interp-bn": ("dedicated-lam-0", "robust-from-clean", {"combine": "weights", "bn": "reestimate"}),
}
ALPHAS = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0)
ROBUST_FT = ("robust-from-clean", {"objective": "pgdat", "lam": 1.0, "init_from": "@dedicated-lam-0"})


def settings(args) -> dict:
    """The resolved benchmark settings for ``args``."""
    s = {**PRESETS[args.data], **(FULL[args.data] if args.full else {})}
    for key in ("epochs", "model", "batch_size", "lr", "train_size", "ra_subset"):
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    if args.base is not None:
        s["model_kwargs"] = {"base": args.base}
    s.update(
        data=args.data,
        seeds=list(args.seeds),
        attacks=list(args.attacks),
        aa_subset=args.aa_subset,
        aa_lams=args.aa_lams,
        aa_alphas=args.aa_alphas,
        lams=list(PAPER_LAMS),
        dedicated_lams=list(args.dedicated_lams or PAPER_LAMS),
        full=args.full,
        variants=list(args.variants),
        alternatives=list(args.alternatives),
        alt_ra_subset=args.alt_ra_subset,
    )
    return s


def base_config(s: dict, data_dir, seed: int) -> dict:
    val = None
    if s["train_size"] is not None and TRAIN_SPLIT.get(s["data"]):
        # The library holds out val_size training images; holding out the rest trains on train_size.
        val = TRAIN_SPLIT[s["data"]] - s["train_size"]
    return dict(
        data=s["data"],
        data_dir=data_dir,
        val_size=val,
        model=s["model"],
        model_kwargs=s["model_kwargs"],
        eps=s["eps"],
        epochs=s["epochs"],
        batch_size=s["batch_size"],
        seed=seed,
        lr=s["lr"],
        # fp32 for every model: amp=auto may pick bf16 on a CPU where it measures faster, and a
        # comparison must not mix precisions (the authors train in fp32).
        amp="off",
    )


def run_model(folder: Path, cfg: dict, variant: str, seed: int, lam, s: dict, eval_lams, log) -> dict:
    """Train (unless cached) and evaluate one model; returns its record."""
    rec_path = folder / "bench.json"
    rec = json.loads(rec_path.read_text()) if rec_path.exists() else None
    if rec is not None and not _same_config(rec, cfg, folder):
        rec = None  # trained with other settings: train again
    if rec is None:
        log(f"train {variant} seed={seed}" + (f" λ={lam:g}" if lam is not None else "") + f" → {folder}")
        t0 = time.perf_counter()
        oat.fit(
            oat.TrainConfig.from_dict(cfg), folder, overwrite=True, progress=False, evaluate=False, log=lambda *_: None
        )
        wall = time.perf_counter() - t0
        per_ex = ts.passes_per_example(cfg["objective"], cfg.get("lam", 1.0), len(PAPER_LAMS), cfg["batch_size"],
                                       zero_share=cfg.get("zero_share"))
        rec = {
            "variant": variant,
            "seed": seed,
            "lam": lam,
            "wall_s": wall,
            "passes": per_ex * cfg["epochs"],
            "rows": [],
            "config": cfg,
        }
        rec_path.write_text(json.dumps(rec, indent=1))
        log(f"  trained in {wall:.0f} s")
    _evaluate(folder, rec, s, eval_lams, log)
    return _with_same_subset_rows(folder, rec, eval_lams)


def _evaluate(folder: Path, rec: dict, s: dict, eval_lams, log, blend: bool = False) -> None:
    """Evaluate ``folder`` at ``eval_lams`` under the plan's attacks not yet in ``rec`` (saved as it goes)."""
    rec_path = folder / "bench.json"
    for attack, subset in _eval_plan(s, blend):
        have = {(round(r["lam"], 6), r["attack"]) for r in rec["rows"]}
        todo = [v for v in eval_lams if (round(v, 6), attack) not in have and _planned(s, attack, v, blend)]
        if not todo:
            continue
        t0 = time.perf_counter()
        rows = evaluate_run(
            folder,
            split="test",
            lams=todo,
            attacks=[attack],
            subset=subset,
            report=False,
            progress=False,
            # The library's sanity checks are the evaluation's business and cost as much as the
            # benchmark's own attack on small models; the benchmark measures, it does not audit.
            checks=False,
            log=lambda *_: None,
        )
        rec["rows"] += [{k: r[k] for k in ("lam", "attack", "sa", "ra", "n")} for r in rows]
        rec_path.write_text(json.dumps(rec, indent=1))
        log(
            f"  {attack} (n={rows[0]['n']}) in {time.perf_counter() - t0:.0f} s: "
            + ", ".join(f"λ={r['lam']:g} SA {100 * r['sa']:.1f} RA {100 * r['ra']:.1f}" for r in rows)
        )


def run_blend(seed_dir: Path, name: str, seed: int, s: dict, log, report_only: bool = False) -> dict | None:
    """Blend two trained members of this seed (``oat mix``) unless cached, evaluate; None if a member is
    missing (or, with ``report_only``, if the blend is not built and evaluated yet)."""
    a, b, opts = ALTERNATIVES[name]
    members = [json.loads((seed_dir / m / "bench.json").read_text()) if (seed_dir / m / "bench.json").exists()
               else None for m in (a, b)]
    if None in members:
        return None
    folder = seed_dir / name
    cfg = {"members": [a, b], **opts, "alphas": list(ALPHAS), "member_configs": [m["config"] for m in members]}
    rec_path = folder / "bench.json"
    rec = json.loads(rec_path.read_text()) if rec_path.exists() else None
    if report_only:
        if rec is None or rec.get("config") != cfg or not rec["rows"]:
            return None
        return _with_same_subset_rows(folder, rec, ALPHAS)
    if rec is None or rec.get("config") != cfg:
        if folder.exists():
            shutil.rmtree(folder)  # the benchmark's own blend of members trained since: build again
        log(f"mix {name} seed={seed}: {a} (α = 0) and {b} (α = 1) → {folder}")
        oat.mix(seed_dir / a, seed_dir / b, folder, alphas=ALPHAS, log=lambda *_: None, **opts)
        rec = {"variant": name, "seed": seed, "lam": None, "wall_s": sum(m["wall_s"] for m in members),
               "passes": sum(m["passes"] for m in members), "rows": [], "config": cfg}
        rec_path.write_text(json.dumps(rec, indent=1))
    _evaluate(folder, rec, s, ALPHAS, log, blend=True)
    return _with_same_subset_rows(folder, rec, ALPHAS)


def _with_same_subset_rows(folder: Path, rec: dict, eval_lams) -> dict:
    """Add PGD-20 and worst-of-both on AutoAttack's examples (from the run's per-example CSV)."""
    derived = ("pgd20@aa", "worst@aa")
    rows = [r for r in rec["rows"] if r["attack"] not in derived]
    if any(r["attack"] == "autoattack" for r in rows) and per_example_path(folder, "test").exists():
        rows += ts.same_subset_rows(read_per_example(folder, "test"), eval_lams)
    rec["rows"] = rows
    return rec


# Keys earlier versions of this script stored that change nothing in training (the library's
# evaluation plan no longer lives in the training config).
_INERT_KEYS = ("eval_split",)


def _same_config(rec: dict, cfg: dict, folder: Path | None = None) -> bool:
    """Whether a cached record was trained with ``cfg`` (keys that never changed training ignored)."""
    stored = {k: v for k, v in rec.get("config", cfg).items() if k not in _INERT_KEYS}
    # A record from before amp was pinned says nothing of it: amp=auto then meant fp32 on a CPU
    # (bf16 on CUDA, which is then trained again), so its run folder's device decides.
    if "amp" not in stored and folder is not None and _trained_on(folder).startswith("cpu"):
        stored["amp"] = "off"
    return stored == cfg


def _trained_on(folder: Path) -> str:
    """The device a run folder's model was trained on ('' if unknown)."""
    try:
        return str(json.loads((folder / "config.json").read_text()).get("device", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def _cached(folder: Path, cfg: dict) -> dict | None:
    """The record of a model trained with ``cfg`` and evaluated, or None."""
    path = folder / "bench.json"
    rec = json.loads(path.read_text()) if path.exists() else None
    if rec is None or not _same_config(rec, cfg, folder) or not rec["rows"]:
        return None
    return rec


def _planned(s: dict, attack: str, value: float, blend: bool) -> bool:
    """Whether ``attack`` runs at this λ (α for a blend): AutoAttack only at ``aa_lams``/``aa_alphas``
    when given (it costs tens of PGD-20s on a CPU)."""
    points = s.get("aa_alphas" if blend else "aa_lams") if attack == "autoattack" else None
    return points is None or any(abs(value - p) < 1e-6 for p in points)


def _eval_plan(s: dict, blend: bool = False) -> list[tuple[str, int | None]]:
    """(attack, subset) pairs: SA on the whole test split, PGD-20 on ``ra_subset`` (``alt_ra_subset``
    for a blend, which costs two passes per α), AutoAttack on ``aa_subset``."""
    plan = [("clean", None)]
    ra = s.get("alt_ra_subset") or s["ra_subset"] if blend else s["ra_subset"]
    for a in s["attacks"]:
        plan.append((a, s["aa_subset"] if a == "autoattack" else ra))
    return plan


def jobs(s: dict, continuous: bool, ablations: bool) -> list[tuple]:
    """(variant, seed, λ or None, overrides, eval λs) for every model: the main comparison for every
    seed first, then the continuous comparison, then the ablations (so a partial run holds whole parts)."""

    def main(seed):
        # The paper's OAT when --variants names it (the default); a run of other variants alone
        # (e.g. one more seed of a confirmation) skips it.
        paper = [("oat", seed, None, {"objective": "oat"}, PAPER_LAMS)] if "oat" in s["variants"] else []
        return paper + [
            ("dedicated", seed, lam, {"objective": "pgdat", "lam": lam}, (lam,))
            for lam in s.get("dedicated_lams", PAPER_LAMS)  # a record from before the option: the paper's set
        ]

    def cont(seed):
        return [
            ("oat-continuous", seed, None, {"objective": "oat", **ABLATIONS["oat-continuous"]}, PAPER_LAMS + CONT_LAMS)
        ] + [("dedicated", seed, lam, {"objective": "pgdat", "lam": lam}, (lam,)) for lam in CONT_LAMS]

    def abl(seed):
        return [
            (name, seed, None, {"objective": "oat", **ov}, PAPER_LAMS)
            for name, ov in ABLATIONS.items()
            if name not in ("oat", "oat-continuous")
        ]

    def variants(seed):
        return [(name, seed, None, {"objective": "oat", **VARIANTS[name]}, PAPER_LAMS)
                for name in s["variants"] if name != "oat"]

    def robust_ft(seed):
        if not any(ALTERNATIVES[a][1] == ROBUST_FT[0] for a in s["alternatives"]):
            return []
        return [(ROBUST_FT[0], seed, None, ROBUST_FT[1], (1.0,))]

    parts = [main, robust_ft, variants] + ([cont] if continuous else []) + ([abl] if ablations else [])
    return [job for part in parts for seed in s["seeds"] for job in part(seed)]


def folder_name(variant: str, lam) -> str:
    return f"dedicated-lam-{lam:g}" if variant == "dedicated" else variant


def write_outputs(records: list[dict], s: dict, args, elapsed: float) -> None:
    """The JSON, Markdown table and plots of the records so far."""
    out, name = Path(args.out), f"tradeoff-{args.data}{args.tag}"
    out.mkdir(parents=True, exist_ok=True)
    main = ts.compare(records, args.data, "oat")
    cont = ts.compare(records, args.data, "oat-continuous")
    doc = {
        "dataset": args.data,
        "command": "python benchmarks/tradeoff.py " + " ".join(_portable_args(sys.argv[1:])),
        "settings": s,
        "elapsed_s": elapsed,
        "note": "wall times are of the machine in 'machine' (see its load average); read the ratios, which "
        "pair runs of the same seed and process; pass_ratio counts forward-backward passes and does not "
        "depend on load.",
        "machine": machine(torch.device("cpu")),
        "rows": main + cont + [r for v in s["variants"] if v != "oat" for r in ts.compare(records, args.data, v)]
        + [r for a in s["alternatives"] for r in ts.curve(records, args.data, a)],
        "curve_gaps": _curve_gaps(records, s, args.data),
        "cost": ts.cost(records, "oat", PAPER_LAMS),
        "cost_continuous": ts.cost(records, "oat-continuous", PAPER_LAMS),
        "cost_variants": {v: ts.cost(records, v, PAPER_LAMS) for v in s["variants"] + s["alternatives"]},
        "runs": [{k: r[k] for k in ("variant", "seed", "lam", "wall_s", "passes")} for r in records],
    }
    (out / f"{name}.json").write_text(json.dumps(doc, indent=1))
    md = [f"## Trade-off benchmark: {args.data}", "", f"`{doc['command']}`", "", _settings_line(s), ""]
    if main:
        md.append(ts.markdown(main, "OAT (paper λ set) vs dedicated PGD-AT"))
        if (c := doc["cost"])["per_seed"]:
            md.append(
                f"Training cost, dedicated set / OAT: wall {c['wall_ratio']:.2f}× "
                f"({c['dedicated_wall_s']:.0f} s / {c['oat_wall_s']:.0f} s), passes {c['pass_ratio']:.2f}×.\n"
            )
        ts.plot(main, out / f"{name}.png", f"{args.data}: OAT vs dedicated")
    for v in s["variants"]:
        if v != "oat" and (rows := ts.compare(records, args.data, v)):
            md.append(ts.markdown(rows, f"{v} ({VARIANTS[v]}) vs dedicated"))
    for a in s["alternatives"]:
        if rows := ts.curve(records, args.data, a):
            md.append(ts.curve_markdown(rows, f"{a}: {ALTERNATIVES[a][0]} (α = 0) and {ALTERNATIVES[a][1]} (α = 1), "
                                        f"{ALTERNATIVES[a][2]}, attacked as one model"))
    if doc["curve_gaps"]:
        md.append(ts.gaps_markdown(doc["curve_gaps"]))
    if len(s["variants"]) > 1 or s["alternatives"]:
        curves = {v: ts.compare(records, args.data, v) for v in s["variants"]}
        curves.update({a: ts.curve(records, args.data, a) for a in s["alternatives"]})
        ts.plot_curves(curves, out / f"{name}-curves.png", f"{args.data}: SA vs RA, every variant")
    if cont:
        title = "OAT-continuous vs dedicated (trained on λ ~ U(0, 1] with 1/K at 0: no λ > 0 is seen exactly)"
        md.append(ts.markdown(cont, title))
        ts.plot(cont, out / f"{name}-continuous.png", f"{args.data}: OAT-continuous vs dedicated")
    md.append(_runs_table(records))
    (out / f"{name}.md").write_text("\n".join(md))
    if args.ablations:
        _write_ablations(records, s, args, out)


def _portable_args(argv: list[str]) -> list[str]:
    """The command line without this machine's paths: ``--out``, ``--runs`` and ``--data-dir`` values
    become their last folder name (relative), and ``--report-only`` is dropped."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        key, _, val = a.partition("=")
        if key in ("--out", "--runs", "--data-dir"):
            val = val or (argv[i + 1] if i + 1 < len(argv) else "")
            skip = "=" not in a
            out.append(f"{key} {Path(val).name}" if Path(val).is_absolute() else f"{key} {val}")
        elif a != "--report-only":
            out.append(a)
    return out


def _curve_gaps(records: list[dict], s: dict, data: str) -> list[dict]:
    """Each OAT variant's curve against each alternative's: SA at the same RA (see ts.curve_gap)."""
    out = []
    for v in s["variants"]:
        for a in s["alternatives"]:
            out += ts.curve_gap(ts.compare(records, data, v), ts.curve(records, data, a), v, a)
    return out


def _runs_table(records: list[dict]) -> str:
    """Wall time (training only) and forward-backward passes per image of every trained model."""
    lines = [
        "### Training runs",
        "",
        "| model | seed | λ | wall s | passes per image, all epochs |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        lam = "–" if r["lam"] is None else f"{r['lam']:g}"
        lines.append(f"| {r['variant']} | {r['seed']} | {lam} | {r['wall_s']:.0f} | {r['passes']:g} |")
    return "\n".join(lines) + "\n"


def _write_ablations(records, s, args, out: Path) -> None:
    rows, md = [], [f"## Ablations on {args.data}", "", _settings_line(s), ""]
    for variant in ABLATIONS:
        r = ts.compare(records, args.data, variant)
        r = [x for x in r if any(abs(x["lam"] - v) < 1e-6 for v in PAPER_LAMS)]
        rows += r
        if r:
            md.append(ts.markdown(r, f"{variant} vs dedicated"))
    doc = {"dataset": args.data, "settings": s, "variants": {k: v for k, v in ABLATIONS.items()}, "rows": rows}
    (out / f"tradeoff-ablations-{args.data}.json").write_text(json.dumps(doc, indent=1))
    (out / f"tradeoff-ablations-{args.data}.md").write_text("\n".join(md))


def _settings_line(s: dict) -> str:
    return (
        f"Settings: model {s['model']} {s['model_kwargs'] or ''}, ε={s['eps']:.4g} L∞, PGD-7 training, "
        f"{s['epochs']} epoch(s), batch {s['batch_size']}, SGD lr {s['lr']:g} cosine, "
        f"train images {s['train_size'] or 'all'}, seeds {s['seeds']}; SA on the whole test split, "
        f"RA (pgd20) on {s['ra_subset'] or 'all'} test images (seeded subset)"
        + (f", the alternatives' on {s['alt_ra_subset']}" if s.get("alternatives") and s.get("alt_ra_subset") else "")
        + (f", AutoAttack on {s['aa_subset']}" + (f" at λ {s['aa_lams']}" if s.get("aa_lams") else "")
           + (f" and α {s['aa_alphas']}" if s.get("aa_alphas") else "") + "."
           if "autoattack" in s["attacks"] else ".")
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", choices=sorted(PRESETS), default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--base", type=int, default=None, help="small-cnn width (base channels)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--train-size", type=int, default=None, help="training images (default: preset)")
    p.add_argument("--ra-subset", type=int, default=None, help="test images for RA (default: preset)")
    p.add_argument("--attacks", nargs="+", default=["pgd20"])
    p.add_argument("--aa-subset", type=int, default=500, help="test images for AutoAttack")
    p.add_argument("--aa-lams", type=float, nargs="+", default=None,
                   help="λ at which AutoAttack runs, on OAT and dedicated models (default: every λ)")
    p.add_argument("--aa-alphas", type=float, nargs="+", default=None,
                   help="α at which AutoAttack runs on a blend (default: every α)")
    p.add_argument("--full", action="store_true", help="paper-scale settings (for a GPU)")
    p.add_argument("--continuous", action="store_true")
    p.add_argument("--ablations", action="store_true")
    p.add_argument("--dedicated-lams", type=float, nargs="+", default=None,
                   help="λ of the dedicated models (default: the paper's set; a subset skips the cost ratio)")
    p.add_argument("--alternatives", nargs="+", default=[], choices=sorted(ALTERNATIVES),
                   help="two-model alternatives to blend from the trained models and evaluate (oat mix)")
    p.add_argument("--alt-ra-subset", type=int, default=None,
                   help="test images for the alternatives' RA (default: --ra-subset)")
    p.add_argument("--variants", nargs="+", default=["oat"], choices=sorted(VARIANTS),
                   help="OAT variants to train; the paper's is 'oat' (default: the paper's only)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--runs", default="runs/tradeoff", help="where the trained models go")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--tag", default="", help="suffix of the output file names, e.g. -e2")
    p.add_argument("--report-only", action="store_true", help="write the outputs from the models trained so far")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    s = settings(args)
    for key, grid in (("aa_lams", PAPER_LAMS + CONT_LAMS), ("aa_alphas", ALPHAS)):
        if off := [v for v in s[key] or [] if not any(abs(v - g) < 1e-6 for g in grid)]:
            print(f"tradeoff: error: --{key.replace('_', '-')} {off} not in the evaluated set {list(grid)}",
                  file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    records = []
    try:
        for variant, seed, lam, ov, eval_lams in jobs(s, args.continuous, args.ablations):
            folder = Path(args.runs) / args.data / f"seed-{seed}" / folder_name(variant, lam)
            cfg = {**base_config(s, args.data_dir, seed), **ov}
            if cfg.get("init_from") in WARM_FROM:  # a model of this seed, trained earlier in the job list
                cfg["init_from"] = str(folder.parent / folder_name("dedicated", WARM_FROM[cfg["init_from"]]))
            if any(r["variant"] == variant and r["seed"] == seed and r["lam"] == lam for r in records):
                continue
            if args.report_only:
                rec = _cached(folder, cfg)
                if rec is not None:
                    records.append(_with_same_subset_rows(folder, rec, eval_lams))
                continue
            records.append(run_model(folder, cfg, variant, seed, lam, s, eval_lams, print))
            if not args.report_only:
                write_outputs(records, s, args, time.perf_counter() - t0)
        for seed in s["seeds"]:
            for name in s["alternatives"]:
                rec = run_blend(Path(args.runs) / args.data / f"seed-{seed}", name, seed, s, print,
                                report_only=args.report_only)
                if rec is not None:
                    records.append(rec)
                    if not args.report_only:
                        write_outputs(records, s, args, time.perf_counter() - t0)
        if args.report_only:
            write_outputs(records, s, args, time.perf_counter() - t0)
    except DataError as e:
        hint = " (Fashion-MNIST: apt-get install -y dataset-fashion-mnist, as root)" if args.data != "digits" else ""
        print(f"tradeoff: error: {e}{hint}", file=sys.stderr)
        return 2
    print((Path(args.out) / f"tradeoff-{args.data}{args.tag}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
