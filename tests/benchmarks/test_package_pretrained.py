"""benchmarks/package_pretrained.py: trade-off runs → the package's folder of pretrained models.

The runs are rebuilt from the shipped package itself (each model's run folder, ``bench.json`` and
``config.json`` as the trade-off benchmark writes them, and a trade-off JSON with the settings its
manifest records), so the script must give back the shipped files byte for byte: the package is
what the script makes, and nothing else made it.
"""

import json
import sys
from pathlib import Path

import pytest

from oat import pretrained

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import package_pretrained as pp  # noqa: E402
import tradeoff  # noqa: E402

ROOT = pretrained.default_root()


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _job(settings: dict, doc: dict, seed: int) -> tuple:
    variant = "dedicated" if doc["kind"] == "dedicated" else doc["name"]
    lam = doc["lams"][0] if variant == "dedicated" else None
    return next(j for j in tradeoff.jobs(settings, True, True) if j[:3] == (variant, seed, lam))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A trade-off runs folder and JSON holding the shipped models, as the benchmark leaves them."""
    tmp = tmp_path_factory.mktemp("tradeoff")
    docs = pretrained.list_pretrained()
    cfg, seed = docs[0]["train_config"], docs[0]["train_config"]["seed"]
    seed_dir = tmp / "runs" / docs[0]["data"] / f"seed-{seed}"
    settings = {"data": docs[0]["data"], "seeds": [seed], "train_size": 60000 - cfg["val_size"], "alternatives": [],
                **{k: cfg[k] for k in ("model", "model_kwargs", "eps", "epochs", "batch_size", "lr")},
                "variants": [d["name"] for d in docs if d["kind"] == "oat"]}
    tdoc = {"dataset": docs[0]["data"], "command": docs[0]["command"], "settings": settings, "runs": []}
    for doc in docs:
        run = pretrained.copy_to(doc["name"], seed_dir / doc["name"], log=lambda *_: None)
        variant, _, lam, overrides, _ = _job(settings, doc, seed)
        bench_cfg = {**tradeoff.base_config(settings, None, seed), **overrides}
        if bench_cfg.get("init_from") in tradeoff.WARM_FROM:  # an absolute path, as the benchmark records it
            bench_cfg["init_from"] = str(seed_dir / tradeoff.folder_name("dedicated", tradeoff.WARM_FROM[
                bench_cfg["init_from"]]))
        state = json.loads((run / "config.json").read_text())
        (run / "bench.json").write_text(json.dumps({"variant": variant, "seed": seed, "lam": lam,
                                                    "wall_s": doc["train_wall_s"], "rows": [], "config": bench_cfg}))
        (run / "config.json").write_text(json.dumps({
            "config": state["config"], "eps": state["eps"], "git_commit": doc["commit"],
            "oat_version": doc["oat_version"], "torch_version": doc["torch_version"],
            "data": {"sizes": {"train": settings["train_size"]}, "image_shape": doc["image_shape"]}}))
        tdoc["runs"].append({"variant": variant, "seed": seed, "lam": lam})
    tjson = tmp / "tradeoff.json"
    tjson.write_text(json.dumps(tdoc))
    budget = json.loads((ROOT / pretrained.INDEX).read_text())["budget"]
    argv = ["--runs", str(tmp / "runs"), "--data", docs[0]["data"], "--seed", str(seed), "--tradeoff-json",
            str(tjson), "--budget", budget, "--models", *pretrained.names()]
    return tmp, argv, tdoc


def _without_made_by(files: dict) -> dict:
    index = json.loads(files[pretrained.INDEX])
    index.pop("made_by")
    return {**files, pretrained.INDEX: index}


def test_the_script_gives_back_the_shipped_package_byte_for_byte(runs, capsys):
    tmp, argv, _ = runs
    out = tmp / "out-1"
    assert pp.main([*argv, "--out", str(out)]) == 0
    assert f"{len(pretrained.names())} models" in capsys.readouterr().out
    assert _without_made_by(_files(out)) == _without_made_by(_files(ROOT))
    made_by = json.loads((out / pretrained.INDEX).read_text())["made_by"]
    assert made_by.startswith("python benchmarks/package_pretrained.py --runs runs ") and str(tmp) not in made_by


def test_an_existing_package_is_replaced_only_when_asked_and_only_if_it_is_one(runs, capsys):
    tmp, argv, _ = runs
    out = tmp / "out-2"
    assert pp.main([*argv, "--out", str(out)]) == 0
    first = _files(out)
    assert pp.main([*argv, "--out", str(out)]) == 2
    assert "pass --replace" in capsys.readouterr().err
    assert pp.main([*argv, "--out", str(out), "--replace"]) == 0
    assert _files(out) == first  # deterministic
    (out / "notes.txt").write_text("mine")
    assert pp.main([*argv, "--out", str(out), "--replace"]) == 2
    assert "holds files besides" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"
    assert not list(tmp.glob(".out-2*"))


@pytest.mark.parametrize("damage, message", [
    (lambda t: t["settings"].update(epochs=t["settings"]["epochs"] + 1), "epochs is"),
    (lambda t: t["settings"].update(seeds=[7]), "not fashion-mnist seed 0"),
    (lambda t: t.update(runs=t["runs"][1:]), "does not list run oat "),
    (lambda t: t.pop("command"), "records no command"),
])
def test_a_trade_off_json_that_did_not_train_the_runs_is_refused(runs, damage, message, capsys):
    tmp, argv, tdoc = runs
    bad = json.loads(json.dumps(tdoc))
    damage(bad)
    (tmp / "bad.json").write_text(json.dumps(bad))
    argv = [*argv]
    argv[argv.index("--tradeoff-json") + 1] = str(tmp / "bad.json")
    assert pp.main([*argv, "--out", str(tmp / "never")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("package_pretrained: error:") and message in err and err.count("\n") == 1
    assert not (tmp / "never").exists()


def test_a_machine_path_is_never_shipped():
    with pytest.raises(pp.PackageError, match="machine path"):
        pp.check_portable({"train_config": {"data_dir": "/srv/data"}}, "x/model.json")
    with pytest.raises(pp.PackageError, match="not a run of this seed"):
        pp.portable_config({"init_from": "/elsewhere/dedicated-lam-0", "data_dir": None}, Path("/runs/fm/seed-0"))
    assert pp.portable_config({"init_from": "/runs/fm/seed-0/dedicated-lam-0", "data_dir": "/d"},
                              Path("/runs/fm/seed-0")) == {"init_from": "@dedicated-lam-0", "data_dir": None}
