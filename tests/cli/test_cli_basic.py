"""The command line, in-process through ``main(argv)`` (plus two real subprocess runs).

train → evaluate → report on one run folder; ``--help`` of every sub-command; and the bad
inputs of the foundation issue: each one line on stderr, exit ≠ 0, no traceback, and no
file created or changed.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from oat.cli.main import COMMANDS, build_parser, main

TRAIN = ["--epochs", "1", "--device", "cpu", "--no-eval", "--no-progress", "--eps", "0.3",
         "model_kwargs={base: 8}", "attack_steps=1"]


def snapshot(root: Path) -> dict:
    """Every file and folder under ``root`` with its content hash and mtime."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(root))] = (digest, st.st_mtime_ns)
    return out


def one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0, argv
    assert err.startswith("oat: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny OAT run trained (1 epoch) and evaluated on a test subset through the CLI."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--out", str(out), *TRAIN]) == 0
    assert main(["evaluate", str(out), "--subset", "30", "--no-checks", "--no-progress"]) == 0
    return out


def _subparsers() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", COMMANDS)
def test_help_explains_every_option(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: oat {command}")
    for action in _subparsers()[command]._actions:
        assert action.help and action.help != argparse.SUPPRESS, (command, action.dest)
        for flag in action.option_strings:
            assert flag in out


def test_train_writes_a_complete_run_folder(run):
    meta = json.loads((run / "config.json").read_text())
    assert meta["config"]["objective"] == "oat" and meta["config"]["epochs"] == 1
    assert meta["config"]["model_kwargs"] == {"base": 8} and meta["eps"] == 0.3
    assert (run / "checkpoints" / "latest").read_text().strip() == "epoch-0001"
    assert len((run / "log.jsonl").read_text().splitlines()) == 1


def test_evaluate_writes_results_rows(run):
    doc = json.loads((run / "results.json").read_text())
    assert doc["objective"] == "oat" and doc["model"] == "small-cnn" and doc["data"] == "digits"
    rows = [r for r in doc["rows"] if r["split"] == "test" and r["attack"] == "pgd20"]
    assert sorted(r["lam"] for r in rows) == [0.0, 0.1, 0.2, 0.3, 0.4, 1.0]
    for r in rows:
        assert r["n"] == 30 and r["eps"] == 0.3 and r["width"] is None
        assert 0 <= r["ra"] <= r["sa"] <= 1


def test_report_writes_markdown_and_plots(run, capsys):
    assert main(["report", str(run)]) == 0
    assert "report" in capsys.readouterr().out
    md = (run / "report.md").read_text()
    assert "pgd20" in md.lower() or "PGD" in md
    assert list(run.glob("*.png"))


def test_report_of_an_unevaluated_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    before = snapshot(tmp_path)
    one_line_error(capsys, ["report", str(tmp_path / "x")])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv, words", [
    (["--model", "resnet99"], "unknown model"),
    (["--data", "imagenet"], "unknown data set"),
    (["--objective", "pgdat", "--lam", "1.5"], "[0, 1]"),
    (["--lams", "0", "2"], "[0, 1]"),
    (["--lams", "0", "-0.1"], "[0, 1]"),
])
def test_bad_train_input_creates_nothing(tmp_path, capsys, argv, words):
    out = tmp_path / "new-run"
    err = one_line_error(capsys, ["train", "--out", str(out), *TRAIN, *argv])
    assert words in err
    assert not out.exists()


@pytest.mark.parametrize("argv, words", [
    (["--lams", "0.25"], "trained set"),
    (["--lams", "1.5"], "[0, 1]"),
    (["--lams", "0", "-1"], "[0, 1]"),
    (["--widths", "0.5"], "width"),
])
def test_bad_evaluate_input_changes_nothing(run, capsys, argv, words):
    before = snapshot(run)
    err = one_line_error(capsys, ["evaluate", str(run), "--no-checks", "--no-progress", *argv])
    assert words in err
    assert snapshot(run) == before


def test_missing_checkpoint(tmp_path, capsys):
    err = one_line_error(capsys, ["evaluate", str(tmp_path / "nowhere"), "--no-progress"])
    assert "nowhere" in err
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, ["evaluate", str(tmp_path / "empty"), "--no-progress"])
    assert os.listdir(tmp_path / "empty") == []


def test_existing_run_is_not_overwritten_without_a_flag(run, capsys):
    before = snapshot(run)
    err = one_line_error(capsys, ["train", "--out", str(run), *TRAIN])
    assert "--resume" in err and "--overwrite" in err
    assert snapshot(run) == before


def test_resume_of_nothing_is_one_line(tmp_path, capsys):
    err = one_line_error(capsys, ["train", "--out", str(tmp_path / "none"), "--resume", *TRAIN])
    assert "resume" in err and not (tmp_path / "none").exists()


def test_overwrite_replaces_the_run(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--out", str(out), *TRAIN]) == 0
    (out / "stale.txt").write_text("old")
    assert main(["train", "--out", str(out), *TRAIN, "--overwrite"]) == 0
    assert "overwrite" in capsys.readouterr().out
    assert not (out / "stale.txt").exists() and (out / "checkpoints" / "latest").exists()


def _oat(*args):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    return subprocess.run([sys.executable, "-m", "oat", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_python_dash_m_oat_help():
    p = _oat("--help")
    assert p.returncode == 0
    for command in COMMANDS:
        assert command in p.stdout


def test_python_dash_m_oat_bad_input(tmp_path):
    p = _oat("evaluate", str(tmp_path / "missing-run"))
    assert p.returncode == 2
    assert p.stderr.startswith("oat: error:") and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_resume_says_which_options_it_ignored(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *TRAIN]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--epochs", "3", "--no-eval", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "ignored: epochs" in err  # the saved configuration (1 epoch) wins, and the user is told
    assert json.loads((out / "config.json").read_text())["config"]["epochs"] == 1
