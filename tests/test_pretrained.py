"""The pretrained models shipped in the package: listed, loaded as runs load (files verified first),
as accurate as their manifests say, refused when altered, copied to a run folder the other
commands take, and made by ``benchmarks/package_pretrained.py`` exactly as shipped."""

import hashlib
import json
import re
import shutil
from importlib import resources
from pathlib import Path

import pytest
import torch

import oat
from oat import pretrained
from oat.cli.main import main
from oat.errors import CheckpointError, ConfigError, DataError, RunFolderError
from oat.models.base import ConditionedNet
from oat.rundir import is_run

SHIPPED = ["oat", "oat-id-warm-flr10", "dedicated-lam-0", "dedicated-lam-0.1", "dedicated-lam-0.2",
           "dedicated-lam-0.3", "dedicated-lam-0.4", "dedicated-lam-1"]
NAMES = pretrained.names()
ROOT = pretrained.default_root()


def _strings(doc):
    if isinstance(doc, dict):
        for v in doc.values():
            yield from _strings(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _strings(v)
    elif isinstance(doc, str):
        yield doc


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def _package_root(monkeypatch):
    monkeypatch.delenv(pretrained.ENV, raising=False)


@pytest.fixture(scope="module")
def fashion_test():
    from oat.data import load_data

    try:
        return load_data("fashion-mnist").test
    except DataError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


# --------------------------------------------------------------------------- what is shipped
def test_the_package_ships_paper_oat_the_best_variant_and_six_dedicated_models_in_under_2_mb():
    assert NAMES == SHIPPED
    kinds = {d["name"]: (d["kind"], d["lams"]) for d in pretrained.list_pretrained()}
    assert kinds["oat"][0] == kinds["oat-id-warm-flr10"][0] == "oat"
    assert kinds["oat"][1] == list(oat.PAPER_LAMS)
    for lam in oat.PAPER_LAMS:
        assert kinds[f"dedicated-lam-{lam:g}"] == ("dedicated", [lam])
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    assert total < 2_000_000, total


def test_every_shipped_file_is_package_data_reachable_through_importlib_resources():
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    repo = Path(__file__).resolve().parents[1]
    here = resources.files("oat.pretrained") / "models"
    on_disk = {p.relative_to(repo / "src" / "oat").as_posix() for p in ROOT.rglob("*") if p.is_file()}
    for rel in on_disk:
        assert here.joinpath(*Path(rel).parts[2:]).is_file(), rel
    dist = Distribution()
    apply_configuration(dist, repo / "pyproject.toml")
    assert "oat.pretrained" in dist.packages and not any(p.startswith("oat.pretrained.models") for p in dist.packages)
    build_py = dist.get_command_obj("build_py")
    build_py.ensure_finalized()
    build_py.manifest_files = {}
    wheel = {Path(f).relative_to(repo / "src" / "oat").as_posix()
             for f in build_py.find_data_files("oat", str(repo / "src" / "oat"))}
    assert on_disk <= wheel, sorted(on_disk - wheel)


@pytest.mark.parametrize("name", NAMES)
def test_the_manifest_says_truthfully_how_the_model_was_made_and_names_no_machine_path(name):
    doc = pretrained.manifest(name)
    assert doc["command"].startswith("python benchmarks/tradeoff.py ") and "--data fashion-mnist" in doc["command"]
    cfg = doc["train_config"]
    n_train = 60000 - cfg["val_size"]
    assert f"{n_train:,} training images, {cfg['epochs']} epoch(s)" in doc["budget"]
    assert re.fullmatch(r"[0-9a-f]{40}", doc["commit"])
    assert [r["lam"] for r in doc["results"]] == doc["lams"] == list(pretrained.load_pretrained(name).spec.lams)
    for f in pretrained.FILES:
        data = (ROOT / name / f).read_bytes()
        assert doc["files"][f] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    rows = json.loads((ROOT / name / "results.json").read_text())["rows"]
    assert rows and {r["checkpoint_sha256"] for r in rows} == {doc["files"]["model.safetensors"]["sha256"]}
    texts = [doc, json.loads((ROOT / name / "state.json").read_text()), {"rows": rows},
             json.loads((ROOT / pretrained.INDEX).read_text())]
    for s in (s for t in texts for s in _strings(t)):
        assert not s.startswith(("/", "~")) and "/work" not in s and "/home" not in s, s


# --------------------------------------------------------------------------- loading
@pytest.mark.parametrize("name", NAMES)
def test_every_model_loads_as_a_run_does_and_gives_finite_logits(name):
    model = oat.load(f"pretrained:{name}")
    assert isinstance(model, ConditionedNet) and not model.training
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for lam in model.spec.lams:
            logits = model.at(lam)(x)
            assert logits.shape == (6, 10) and torch.isfinite(logits).all()
            assert torch.allclose(logits, model(x, lam))


@pytest.mark.parametrize("name", NAMES)
def test_clean_accuracy_on_real_fashion_mnist_agrees_with_the_manifest(name, fashion_test):
    model = oat.load(f"pretrained:{name}")
    n = 500  # the first test images; the manifest's SA is on all 10,000 (3 σ of a 500-image mean ≈ 6 points)
    x, y = fashion_test.images[:n].float() / 255, fashion_test.labels[:n]
    with torch.no_grad():
        for r in pretrained.manifest(name)["results"]:
            acc = (model.at(r["lam"])(x).argmax(1) == y).float().mean().item()
            assert acc == pytest.approx(r["sa"], abs=0.065), (name, r["lam"], acc, r["sa"])
            assert r["ra"] < r["sa"]


def test_the_oat_models_knob_moves_along_the_trade_off():
    for name in ("oat", "oat-id-warm-flr10"):
        res = {r["lam"]: r for r in pretrained.manifest(name)["results"]}
        assert res[1.0]["ra"] > res[0.0]["ra"] + 0.05, name  # λ = 1 is the robust end


def test_a_tampered_or_incomplete_copy_is_refused_in_one_line(tmp_path, monkeypatch):
    shipped = _snapshot(ROOT)
    root = tmp_path / "models"
    shutil.copytree(ROOT, root)
    weights = root / "oat" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the SHA-256") as e:
        pretrained.load_pretrained("oat", root=root)
    assert "\n" not in str(e.value)
    monkeypatch.setenv(pretrained.ENV, str(root))
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        oat.load("pretrained:oat")
    assert oat.load("pretrained:dedicated-lam-1").spec.lams == (1.0,)  # the untouched ones still load
    (root / "dedicated-lam-1" / "state.json").unlink()
    with pytest.raises(CheckpointError, match="state.json is missing"):
        oat.load("pretrained:dedicated-lam-1")
    (root / "dedicated-lam-0" / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        oat.load("pretrained:dedicated-lam-0")
    assert _snapshot(ROOT) == shipped  # the shipped files were only read


@pytest.mark.parametrize("name", ["nope", "../oat", "oat/../oat", ""])
def test_an_unknown_name_is_refused_with_the_available_ones(name):
    with pytest.raises(ConfigError) as e:
        oat.load(f"pretrained:{name}")
    assert "unknown pretrained model" in str(e.value) and all(n in str(e.value) for n in NAMES)


def test_a_path_that_looks_like_a_pretrained_name_is_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint or run folder"):
        oat.load(Path("pretrained:oat"))


# --------------------------------------------------------------------------- command line
def test_oat_pretrained_lists_name_kind_params_size_and_sa_ra(capsys):
    assert main(["pretrained"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("#") and lines[-1].startswith("#") and "budget" in lines[-1]
    body = lines[1:-1]
    assert [ln.split()[0] for ln in body] == NAMES
    for ln, doc in zip(body, pretrained.list_pretrained()):
        assert ("OAT (6 λ)" if doc["kind"] == "oat" else f"dedicated λ={doc['lams'][0]:g}") in ln
        assert f"{doc['params'] / 1e3:.1f}k" in ln and " kB" in ln
        for r in doc["results"]:
            assert f"{r['lam']:g}: {100 * r['sa']:.1f}/{100 * r['ra']:.1f}" in ln


def test_oat_pretrained_name_shows_its_manifest_and_command(capsys):
    assert main(["pretrained", "oat-id-warm-flr10"]) == 0
    out = capsys.readouterr().out
    doc = pretrained.manifest("oat-id-warm-flr10")
    for text in (doc["command"], doc["budget"], doc["commit"], doc["files"]["model.safetensors"]["sha256"],
                 'oat.load("pretrained:oat-id-warm-flr10")', "warm start from dedicated-lam-0"):
        assert text in out
    assert main(["pretrained", "oat", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == pretrained.manifest("oat")


@pytest.mark.parametrize("argv, message", [
    (["pretrained", "nope"], "unknown pretrained model 'nope'; available: oat, "),
    (["pretrained", "--copy-to", "somewhere"], "need a model NAME"),
    (["pretrained", "oat", "--json", "--copy-to", "somewhere"], "not both"),
    (["evaluate", "pretrained:oat"], "`oat pretrained oat --copy-to RUN` makes a run folder"),
])
def test_oat_pretrained_bad_input_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("oat: error:") and message in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_copy_to_writes_a_run_that_evaluate_report_and_export_take(tmp_path, capsys):
    run = tmp_path / "runs" / "robust"
    assert main(["pretrained", "dedicated-lam-1", "--copy-to", str(run)]) == 0
    assert is_run(run) and (run / "checkpoints" / "latest").read_text().strip() == "epoch-0002"
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(oat.load(run)(x, 1.0), oat.load("pretrained:dedicated-lam-1")(x, 1.0))
    assert main(["report", str(run)]) == 0 and "pgd20" in (run / "report.md").read_text()
    assert main(["export", str(run), "--lam", "1", "--format", "safetensors", "--out", str(tmp_path / "e.st")]) == 0
    capsys.readouterr()
    before = _snapshot(run)
    assert main(["pretrained", "oat", "--copy-to", str(run)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert _snapshot(run) == before  # never over an existing run
    (tmp_path / "empty").mkdir()
    assert pretrained.copy_to("oat", tmp_path / "empty", log=lambda *_: None) == tmp_path / "empty"
    with pytest.raises(RunFolderError):
        pretrained.copy_to("oat", tmp_path / "e.st", log=lambda *_: None)  # a file
    assert not list(tmp_path.rglob(".*.tmp"))


def test_a_copied_run_evaluates_to_its_recorded_clean_accuracy(tmp_path, fashion_test):
    run = pretrained.copy_to("dedicated-lam-0", tmp_path / "clean", log=lambda *_: None)
    rows = oat.evaluate_run(run, split="test", attacks=["clean"], subset=300, checks=False, report=False,
                            log=lambda *_: None)
    sa = pretrained.manifest("dedicated-lam-0")["results"][0]["sa"]
    assert rows[0]["n"] == 300 and rows[0]["sa"] == pytest.approx(sa, abs=0.08)
    doc = json.loads((run / "results.json").read_text())
    assert len(doc["rows"]) > len(json.loads((ROOT / "dedicated-lam-0" / "results.json").read_text())["rows"])
