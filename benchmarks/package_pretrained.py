"""Make the package's folder of pretrained models from a trade-off benchmark's run directory.

For each named run of ``RUNS/<data>/seed-<S>/`` (as ``benchmarks/tradeoff.py`` trains them) it
reads the newest checkpoint, ``results.json``, ``bench.json`` and ``config.json``; checks that the
trade-off JSON's settings give exactly the run's training config (so the command recorded is the
one that trained it); and writes, per model, the weights byte for byte (the results rows keep
naming them by SHA-256), ``state.json`` stripped of optimiser and RNG state, the rows of that
checkpoint, and a manifest (``model.json``), plus ``index.json``. The same runs give the same
bytes. This script is the one way ``src/oat/pretrained/models`` is made::

    python benchmarks/package_pretrained.py --runs runs/tradeoff --data fashion-mnist --seed 0 \\
        --tradeoff-json benchmarks/results/tradeoff-fashion-mnist.json --budget full \\
        --models oat oat-id-warm-flr10 dedicated-lam-0 dedicated-lam-0.1 dedicated-lam-0.2 \\
                 dedicated-lam-0.3 dedicated-lam-0.4 dedicated-lam-1 \\
        --out src/oat/pretrained/models --replace
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import tradeoff  # noqa: E402

import oat  # noqa: E402
from oat import pretrained  # noqa: E402
from oat.checkpoint import read_state, resolve_checkpoint  # noqa: E402
from oat.errors import OatError  # noqa: E402
from oat.evaluate.results import read_results, strongest_attack  # noqa: E402

# What inference (and a later ``oat evaluate`` of a copied run) reads from a checkpoint's state.
STATE_KEYS = ("format_version", "arch", "conditioning", "epoch", "step", "finished", "config", "eps", "world_size")


class PackageError(Exception):
    """A run that cannot be packaged truthfully; said in one line."""


def _json(doc) -> bytes:
    return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PackageError(f"{path}: unreadable ({type(e).__name__})") from None


def portable_config(cfg: dict, seed_dir: Path) -> dict:
    """The training config without this machine's paths: a warm start from a run of the same seed is
    written as the benchmark writes it (``@dedicated-lam-0``), the data folder as the default."""
    cfg = {k: v for k, v in cfg.items() if k not in tradeoff._INERT_KEYS}
    cfg["data_dir"] = None
    src = cfg.get("init_from")
    if src is not None and not str(src).startswith("@"):
        if Path(src).parent.resolve() != seed_dir.resolve():
            raise PackageError(f"init_from {Path(src).name!r} is not a run of this seed's folder; cannot record it "
                               "portably")
        cfg["init_from"] = "@" + Path(src).name
    return cfg


def check_trained_by(tdoc: dict, bench: dict, cfg: dict, data: str, seed: int, name: str) -> None:
    """The trade-off JSON's settings must give exactly ``cfg`` for this run, and list the run."""
    s = tdoc.get("settings", {})
    if tdoc.get("dataset") != data or seed not in s.get("seeds", []):
        raise PackageError(f"the trade-off JSON is of {tdoc.get('dataset')} seeds {s.get('seeds')}, not {data} "
                           f"seed {seed}")
    variant, lam = bench["variant"], bench["lam"]
    if not any((r["variant"], r["seed"], r["lam"]) == (variant, seed, lam) for r in tdoc.get("runs", [])):
        raise PackageError(f"the trade-off JSON does not list run {name} ({variant}, λ {lam}, seed {seed})")
    jobs = tradeoff.jobs({"variants": [], "alternatives": [], **s}, True, True)
    job = next((j for j in jobs if j[:3] == (variant, seed, lam)), None)
    if job is None:
        raise PackageError(f"run {name}: the trade-off benchmark has no job {variant!r}")
    want = {**tradeoff.base_config(s, None, seed), **job[3], "data_dir": None}
    diff = sorted(k for k in set(want) | set(cfg) if want.get(k) != cfg.get(k))
    if diff:
        k = diff[0]
        raise PackageError(f"run {name} was not trained by the trade-off JSON's command: {k} is {cfg.get(k)!r} in "
                           f"the run, {want.get(k)!r} in the JSON's settings ({len(diff)} keys differ)")


def summary(rows: list[dict], lams, eps: float, name: str) -> list[dict]:
    """Per λ: SA on the clean rows, RA under the strongest attack measured (the largest n of each)."""
    test = [r for r in rows if r["split"] == "test" and abs(r["eps"] - eps) < 1e-9]
    attack = strongest_attack([r for r in test if r["attack"] != "clean"])
    out = []
    for lam in lams:
        at = [r for r in test if abs(r["lam"] - lam) < 1e-6]
        clean = max((r for r in at if r["attack"] == "clean"), key=lambda r: r["n"], default=None)
        adv = max((r for r in at if r["attack"] == attack), key=lambda r: r["n"], default=None)
        if clean is None or adv is None:
            raise PackageError(f"run {name} has no clean and attacked test rows at λ = {lam:g}; evaluate it first")
        out.append({"lam": lam, "sa": clean["sa"], "sa_n": clean["n"], "ra": adv["ra"], "ra_attack": attack,
                    "ra_n": adv["n"]})
    return out


def describe(cfg: dict, variant: str) -> str:
    if cfg["objective"] == "pgdat":
        lam = cfg["lams"][0]
        how = {0.0: "standard training on clean images", 1.0: "PGD adversarial training (Madry)"}.get(
            lam, "loss (1 − λ)·CE(clean) + λ·CE(PGD)")
        return f"dedicated model for λ = {lam:g}: {how}; one λ, no FiLM, one BN"
    extras = [f"{cfg['film_form']} FiLM", f"{cfg['encoding']} λ encoding", "dual BN" if cfg["dual_bn"] else "one BN"]
    if cfg.get("init_from"):
        extras.append(f"warm start from {cfg['init_from'].lstrip('@')}")
    if cfg.get("film_lr_scale", 1.0) != 1.0:
        extras.append(f"FiLM lr ×{cfg['film_lr_scale']:g}")
    if cfg.get("zero_share") is not None:
        extras.append(f"λ = 0 share {cfg['zero_share']:g}")
    if cfg.get("lam_weights"):
        extras.append(f"λ weights {cfg['lam_weights']}")
    title = "OAT as in the paper" if variant == "oat" else f"OAT variant {variant}"
    lams = ", ".join(f"{v:g}" for v in cfg["lams"])
    return f"{title}: one model for λ ∈ {{{lams}}}; " + ", ".join(extras)


def budget_line(label: str, cfg: dict, meta: dict) -> str:
    n = meta.get("data", {}).get("sizes", {}).get("train")
    return (f"{label} budget: {n:,} training images, {cfg['epochs']} epoch(s), batch {cfg['batch_size']}, "
            f"SGD lr {cfg['lr']:g} (cosine), ε = {cfg['eps']:g} L∞, PGD-{cfg['attack_steps']} in training, "
            f"seed {cfg['seed']}")


def package_run(run: Path, name: str, args, tdoc: dict) -> tuple[dict[str, bytes], dict]:
    """The files of one model and its manifest."""
    for f in ("bench.json", "config.json", "results.json"):
        if not (run / f).is_file():
            raise PackageError(f"{run} lacks {f}; is it a trade-off benchmark run?")
    bench, meta = _read(run / "bench.json"), _read(run / "config.json")
    ckpt = resolve_checkpoint(run)
    state = read_state(ckpt)
    if not state.get("finished"):
        raise PackageError(f"run {name}: its newest checkpoint {ckpt.name} is not of a finished training")
    weights = (ckpt / "model.safetensors").read_bytes()
    sha = pretrained.file_sha256(ckpt / "model.safetensors")
    cfg = portable_config(state["config"], run.parent)
    check_trained_by(tdoc, bench, portable_config(bench["config"], run.parent), args.data, args.seed, name)
    results = read_results(run)
    mine = {k: ([r for r in v if r.get("checkpoint_sha256") == sha] if isinstance(v, list) else v)
            for k, v in results.items()}
    model, arch = oat.load(ckpt), state["arch"]
    files = {"model.safetensors": weights,
             "state.json": _json({k: (cfg if k == "config" else state[k]) for k in STATE_KEYS if k in state}),
             "results.json": _json(mine)}
    doc = {
        "format": pretrained.MANIFEST_FORMAT, "format_version": pretrained.FORMAT_VERSION,
        "name": name, "kind": "dedicated" if cfg["objective"] == "pgdat" else "oat",
        "description": describe(cfg, bench["variant"]), "budget": budget_line(args.budget, cfg, meta),
        "data": cfg["data"], "image_shape": meta.get("data", {}).get("image_shape"),
        "architecture": {"name": arch["name"], "kwargs": arch.get("kwargs", {}), "in_channels": arch["in_channels"],
                         "num_classes": arch["num_classes"]},
        "params": sum(p.numel() for p in model.parameters()), "lams": list(model.spec.lams),
        "eps": state["eps"], "norm": cfg["attack_norm"],
        "command": tdoc["command"], "train_config": cfg, "train_wall_s": bench.get("wall_s"),
        "commit": meta.get("git_commit"), "oat_version": meta.get("oat_version"),
        "torch_version": meta.get("torch_version"),
        "source": {"run": f"{args.data}/seed-{args.seed}/{name}"}, "checkpoint": ckpt.name,
        "results": summary(mine["rows"], model.spec.lams, state["eps"], name),
        "files": {f: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for f, b in files.items()},
    }
    return files, doc


def check_portable(doc, where: str) -> None:
    """No absolute path anywhere in what is shipped."""
    if isinstance(doc, dict):
        for v in doc.values():
            check_portable(v, where)
    elif isinstance(doc, list):
        for v in doc:
            check_portable(v, where)
    elif isinstance(doc, str) and (doc.startswith(("/", "~")) or " /" in doc or ":\\" in doc):
        raise PackageError(f"{where} would record a machine path ({doc[:60]!r}); refused")


def _replaceable(out: Path) -> bool:
    """``out`` holds a package folder and nothing else (an index and the model folders it names)."""
    try:
        known = set(pretrained.names(out)) | {pretrained.INDEX}
    except OatError:
        return False
    return all(p.name in known for p in out.iterdir())


def write_package(out: Path, models: list[tuple[str, dict[str, bytes], dict]], index: dict, replace: bool) -> None:
    """Write the folder under a hidden name, then swap it in; an existing one only with ``replace``."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not replace:
            raise PackageError(f"{out} exists; pass --replace to replace a package folder")
        if not _replaceable(out):
            raise PackageError(f"--replace: {out} holds files besides a package of pretrained models; nothing changed")
    out.parent.mkdir(parents=True, exist_ok=True)
    mask = os.umask(0)
    os.umask(mask)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        for name, files, doc in models:
            (tmp / name).mkdir(mode=0o777 & ~mask)
            for fname, data in {**files, pretrained.MANIFEST: _json(doc)}.items():
                (tmp / name / fname).write_bytes(data)
        (tmp / pretrained.INDEX).write_bytes(_json(index))
        os.chmod(tmp, 0o777 & ~mask)
        aside = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists():
            os.rename(out, aside)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def self_check(out: Path, models: list[tuple[str, Path, dict]]) -> None:
    """Each packaged model loads through ``oat.pretrained`` and gives its run's logits exactly."""
    gen = torch.Generator().manual_seed(0)
    for name, run, doc in models:
        a, b = oat.load(run), pretrained.load_pretrained(name, root=out)
        x = torch.rand(4, *doc["image_shape"], generator=gen)
        with torch.no_grad():
            for lam in a.spec.lams:
                if not torch.equal(a(x, lam), b(x, lam)):
                    raise PackageError(f"packaged {name} does not reproduce its run's logits at λ = {lam:g}")


def _portable_path(v: str) -> str:
    p = Path(v)
    if not p.is_absolute():
        return v
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return p.name


def made_by(args) -> str:
    return " ".join(["python benchmarks/package_pretrained.py", "--runs", _portable_path(args.runs), "--data",
                     args.data, "--seed", str(args.seed), "--tradeoff-json", _portable_path(args.tradeoff_json),
                     "--budget", shlex.quote(args.budget), "--models", *args.models, "--out",
                     _portable_path(args.out)])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", required=True, help="the trade-off benchmark's --runs folder")
    p.add_argument("--data", default="fashion-mnist", help="the data set's folder under RUNS")
    p.add_argument("--seed", type=int, default=0, help="the seed's folder under RUNS/DATA")
    p.add_argument("--models", nargs="+", required=True, help="run folders to package (oat, dedicated-lam-0, …)")
    p.add_argument("--tradeoff-json", required=True, help="the benchmark's JSON whose command trained the runs")
    p.add_argument("--budget", required=True, help="what the training budget was, said in every manifest "
                   "(e.g. 'screening' or 'full')")
    p.add_argument("--out", default="src/oat/pretrained/models", help="the package folder to write")
    p.add_argument("--replace", action="store_true", help="replace an existing package folder")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    seed_dir = Path(args.runs) / args.data / f"seed-{args.seed}"
    try:
        if len(set(args.models)) != len(args.models) or not all(pretrained._NAME.fullmatch(m) for m in args.models):
            raise PackageError(f"--models must be distinct folder names; got {' '.join(args.models)}")
        tdoc = _read(Path(args.tradeoff_json))
        if not isinstance(tdoc.get("command"), str):
            raise PackageError(f"{args.tradeoff_json} records no command; is it a trade-off benchmark JSON?")
        models = [(name, *package_run(seed_dir / name, name, args, tdoc)) for name in args.models]
        index = {"format": pretrained.INDEX_FORMAT, "format_version": pretrained.FORMAT_VERSION,
                 "made_by": made_by(args), "budget": args.budget, "models": list(args.models)}
        for name, files, doc in models:
            check_portable(doc, f"{name}/{pretrained.MANIFEST}")
            for fname in ("state.json", "results.json"):
                check_portable(json.loads(files[fname]), f"{name}/{fname}")
        check_portable(index, pretrained.INDEX)
        write_package(Path(args.out), models, index, args.replace)
        self_check(Path(args.out), [(name, seed_dir / name, doc) for name, _, doc in models])
    except (PackageError, OatError) as e:
        print(f"package_pretrained: error: {e}", file=sys.stderr)
        return 2
    total = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    print(f"{len(models)} models → {args.out} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
