"""Nothing lost, nothing mislabelled: --overwrite, the run lock, checkpoint paths and schema,
one-line errors, portability and progress lines. Folders that must not change are hashed
before and after (``tree_hash``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import oat
from oat.cli.main import main
from test_bad_input import tree_hash, write_mnist

TRAIN = ["--no-eval", "--no-progress", "--epochs", "1", "attack_steps=0", "val_size=1000"]
EVAL = ["--no-progress", "--subset", "10", "--attacks", "fgsm", "--no-checks"]
SRC = str(Path(oat.__file__).resolve().parents[1])  # subprocesses run the oat under test


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("safety") / "run"
    assert main(["train", "--out", str(run), *TRAIN]) == 0
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A private copy of the trained run, free to damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def ckpt_of(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def refused(capsys, argv, *folders) -> str:
    """Run ``oat argv`` in-process: one ``oat: error:`` line, exit 2, the folders unchanged."""
    before = tree_hash(*folders)
    capsys.readouterr()
    code = main(argv)
    line = one_line(capsys)
    assert code == 2 and line.startswith("oat: error:"), (code, line)
    assert tree_hash(*folders) == before
    return line


# --------------------------------------------------------------------------- --overwrite
def test_new_run_has_a_marker(trained):
    doc = json.loads((trained / "oat-run.json").read_text())
    assert doc["format"] == "oat-run" and doc["format_version"] == 1
    assert not (trained / ".oat.lock").exists()  # the lock file goes with the lock


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    p = tmp_path / "P"
    (p / "src").mkdir(parents=True)
    (p / "config.json").write_text("{}")
    (p / "thesis.tex").write_text("keep")
    line = refused(capsys, ["train", "--out", str(p), "--overwrite", *TRAIN], tmp_path)
    assert "only an oat run" in line and (p / "thesis.tex").read_text() == "keep"


def test_overwrite_refuses_a_non_empty_folder_without_oat_files(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep")
    refused(capsys, ["train", "--out", str(tmp_path), "--overwrite", *TRAIN], tmp_path)


@pytest.mark.parametrize("bad", ["lr=.nan", "attack_norm=l7", "eval_attacks=[foo]", "model_kwargs={evil: 1}",
                                 "enc_dim=1000000000", "momentum=.inf"])
def test_overwrite_with_a_bad_value_keeps_the_old_run(run, capsys, bad):
    line = refused(capsys, ["train", "--out", str(run), "--overwrite", *TRAIN, bad], run)
    assert "checkpoint is kept" not in line
    assert not list(run.parent.glob(".run.oat-replaced-*"))


def test_overwrite_refuses_the_current_folder_and_its_parents(run, capsys, monkeypatch):
    monkeypatch.chdir(run)
    assert "current folder" in refused(capsys, ["train", "--out", ".", "--overwrite", *TRAIN], run)
    monkeypatch.chdir(run / "checkpoints")
    assert "current folder" in refused(capsys, ["train", "--out", "..", "--overwrite", *TRAIN], run)


def test_failed_overwrite_puts_the_old_run_back(run, capsys, monkeypatch):
    import oat.train.runner as runner

    def boom(*a, **kw):
        raise RuntimeError("boom before the first checkpoint")

    monkeypatch.setattr(runner, "fit", boom)
    before = tree_hash(run)
    assert main(["train", "--out", str(run), "--overwrite", *TRAIN]) != 0
    captured = capsys.readouterr()
    assert "old run is back" in captured.out
    assert tree_hash(run) == before
    assert not list(run.parent.glob(".run.oat-replaced-*"))


def test_diverging_overwrite_says_no_checkpoint_and_restores(run, capsys):
    before = tree_hash(run)
    assert main(["train", "--out", str(run), "--overwrite", *TRAIN, "lr=1.0e+30"]) == 2
    captured = capsys.readouterr()
    assert "no checkpoint was written" in captured.err and "checkpoint is kept" not in captured.err
    assert "old run is back" in captured.out and tree_hash(run) == before


def test_old_run_is_deleted_only_after_the_first_checkpoint(run):
    from oat.train.config import TrainConfig
    from oat.train.runner import train

    (run / "old-result.txt").write_text("old")
    seen = []

    def hook(state, model):  # during the first epoch: the old run is still set aside, whole
        aside = list(run.parent.glob(".run.oat-replaced-*"))
        seen.append(len(aside) == 1 and (aside[0] / "old-result.txt").exists())

    cfg = TrainConfig.from_dict({"epochs": 1, "attack_steps": 0, "val_size": 1000})
    train(cfg, run, overwrite=True, progress=False, log=lambda *_: None, step_hook=hook)
    assert seen and all(seen)
    assert not list(run.parent.glob(".run.oat-replaced-*"))
    assert not (run / "old-result.txt").exists() and (run / "oat-run.json").exists()


def test_run_from_before_the_marker_is_still_a_run(run, capsys):
    (run / "oat-run.json").unlink()
    (run / "stale.txt").write_text("old")
    assert main(["train", "--out", str(run), "--overwrite", *TRAIN]) == 0
    assert not (run / "stale.txt").exists() and (run / "oat-run.json").exists()


def test_oat_files_without_a_run_are_not_written_over(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"mine": 1}')
    assert "no recognisable run" in refused(capsys, ["train", "--out", str(tmp_path), *TRAIN], tmp_path)


# --------------------------------------------------------------------------- run lock
HOLD = textwrap.dedent("""
    import sys
    from oat.runlock import run_lock
    with run_lock(sys.argv[1], "oat train"):
        print("held", flush=True)
        sys.stdin.read()
""")


@pytest.fixture
def holder(run):
    """Another process holding the run's lock until its stdin closes."""
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.stdin.close()
    proc.wait(timeout=60)


def test_second_writer_is_refused_naming_the_holder(run, holder, capsys):
    for argv in (["evaluate", str(run), *EVAL], ["train", "--out", str(run), "--resume", *TRAIN],
                 ["train", "--out", str(run), "--overwrite", *TRAIN], ["report", str(run)]):
        if argv[0] == "report":
            (run / "results.json").write_text('{"rows": []}')
        line = refused(capsys, argv, run)
        assert f"pid {holder.pid}" in line and "oat train" in line


def test_lock_is_released_when_the_holder_dies(run):
    from oat.runlock import run_lock

    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    proc.kill()  # no cleanup: the OS drops the flock
    proc.wait(timeout=60)
    with run_lock(run, "test"):
        assert f"{os.getpid()} test" in (run / ".oat.lock").read_text()
    assert not (run / ".oat.lock").exists()


def test_lock_conflicts_within_one_process_but_is_reentrant(run):
    import fcntl

    from oat.errors import OatError
    from oat.runlock import LOCK_NAME, RunLockedError, run_lock

    with run_lock(run, "outer"), run_lock(run, "inner"):  # train → evaluate_run: the same holder
        fd = os.open(run / LOCK_NAME, os.O_RDWR)
        with pytest.raises(BlockingIOError):  # a second open file description conflicts
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    assert not (run / LOCK_NAME).exists()
    assert issubclass(RunLockedError, OatError)  # the CLI's one line and exit 2


# --------------------------------------------------------------------------- checkpoint paths and schema
def test_latest_symlink_out_of_the_run_is_refused_without_echoing(run, tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-LINE-1\nSECRET-LINE-2\n")
    latest = run / "checkpoints" / "latest"
    latest.unlink()
    latest.symlink_to(secret)
    line = refused(capsys, ["evaluate", str(run), *EVAL], run, tmp_path)
    assert "SECRET" not in line and "outside" in line


@pytest.mark.parametrize("content", ["../../elsewhere\n", "..\n", ".epoch-0001.tmp\n", "x" * 5000,
                                     "SECRET-LINE\nmore\n"])
def test_latest_naming_no_checkpoint_is_refused_without_echoing(run, capsys, content):
    (run / "checkpoints" / "latest").write_text(content)
    line = refused(capsys, ["evaluate", str(run), *EVAL], run)
    assert "SECRET" not in line and "xxxx" not in line and len(line) < 300


def test_checkpoint_folder_symlinked_outside_is_refused(run, tmp_path, capsys):
    ckpt = ckpt_of(run)
    moved = Path(shutil.move(str(ckpt), str(tmp_path / "elsewhere")))
    ckpt.symlink_to(moved, target_is_directory=True)
    assert "outside" in refused(capsys, ["evaluate", str(run), *EVAL], run, tmp_path)


def _edit_state(run: Path, edit) -> None:
    f = ckpt_of(run) / "state.json"
    doc = json.loads(f.read_text())
    edit(doc)
    f.write_text(json.dumps(doc))


@pytest.mark.parametrize("edit,words", [
    (lambda d: d.update(format_version="1"), "format_version"),
    (lambda d: d["conditioning"].update(lams=["0", "1"]), "λ set"),
    (lambda d: d.update(epoch="two"), "epoch"),
    (lambda d: d["arch"].update(in_channels=None), "in_channels"),
    (lambda d: d["rng"].update(torch=[1, 2, 3]), "RNG"),
    (lambda d: d["rng"].update(numpy="MT"), "RNG"),
    (lambda d: d.update(partial={"loss": "low"}), "partial"),
])
def test_state_json_violations_are_one_line(run, capsys, edit, words):
    _edit_state(run, edit)
    assert words in refused(capsys, ["train", "--out", str(run), "--resume", *TRAIN], run)
    assert words in refused(capsys, ["evaluate", str(run), *EVAL], run)


@pytest.mark.parametrize("groups", ["x", [1, 2], None])
def test_malformed_optimizer_state_is_one_line_on_resume(run, capsys, groups):
    _edit_state(run, lambda d: d["optimizer"].update(param_groups=groups))
    assert "optimiser" in refused(capsys, ["train", "--out", str(run), "--resume", *TRAIN], run)


def test_encoding_table_rows_must_match_the_lam_set(run, capsys):
    from safetensors.torch import load_file, save_file

    f = ckpt_of(run) / "model.safetensors"
    tensors = load_file(str(f))
    tensors["lam_table"] = tensors["lam_table"][:-1].contiguous()
    save_file(tensors, str(f))
    assert "encoding table" in refused(capsys, ["evaluate", str(run), *EVAL], run)


# --------------------------------------------------------------------------- internal errors → one line
@pytest.mark.parametrize("argv", [["model_kwargs={evil: 1}"], ["--device", "foo"], ["--seed", "-1"],
                                  ["enc_dim=1000000000"], ["lr=.nan"]])
def test_bad_train_values_are_one_line(tmp_path, capsys, argv):
    refused(capsys, ["train", "--out", str(tmp_path / "o"), *TRAIN, *argv], tmp_path)
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it(tmp_path, run, capsys):
    assert "CUDA" in refused(capsys, ["train", "--out", str(tmp_path / "o"), *TRAIN, "--device", "cuda"], tmp_path)
    assert "CUDA" in refused(capsys, ["evaluate", str(run), *EVAL, "--device", "cuda"], run)


@pytest.mark.parametrize("argv", [["--batch-size", "0"], ["--check-subset", "0"], ["--seed", "-1"]])
def test_bad_evaluate_numbers_refused_before_any_sweep(run, capsys, monkeypatch, argv):
    import oat.evaluate.api as api

    monkeypatch.setattr(api, "sweep", lambda *a, **k: pytest.fail("the sweep ran"))
    refused(capsys, ["evaluate", str(run), "--no-progress", "--subset", "10", *argv], run)


def test_corrupt_results_json_is_said_before_the_sweep(run, capsys, monkeypatch):
    import oat.evaluate.api as api

    (run / "results.json").write_text('{"rows": [{"lam": 0')
    monkeypatch.setattr(api, "sweep", lambda *a, **k: pytest.fail("the sweep ran"))
    assert "results.json" in refused(capsys, ["evaluate", str(run), *EVAL], run)


@pytest.mark.parametrize("argv", [["train", "--lams", "nan"], ["train", "--lams", ".nan"], ["train", "--eps", "abc"],
                                  ["train", "--eps", "8/0"], ["evaluate", "R", "--split", "train"],
                                  ["train", "--no-such-flag"], ["evaluate"]])
def test_argparse_errors_are_one_line(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    line = one_line(capsys)
    assert "error" in line and "see " in line and "--help" in line


def test_broken_pipe_exits_quietly():
    read, write = os.pipe()
    os.close(read)  # the reader (`head`) is gone before the first write
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run([sys.executable, "-m", "oat", "recipes", "--show", "cifar10-resnet34-oat"], stdout=write,
                          stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    os.close(write)
    assert proc.returncode == 0 and "Broken pipe" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_run_may_follow_the_attack_list(run, capsys):
    assert main(["evaluate", "--attacks", "fgsm", "clean", str(run), "--subset", "10", "--no-checks",
                 "--no-progress"]) == 0
    rows = json.loads((run / "results.json").read_text())["rows"]
    assert {"fgsm", "clean"} <= {r["attack"] for r in rows}


# --------------------------------------------------------------------------- portability
def test_evaluate_with_moved_data(tmp_path, capsys):
    data_a = tmp_path / "a"
    write_mnist(data_a)
    out = tmp_path / "mnist-run"
    assert main(["train", "--data", "mnist", "--data-dir", str(data_a), "--out", str(out), "--batch-size", "8",
                 "--no-eval", "--no-progress", "--epochs", "1", "attack_steps=0", "val_size=10"]) == 0
    data_b = Path(shutil.move(str(data_a), str(tmp_path / "b")))
    refused(capsys, ["evaluate", str(out), *EVAL], out)  # the recorded folder is gone
    assert main(["evaluate", str(out), *EVAL, "--data-dir", str(data_b)]) == 0
    assert json.loads((out / "results.json").read_text())["rows"]


@pytest.mark.parametrize("lam", [np.float32(0.2), np.float64(0.2), np.float32(1.0)])
def test_numpy_scalars_are_lam_values(tiny_model, batch, lam):
    x, _ = batch
    model = tiny_model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x, lam), model(x, float(lam)), atol=1e-6)
        assert torch.allclose(model.at(lam)(x), model.at(float(lam))(x), atol=1e-6)


# --------------------------------------------------------------------------- progress
def test_one_line_per_epoch_and_no_redraws_off_a_terminal(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--out", str(out), "--no-eval", "--epochs", "2", "attack_steps=0", "val_size=1000"]) == 0
    captured = capsys.readouterr()
    epochs = [ln for ln in captured.out.splitlines() if ln.startswith("epoch ")]
    assert len(epochs) == 2 and epochs[0].startswith("epoch 1/2") and "loss" in epochs[0] and "train SA" in epochs[0]
    assert " s" in epochs[1]
    assert "\r" not in captured.err and "\r" not in captured.out  # not a terminal: no progress-bar redraws


def test_sanity_checks_step_is_visible(run, capsys):
    assert main(["evaluate", str(run), "--no-progress", "--subset", "10", "--attacks", "fgsm",
                 "--check-subset", "8", "--allow-failed-checks"]) == 0
    assert any(ln.startswith("sanity checks:") for ln in capsys.readouterr().out.splitlines())
