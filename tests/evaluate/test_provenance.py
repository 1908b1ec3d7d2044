"""``oat evaluate`` never quietly rewrites results: rows carry their provenance and are keyed
by it, reports show one checkpoint, one ε and the largest n (and say so), a bad ε is refused
up front, and ``oat report`` never replaces a report by an empty one."""

import csv
import hashlib
import json
import math
import os
from pathlib import Path

import pytest
import torch

from oat.checkpoint import load_model, save_checkpoint
from oat.cli.main import main
from oat.errors import CheckpointError, ConfigError, OatError
from oat.evaluate.api import evaluate_run
from oat.evaluate.provenance import checkpoint_sha256
from oat.evaluate.report import EmptyReport, write_report
from oat.evaluate.results import per_example_path, read_per_example, read_results
from test_bad_input import tree_hash

FAST = dict(progress=False, report=False, log=lambda *_: None, checks=False, attacks=["fgsm"])
CLI_EVAL = ["--no-progress", "--no-checks", "--subset", "10", "--attacks", "fgsm"]
N_TEST = 360  # the digits test split


def refused(capsys, argv, *folders) -> str:
    """``oat argv`` in-process: one ``oat: error:`` line, exit 2, the folders unchanged."""
    before = tree_hash(*folders)
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("oat: error:"), err
    assert tree_hash(*folders) == before
    return lines[0]


def trade_off_table(report: Path) -> list[str]:
    """The λ lines of the report's trade-off table."""
    text = report.read_text().split("## Trade-off", 1)[1]
    return [ln for ln in text.split("\n\n", 2)[1].splitlines() if ln.startswith("| ") and not ln.startswith("| λ")]


def _csv_set(records) -> set:
    return {tuple(sorted(r.items())) for r in records}


def test_rows_carry_their_provenance(eval_run):
    rows = evaluate_run(eval_run, subset=10, seed=3, **FAST)
    ckpt = eval_run / "checkpoints" / "epoch-0004"
    sha = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
    assert checkpoint_sha256(ckpt) == sha
    for r in rows:
        assert {"lam", "width", "attack", "eps", "sa", "ra", "n"} <= r.keys()  # what benchmarks read
        assert (r["checkpoint"], r["checkpoint_sha256"], r["subset"], r["subset_seed"]) == ("epoch-0004", sha, 10, 3)
        assert r["attack_settings"]["steps"] == 1 and r["eps"] == 0.1 and r["n"] == 10
    assert read_results(eval_run)["rows"] == sorted(rows, key=lambda r: r["lam"])
    assert {r["subset"] for r in read_per_example(eval_run, "test")} == {"10"}


def test_a_smaller_subset_never_replaces_a_larger_one(eval_run):
    evaluate_run(eval_run, **FAST)
    full = read_results(eval_run)["rows"]
    assert [r["n"] for r in full] == [N_TEST, N_TEST] and {r["subset"] for r in full} == {None}
    records = _csv_set(read_per_example(eval_run, "test"))
    logs = []
    evaluate_run(eval_run, subset=8, **{**FAST, "log": logs.append})
    assert any(f"larger n (n = {N_TEST})" in m for m in logs), logs
    rows = read_results(eval_run)["rows"]
    assert all(r in rows for r in full) and sorted(r["n"] for r in rows) == [8, 8, N_TEST, N_TEST]
    assert records <= _csv_set(read_per_example(eval_run, "test")), "the per-example CSV lost records"
    report = write_report([eval_run])
    assert f"n = {N_TEST})" in report.read_text()
    table = trade_off_table(report)
    assert len(table) == 2, table  # one line per λ, the n = 360 rows
    assert table[0].split("|")[4].strip() == f"{100 * full[0]['ra']:.2f}"
    # --replace: asked for, the subset's rows supersede the whole split's
    evaluate_run(eval_run, subset=8, replace=True, **FAST)
    assert sorted(r["n"] for r in read_results(eval_run)["rows"]) == [8, 8]
    assert {r["subset"] for r in read_per_example(eval_run, "test") if r["attack"] == "fgsm"} == {"8"}
    assert "n = 8)" in write_report([eval_run]).read_text()


def test_cli_replace_flag(eval_run):
    assert main(["evaluate", str(eval_run), *CLI_EVAL]) == 0
    assert main(["evaluate", str(eval_run), *CLI_EVAL[:-4], "--subset", "5", "--attacks", "fgsm"]) == 0
    assert sorted(r["n"] for r in read_results(eval_run)["rows"]) == [5, 5, 10, 10]
    assert main(["evaluate", str(eval_run), *CLI_EVAL[:-4], "--subset", "5", "--attacks", "fgsm", "--replace"]) == 0
    assert sorted(r["n"] for r in read_results(eval_run)["rows"]) == [5, 5]


def test_rows_of_another_eps_are_kept_and_never_mixed(eval_run):
    evaluate_run(eval_run, **FAST)  # the run's ε = 0.1
    at_run_eps = read_results(eval_run)["rows"]
    evaluate_run(eval_run, eps=0.3, **FAST)
    rows = read_results(eval_run)["rows"]
    assert all(r in rows for r in at_run_eps) and sorted(r["eps"] for r in rows) == [0.1, 0.1, 0.3, 0.3]
    report = write_report([eval_run])
    assert "ε = 0.1 (linf)" in report.read_text()
    table = trade_off_table(report)
    assert len(table) == 2 and [ln.split("|")[4].strip() for ln in table] == \
        [f"{100 * r['ra']:.2f}" for r in sorted(at_run_eps, key=lambda r: r["lam"])]
    other = write_report([eval_run], eps=0.3)
    assert "ε = 0.3 (linf)" in other.read_text() and len(trade_off_table(other)) == 2


@pytest.mark.parametrize("eps", ["-0.1", "1.5", "2/0.5"])
def test_cli_refuses_an_eps_outside_0_1(eval_run, capsys, eps):
    assert "ε must be finite and in [0, 1]" in refused(capsys, ["evaluate", eval_run, *CLI_EVAL, "--eps", eps],
                                                        eval_run)


@pytest.mark.parametrize("eps", [math.nan, math.inf, -0.1, 1.01, "0.1"])
def test_library_refuses_a_bad_eps_before_writing(eval_run, eps):
    before = tree_hash(eval_run)
    with pytest.raises(ConfigError):
        evaluate_run(eval_run, eps=eps, **FAST)
    assert tree_hash(eval_run) == before


def _older_checkpoint(run: Path) -> Path:
    """Add ``epoch-0003`` (other weights) beside the newest ``epoch-0004``, which stays newest."""
    ckpts = run / "checkpoints"
    model = load_model(ckpts / "epoch-0004")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.9)
    state = json.loads((ckpts / "epoch-0004" / "state.json").read_text())
    keep = {k: state[k] for k in ("epoch", "finished", "config", "eps")}
    save_checkpoint(ckpts, "epoch-0003", model, state={**keep, "epoch": 3}, keep=3)
    (ckpts / "latest").write_text("epoch-0004\n")
    return ckpts / "epoch-0003"


def test_an_older_checkpoint_never_replaces_the_newest_rows(eval_run):
    older = _older_checkpoint(eval_run)
    evaluate_run(eval_run, **FAST)
    newest = read_results(eval_run)["rows"]
    evaluate_run(older, **FAST)  # a checkpoint folder inside the run
    rows = read_results(eval_run)["rows"]
    assert all(r in rows for r in newest) and len(rows) == 4
    assert sorted(r["checkpoint"] for r in rows) == ["epoch-0003"] * 2 + ["epoch-0004"] * 2
    assert len({r["checkpoint_sha256"] for r in rows}) == 2
    text = write_report([eval_run]).read_text()
    assert "checkpoint `epoch-0004`" in text and "the run's newest" in text
    assert [ln.split("|")[4].strip() for ln in trade_off_table(eval_run / "report.md")] == \
        [f"{100 * r['ra']:.2f}" for r in sorted(newest, key=lambda r: r["lam"])]
    assert "checkpoint `epoch-0003`" in write_report([eval_run], checkpoint="epoch-0003").read_text()


def test_report_never_replaces_a_report_by_an_empty_one(eval_run, capsys):
    evaluate_run(eval_run, split="val", **{**FAST, "report": True})
    good = (eval_run / "report.md").read_bytes()
    assert "split `val`" in good.decode()
    line = refused(capsys, ["report", eval_run, "--split", "test"], eval_run)
    assert "no test rows" in line
    assert (eval_run / "report.md").read_bytes() == good
    with pytest.raises(EmptyReport):
        write_report([eval_run], split="val", eps=0.3)
    assert issubclass(EmptyReport, OatError)


def test_legacy_results_load_are_kept_and_reported(eval_run):
    legacy = [{"lam": lam, "width": None, "split": "test", "attack": "fgsm", "eps": 0.1, "sa": 0.5, "ra": 0.25,
               "n": 50} for lam in (0.0, 1.0)]
    (eval_run / "results.json").write_text(json.dumps({"eps": 0.1, "rows": legacy}))
    old_csv = per_example_path(eval_run, "test")
    old_csv.parent.mkdir(parents=True)
    old_csv.write_text("index,label,lam,width,norm,eps,attack,correct\n3,1,0.0,,linf,0.1,fgsm,1\n")
    assert "checkpoint unknown" in write_report([eval_run]).read_text()
    evaluate_run(eval_run, **FAST)
    rows = read_results(eval_run)["rows"]
    assert all(r in rows for r in legacy) and len(rows) == 4
    assert any(r["index"] == "3" and r["checkpoint_sha256"] == "" for r in read_per_example(eval_run, "test"))
    assert "the run's newest" in write_report([eval_run]).read_text()


def test_a_checkpoint_symlinked_from_another_run_is_refused(eval_run, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    _older_checkpoint(eval_run).rename(other / "epoch-0003")  # another model, in another folder
    link = eval_run / "checkpoints" / "epoch-0009"
    os.symlink(other / "epoch-0003", link)
    evaluate_run(eval_run, **FAST)
    assert "outside the run folder" in refused(capsys, ["evaluate", link, *CLI_EVAL], eval_run, other)
    (eval_run / "checkpoints" / "latest").write_text("epoch-0009\n")  # also when `latest` names it
    with pytest.raises(CheckpointError):
        evaluate_run(eval_run, **FAST)
    assert {r["checkpoint"] for r in read_results(eval_run)["rows"]} == {"epoch-0004"}


def test_results_json_holds_no_nan(eval_run):
    evaluate_run(eval_run, subset=10, **FAST)
    json.loads((eval_run / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} written"))
    with open(per_example_path(eval_run, "test"), newline="") as f:
        assert all(r["eps"] == "0.1" for r in csv.DictReader(f))


def test_a_bare_checkpoint_folder_gets_no_results_written_into_it(eval_run, tmp_path, capsys):
    bare = tmp_path / "ckpt"
    os.rename(eval_run / "checkpoints" / "epoch-0004", bare)
    assert "outside a run" in refused(capsys, ["evaluate", bare, *CLI_EVAL], bare)


def test_a_checkpoints_folder_on_another_disk_is_fine(eval_run, tmp_path):
    # RUN/checkpoints itself a link (storage elsewhere): the run's own checkpoints, accepted.
    store = tmp_path / "store"
    os.rename(eval_run / "checkpoints", store)
    os.symlink(store, eval_run / "checkpoints")
    rows = evaluate_run(eval_run, subset=10, **FAST)
    assert {r["checkpoint"] for r in rows} == {"epoch-0004"} and (eval_run / "results.json").exists()
