"""The evaluation journal is a cache that is never trusted: a hand-edited journal, one of
another checkpoint, or one of the older format without checksums is set aside with one log
line and every batch is recomputed, giving the numbers of an evaluation without a journal."""

import json
import shutil

import torch

from oat.checkpoint import load_model, save_checkpoint
from oat.evaluate.api import evaluate_run
from oat.evaluate.journal import Journal, journal_name
from oat.evaluate.provenance import checkpoint_sha256
from oat.evaluate.results import read_results

KW = dict(progress=False, report=False, checks=False, attacks=["fgsm"], subset=40, batch_size=16)


def _journal(run):
    (path,) = (run / "eval" / "journal").glob("*.jsonl")
    return path


def _numbers(rows):
    return [(r["lam"], r["sa"], r["ra"], r["n"]) for r in rows]


def _all_ones(line: str) -> str:
    rec = json.loads(line)
    if "k" in rec:
        rec["clean"], rec["adv"] = "1" * len(rec["clean"]), "1" * len(rec["adv"])
    return json.dumps(rec)


def test_a_hand_edited_journal_is_recomputed(eval_run):
    truth = evaluate_run(eval_run, log=lambda *_: None, **KW)
    assert all(r["ra"] < 1.0 for r in truth)
    path = _journal(eval_run)
    path.write_text("\n".join(_all_ones(ln) for ln in path.read_text().splitlines()) + "\n")
    logs = []
    again = evaluate_run(eval_run, log=logs.append, **KW)
    assert _numbers(again) == _numbers(truth)
    lines = [m for m in logs if "journal" in m]
    assert len(lines) == 1 and "checksum" in lines[0], logs
    assert path.with_name(path.name + ".rejected").exists()
    assert Journal(path, checkpoint_sha256(eval_run / "checkpoints" / "epoch-0004")).done  # rewritten, trusted


def _other_model(run):
    """The run folder with other weights (a near-chance model) under the same checkpoint name."""
    ckpts = run / "checkpoints"
    state = json.loads((ckpts / "epoch-0004" / "state.json").read_text())
    model = load_model(ckpts / "epoch-0004")
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    save_checkpoint(ckpts, "epoch-0004", model, state={k: state[k] for k in ("epoch", "finished", "config", "eps")})
    return run


def test_a_journal_of_another_checkpoint_is_recomputed(eval_run, tmp_path):
    other = _other_model(shutil.copytree(eval_run, tmp_path / "other"))
    truth = evaluate_run(shutil.copytree(other, tmp_path / "fresh"), log=lambda *_: None, **KW)
    mine = evaluate_run(eval_run, log=lambda *_: None, **KW)
    assert _numbers(mine) != _numbers(truth)
    # eval_run's journal, put where `other` looks for its own
    sha = checkpoint_sha256(other / "checkpoints" / "epoch-0004")
    name = journal_name(split="test", norm="linf", eps=0.1, subset=40, seed=0, batch_size=16, ckpt=sha[:12])
    (other / "eval" / "journal").mkdir(parents=True)
    shutil.copy(_journal(eval_run), other / "eval" / "journal" / name)
    logs = []
    assert _numbers(evaluate_run(other, log=logs.append, **KW)) == _numbers(truth)
    assert sum("another checkpoint" in m for m in logs) == 1, logs
    assert {r["checkpoint_sha256"] for r in read_results(other)["rows"]} == {sha}


def test_an_old_journal_without_checksums_is_recomputed(eval_run):
    truth = evaluate_run(eval_run, log=lambda *_: None, **KW)
    path = _journal(eval_run)
    old = [json.loads(ln) for ln in path.read_text().splitlines()[1:]]  # the records, as the old format had them
    path.write_text("".join(json.dumps({"k": r["k"], "clean": "1" * len(r["clean"]), "adv": "1" * len(r["adv"])})
                            + "\n" for r in old))
    logs = []
    assert _numbers(evaluate_run(eval_run, log=logs.append, **KW)) == _numbers(truth)
    assert sum("no header" in m for m in logs) == 1, logs


def test_records_are_bound_to_their_checkpoint(tmp_path):
    path = tmp_path / "j.jsonl"
    key = json.dumps(["per-lam", 0.0, None, "fgsm", 0, 3])
    Journal(path, "aaa").put([(key, torch.tensor([True, False, True]), torch.tensor([False, False, True]))])
    got = Journal(path, "aaa").get(key)
    assert got is not None and got[0].tolist() == [True, False, True]
    logs = []
    assert Journal(path, "bbb", log=logs.append).get(key) is None and len(logs) == 1
