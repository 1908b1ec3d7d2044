"""The λ sweep, resumable evaluation, per-example CSV and results.json rows."""

import shutil

import pytest
import torch

from oat.checkpoint import load_model
from oat.data import load_data
from oat.evaluate import sweep as sweep_mod
from oat.evaluate.api import evaluate_run
from oat.evaluate.results import merge_results, read_per_example, read_results
from oat.evaluate.sweep import subset_indices, sweep, to_rows

FAST = dict(progress=False, report=False, log=lambda *_: None, checks=False)


def test_subset_is_seeded_sorted_and_distinct():
    a, b, c = subset_indices(100, 10, 0), subset_indices(100, 10, 0), subset_indices(100, 10, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, a.sort().values) and len(set(a.tolist())) == 10
    assert torch.equal(subset_indices(100, None), torch.arange(100))
    assert torch.equal(subset_indices(5, 50), torch.arange(5))


def test_batched_lams_equal_lam_by_lam(eval_run, monkeypatch):
    # FGSM has no random start, so the batched path and model.at(λ) one by one must agree exactly.
    model, data = load_model(eval_run), load_data("digits", seed=0)
    kw = dict(lams=[0.0, 1.0], widths=[None], attacks=["fgsm"], eps=0.1, subset=50, batch_size=32)
    calls = []
    real = sweep_mod._run_batched
    monkeypatch.setattr(sweep_mod, "_run_batched", lambda *a, **k: calls.append(1) or real(*a, **k))
    batched = sweep(model, data.test, batch_lams=True, **kw)
    assert calls, "batch_lams=True did not take the batched path"
    calls.clear()
    one_by_one = sweep(model, data.test, **kw)  # the CPU default: λ by λ
    assert not calls, "the CPU default should run λ by λ"
    for key in batched.adv:
        assert torch.equal(batched.adv[key], one_by_one.adv[key])
        assert batched.adv[key].float().mean() < batched.clean[key[:2]].float().mean()


def test_rows_worst_and_ra_not_above_sa(eval_run):
    model, data = load_model(eval_run), load_data("digits", seed=0)
    res = sweep(model, data.test, lams=[0.0, 1.0], widths=[None], attacks=["fgsm", "pgd20"], eps=0.1, subset=40)
    rows = to_rows(res, eps=0.1, split="test", slimmable=False)
    assert {r["attack"] for r in rows} == {"fgsm", "pgd20", "worst"}
    for lam in (0.0, 1.0):
        by = {r["attack"]: r for r in rows if r["lam"] == lam}
        assert by["worst"]["ra"] <= min(by["fgsm"]["ra"], by["pgd20"]["ra"])
        worst = (res.adv[(lam, None, "fgsm")] & res.adv[(lam, None, "pgd20")]).float().mean()
        assert by["worst"]["ra"] == pytest.approx(float(worst))
        assert all(r["ra"] <= r["sa"] and r["n"] == 40 and r["width"] is None for r in by.values())


def _mean(recs, row, attack):
    """The mean of ``attack``'s records on the examples of ``row``'s own attack."""

    subset = "all" if row["subset"] is None else str(row["subset"])

    def of(name):  # the records of the row's own evaluation (its checkpoint, subset and seed)
        return [r for r in recs if float(r["lam"]) == row["lam"] and r["attack"] == name
                and abs(float(r["eps"]) - row["eps"]) < 1e-9 and r["subset"] == subset
                and r["subset_seed"] == str(row["subset_seed"]) and r["checkpoint_sha256"] == row["checkpoint_sha256"]]

    idx = {r["index"] for r in of(row["attack"])}
    sel = [int(r["correct"]) for r in of(attack) if r["index"] in idx]
    assert len(sel) == row["n"]
    return sum(sel) / len(sel)


def test_csv_reproduces_every_row(eval_run):
    evaluate_run(eval_run, attacks=["fgsm", "pgd20"], subset=40, **FAST)
    evaluate_run(eval_run, split="val", attacks=["pgd20"], subset=30, **FAST)
    doc = read_results(eval_run)
    for split in ("test", "val"):
        recs = read_per_example(eval_run, split)
        for row in (r for r in doc["rows"] if r["split"] == split):
            assert _mean(recs, row, row["attack"]) == pytest.approx(row["ra"])
            assert _mean(recs, row, "clean") == pytest.approx(row["sa"])
    test = read_per_example(eval_run, "test")
    assert {r["index"] for r in test} == {str(i) for i in subset_indices(360, 40, 0).tolist()}
    # A later call on a smaller subset (AutoAttack's usual case) keeps every earlier row and
    # record: the new ones are stored beside them, each row recomputable from its own records.
    evaluate_run(eval_run, attacks=["fgsm"], subset=20, **FAST)
    doc, recs = read_results(eval_run), read_per_example(eval_run, "test")
    for row in (r for r in doc["rows"] if r["split"] == "test"):
        assert _mean(recs, row, "clean") == pytest.approx(row["sa"])
        assert _mean(recs, row, row["attack"]) == pytest.approx(row["ra"])
    assert sum(r["attack"] == "fgsm" for r in recs) == 2 * (40 + 20)  # both subsets' records (2 λ)
    labels = load_data("digits", seed=0).test.labels
    assert all(int(r["label"]) == int(labels[int(r["index"])]) for r in test[:50])


@pytest.mark.parametrize("batchable", [True, False])
def test_killed_evaluation_resumes_with_identical_numbers(eval_run, tmp_path, monkeypatch, batchable):
    # batchable=False: the λ-by-λ path (the CPU's and AutoAttack's) with a cheap random-start attack.
    other = tmp_path / "uninterrupted"
    shutil.copytree(eval_run, other)
    kw = dict(attacks=["pgd20"], subset=60, batch_size=24, batch_lams=batchable, **FAST)
    evaluate_run(other, **kw)
    name = "_run_batched" if batchable else "_run_one"
    real, calls = getattr(sweep_mod, name), []

    def dying(*a, **k):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt  # killed after two batches
        return real(*a, **k)

    monkeypatch.setattr(sweep_mod, name, dying)
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(eval_run, **kw)
    assert not (eval_run / "results.json").exists()
    counted = []
    monkeypatch.setattr(sweep_mod, name, lambda *a, **k: counted.append(1) or real(*a, **k))
    evaluate_run(eval_run, **kw)
    total = 5 if batchable else 6  # 60 examples: chunks of 12 (2 λ batched) or batches of 24 per λ
    assert len(counted) == total - 2, "the finished batches were recomputed"
    assert read_results(eval_run)["rows"] == read_results(other)["rows"]
    assert read_per_example(eval_run, "test") == read_per_example(other, "test")


def test_results_keep_linf_and_l2_apart(tmp_path):
    row = {"lam": 0.0, "width": None, "split": "test", "attack": "pgd20", "eps": 0.5, "sa": 0.9, "ra": 0.5, "n": 10}
    merge_results(tmp_path, {}, [row])  # an old row without "norm" is L∞
    merge_results(tmp_path, {}, [{**row, "norm": "l2", "ra": 0.7}])
    merge_results(tmp_path, {}, [{**row, "norm": "linf", "ra": 0.4}])
    rows = read_results(tmp_path)["rows"]
    assert sorted((r.get("norm"), r["ra"]) for r in rows) == [("l2", 0.7), ("linf", 0.4)]


def test_autoattack_progress_in_the_bar_one_line_per_component_off_it(eval_run, capsys):
    # On a terminal the bar's postfix follows AutoAttack inside a batch; off one, the sweep
    # logs one line per finished component and draws nothing; either way the numbers agree.
    model, data = load_model(eval_run), load_data("digits", seed=0)
    kw = dict(lams=[1.0], widths=[None], attacks=["apgd-ce"], eps=0.1, subset=12, batch_size=6)
    lines = []
    quiet = sweep(model, data.test, progress=False, log=lines.append, **kw)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert len(lines) == 2  # 2 batches × 1 component
    assert lines[0].startswith("apgd-ce examples 0–5 λ=1: apgd-ce 1/1: batch 1/1, robust ")
    assert lines[1].startswith("apgd-ce examples 6–11 λ=1:")
    shown = sweep(model, data.test, progress=True, log=lines.append, **kw)
    err = capsys.readouterr().err
    assert "λ=1 apgd-ce 1/1: batch" in err and "robust" in err and len(lines) == 2  # the bar, not the log
    for key in quiet.adv:
        assert torch.equal(quiet.adv[key], shown.adv[key])


def test_cli_off_a_terminal_prints_no_bar_and_a_line_per_autoattack_component(eval_run, capsys):
    from oat.cli.main import main

    assert main(["evaluate", str(eval_run), "--subset", "12", "--attacks", "apgd-ce", "--no-checks"]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.out and "\r" not in captured.err and "robust" not in captured.err
    progress = [ln for ln in captured.out.splitlines() if ln.startswith("apgd-ce examples")]
    assert len(progress) == 2 and all("robust" in ln for ln in progress)  # one per λ (one component, one batch)


def test_autoattack_on_the_cached_predictor_finds_what_model_at_finds(eval_run):
    # The sweep hands AutoAttack model.predictor (folded BN + FiLM, for speed); attacking
    # model.at with the same seed must leave the same examples robust.
    from oat.attacks.registry import get_attack

    model, data = load_model(eval_run), load_data("digits", seed=0)
    res = sweep(model, data.test, lams=[1.0], widths=[None], attacks=["apgd-ce"], eps=0.1, subset=8)
    x, y = data.test.images[res.indices].float() / 255, data.test.labels[res.indices]
    bound = model.at(1.0)
    gen = sweep_mod.batch_generator(0, "apgd-ce", 0, "per-lam:1:None")
    x_adv = get_attack("apgd-ce")(bound, x, y, eps=0.1, generator=gen)
    with torch.no_grad():
        expected = (bound(x).argmax(1) == y) & (bound(x_adv).argmax(1) == y)
    assert torch.equal(res.adv[(1.0, None, "apgd-ce")], expected)
    assert 0 < int(expected.sum()) < int((bound(x).argmax(1) == y).sum())  # the attack broke some, not all
