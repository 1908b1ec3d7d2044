"""The claim benchmark's pure parts on tiny fake inputs: aggregation, row format, cost, job plan."""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import tradeoff  # noqa: E402
import tradeoff_stats as ts  # noqa: E402

ROW_KEYS = {
    "dataset",
    "lam",
    "attack",
    "sa_oat",
    "sa_dedicated",
    "ra_oat",
    "ra_dedicated",
    "sa_gap",
    "ra_gap",
    "sa_oat_std",
    "sa_dedicated_std",
    "ra_oat_std",
    "ra_dedicated_std",
    "sa_gap_std",
    "ra_gap_std",
    "seeds",
    "n",
}


def _rows(lam, sa, ra, n=100, sa_full=None):
    rows = [{"lam": lam, "attack": "pgd20", "sa": sa, "ra": ra, "n": n}]
    if sa_full is not None:
        rows.append({"lam": lam, "attack": "clean", "sa": sa_full, "ra": sa_full, "n": 1000})
    return rows


def _records():
    recs = []
    for seed, (so, ro, sd, rd) in enumerate([(0.80, 0.40, 0.82, 0.41), (0.90, 0.44, 0.86, 0.45)]):
        recs.append(
            {
                "variant": "oat",
                "seed": seed,
                "lam": None,
                "wall_s": 10.0,
                "passes": 7.625,
                "rows": _rows(0.3, so, ro, sa_full=so + 0.01) + _rows(1.0, 0.5, 0.3),
            }
        )
        recs.append(
            {
                "variant": "dedicated",
                "seed": seed,
                "lam": 0.3,
                "wall_s": 20.0 + seed,
                "passes": 9,
                "rows": _rows(0.3, sd, rd, sa_full=sd + 0.01),
            }
        )
    return recs


def test_compare_pairs_seeds_and_averages_gaps():
    rows = ts.compare(_records(), "digits")
    assert len(rows) == 1  # λ = 1 has no dedicated model: no row
    r = rows[0]
    assert ROW_KEYS <= set(r)
    assert r["lam"] == 0.3 and r["attack"] == "pgd20" and r["seeds"] == [0, 1] and r["n"] == 100
    # SA comes from the clean rows (whole split), RA from the attack's rows.
    assert r["sa_oat"] == pytest.approx(0.86) and r["n_sa"] == 1000
    assert r["sa_gap"] == pytest.approx(((0.81 - 0.83) + (0.91 - 0.87)) / 2)
    assert r["ra_gap"] == pytest.approx(-0.01)
    assert r["ra_gap_std"] == pytest.approx(0.0, abs=1e-12)
    assert r["sa_gap_std"] == pytest.approx(math.sqrt(2) * 0.03)  # stdev of (-0.02, 0.04)
    json.dumps(rows)  # the row format is plain JSON


def test_single_seed_has_zero_spread_and_missing_dedicated_seed_is_skipped():
    recs = [r for r in _records() if not (r["variant"] == "dedicated" and r["seed"] == 1)]
    r = ts.compare(recs, "digits")[0]
    assert r["seeds"] == [0] and r["sa_gap_std"] == 0.0


def test_cost_ratio_from_walls_and_passes():
    c = ts.cost(_records(), "oat")
    assert c["wall_ratio"] == pytest.approx(41 / 20)
    assert c["pass_ratio"] == pytest.approx(9 / 7.625)
    assert set(c["per_seed"]) == {"0", "1"}
    # A seed whose dedicated set is incomplete does not count.
    partial = [r for r in _records() if not (r["variant"] == "dedicated" and r["seed"] == 1)]
    assert set(ts.cost(partial, "oat", lams=[0.3])["per_seed"]) == {"0"}
    assert ts.cost(_records(), "oat", lams=[0.3, 0.4])["per_seed"] == {}


def test_passes_per_example():
    assert ts.passes_per_example("pgdat", 0.0) == 1
    assert ts.passes_per_example("pgdat", 0.3) == 9
    assert ts.passes_per_example("pgdat", 1.0) == 8
    assert ts.passes_per_example("oat", num_lams=6, batch=128) == pytest.approx(1 + 106 / 128 * 8)
    ded = sum(ts.passes_per_example("pgdat", v) for v in (0, 0.1, 0.2, 0.3, 0.4, 1))
    assert ded / ts.passes_per_example("oat") > 5


def test_ci95_and_mean_std():
    assert ts.ci95(0.5, 10000) == pytest.approx(0.0098)
    assert ts.mean_std([1.0]) == (1.0, 0.0)
    assert all(math.isnan(v) for v in ts.mean_std([]))


def test_markdown_and_plot(tmp_path):
    rows = ts.compare(_records(), "digits")
    md = ts.markdown(rows, "t")
    assert "| 0.3 | pgd20 | 86.00 | 85.00 | +1.00 ± 4.24 |" in md
    ts.plot(rows, tmp_path / "p.png", "t")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_job_plan_puts_whole_parts_first():
    s = tradeoff.settings(tradeoff.parse_args(["--data", "digits", "--seeds", "0", "1"]))
    jobs = tradeoff.jobs(s, continuous=True, ablations=True)
    names = [(v, seed) for v, seed, *_ in jobs]
    assert names[:7] == [("oat", 0)] + [("dedicated", 0)] * 6 and names[7] == ("oat", 1)
    cont = [j for j in jobs if j[0] == "oat-continuous"][0]
    assert set(tradeoff.CONT_LAMS) <= set(cont[4]) and cont[3]["encoding"] == "continuous"
    assert {j[2] for j in jobs if j[0] == "dedicated"} == set(tradeoff.PAPER_LAMS) | set(tradeoff.CONT_LAMS)
    assert {"single-bn", "one-hot", "dct", "scalar"} <= {j[0] for j in jobs}


def test_settings_presets_and_train_size():
    fm = tradeoff.settings(tradeoff.parse_args(["--data", "fashion-mnist"]))
    assert fm["eps"] == 0.1 and fm["train_size"] is None and fm["ra_subset"] is None  # every image
    assert tradeoff.base_config(fm, None, 0)["val_size"] is None  # the library's default 5k validation
    cut = tradeoff.settings(tradeoff.parse_args(["--data", "fashion-mnist", "--train-size", "10000"]))
    assert tradeoff.base_config(cut, None, 0)["val_size"] == 50000
    full = tradeoff.settings(tradeoff.parse_args(["--data", "fashion-mnist", "--full"]))
    assert full["train_size"] is None and full["ra_subset"] is None and full["epochs"] > fm["epochs"]
    assert tradeoff.base_config(full, None, 0)["val_size"] is None
    assert tradeoff.settings(tradeoff.parse_args(["--data", "digits"]))["eps"] == 0.3


def test_same_subset_rows_compare_attacks_on_the_same_examples():
    def recs(attack, lam, outcomes):
        return [{"index": str(i), "lam": str(lam), "attack": attack, "correct": str(c)} for i, c in outcomes.items()]

    # PGD on 4 examples; AutoAttack on 2 of them (indices 1 and 3), at λ = 0.5 only.
    records = (recs("pgd20", 0.5, {0: 1, 1: 1, 2: 0, 3: 1}) + recs("autoattack", 0.5, {1: 0, 3: 1})
               + recs("pgd20", 1.0, {0: 1}))
    rows = {r["attack"]: r for r in ts.same_subset_rows(records, [0.5, 1.0])}
    assert set(rows) == {"pgd20@aa", "worst@aa"}  # λ = 1 has no AutoAttack records: no row
    assert rows["pgd20@aa"]["ra"] == 1.0 and rows["pgd20@aa"]["n"] == 2
    assert rows["worst@aa"]["ra"] == 0.5 and rows["worst@aa"]["lam"] == 0.5


def test_recorded_command_holds_no_machine_path():
    args = tradeoff._portable_args(["--runs", "/abs/place/runs-x", "--out=/abs/results", "--data-dir", "data/fm",
                                    "--seeds", "0", "--report-only"])
    assert "/abs" not in " ".join(args) and "--report-only" not in args
    assert args == ["--runs runs-x", "--out results", "--data-dir data/fm", "--seeds", "0"]


def test_dedicated_lams_subset_trains_only_those_and_skips_the_cost_ratio():
    s = tradeoff.settings(tradeoff.parse_args(["--data", "digits", "--seeds", "0", "--dedicated-lams", "0", "1"]))
    assert [j[2] for j in tradeoff.jobs(s, False, False) if j[0] == "dedicated"] == [0.0, 1.0]
    recs = [r for r in _records() if r["variant"] != "dedicated" or r["lam"] in (0.0, 1.0)]
    assert ts.cost(recs, "oat", tradeoff.PAPER_LAMS)["per_seed"] == {}  # an incomplete set has no ratio


def test_budget_table_reads_each_budget_and_keeps_only_the_chosen_lams(tmp_path):
    import tradeoff_budget

    def doc(gap):
        rows = [{"variant": v, "lam": lam, "attack": "pgd20", "sa_gap": gap, "ra_gap": -gap, "sa_dedicated": 0.8,
                 "ra_dedicated": 0.5, "seeds": [0], "n": 100} for v in ("oat", "oat-id") for lam in (0.0, 0.1, 1.0)]
        rows.append({"variant": "mix-probs", "lam": 1.0, "attack": "pgd20", "sa_oat": 0.8, "ra_oat": 0.6})
        return {"command": "python benchmarks/tradeoff.py ...", "rows": rows,
                "settings": {"model": "small-cnn", "eps": 0.1, "batch_size": 32, "lr": 0.05, "train_size": 10000,
                             "ra_subset": 2000, "seeds": [0]}}

    for b, gap in (("b16-e3", -0.05), ("b32-e10", -0.01)):
        (tmp_path / f"tradeoff-fashion-mnist-budget-{b}.json").write_text(json.dumps(doc(gap)))
    assert tradeoff_budget.main(["--budgets", "b16-e3", "b32-e10", "--lams", "0", "1", "--out", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "tradeoff-fashion-mnist-budget.json").read_text())
    assert len(out["rows"]) == 2 * 2 * 2  # budgets × variants × λ, no alternative rows, no λ = 0.1
    assert {(r["base"], r["epochs"]) for r in out["rows"]} == {(16, 3), (32, 10)}
    assert "| oat | 32 | 10 | 1 | pgd20 | 80.00 | -1.00 | 50.00 | +1.00 | 100 |" in (
        tmp_path / "tradeoff-fashion-mnist-budget.md").read_text()
    assert (tmp_path / "tradeoff-fashion-mnist-budget.png").stat().st_size > 0
    assert tradeoff_budget.main(["--budgets", "b64-e3", "--out", str(tmp_path)]) == 2  # not run yet


def test_cached_models_of_earlier_versions_count_as_fp32_only_if_trained_on_a_cpu(tmp_path):
    """Every model is trained in fp32 (amp off); a record from before the pin did so on a CPU only."""
    cfg = {**tradeoff.base_config(tradeoff.settings(tradeoff.parse_args(["--data", "digits"])), None, 0),
           "objective": "oat"}
    assert cfg["amp"] == "off"
    old = {k: v for k, v in cfg.items() if k != "amp"}
    for device, reused in (("cpu", True), ("cuda:0", False)):
        folder = tmp_path / device
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"device": device}))
        assert tradeoff._same_config({"config": old}, cfg, folder) is reused
    assert not tradeoff._same_config({"config": old}, cfg, tmp_path / "nowhere")  # unknown: train again
    assert not tradeoff._same_config({"config": {**old, "amp": "bf16"}}, cfg, tmp_path / "cpu")


def test_autoattack_runs_only_at_the_chosen_points():
    s = tradeoff.settings(tradeoff.parse_args(["--data", "digits", "--attacks", "pgd20", "autoattack",
                                               "--aa-lams", "0.2", "1", "--aa-alphas", "0.9"]))
    assert [v for v in (0, 0.1, 0.2, 1) if tradeoff._planned(s, "autoattack", v, False)] == [0.2, 1]
    assert [v for v in (0.8, 0.9, 1) if tradeoff._planned(s, "autoattack", v, True)] == [0.9]
    assert all(tradeoff._planned(s, "pgd20", v, b) for v in (0, 0.9) for b in (False, True))
    every = tradeoff.settings(tradeoff.parse_args(["--data", "digits", "--attacks", "autoattack"]))
    assert tradeoff._planned(every, "autoattack", 0.1, False) and tradeoff._planned(every, "autoattack", 0.3, True)


def test_the_paper_oat_trains_only_when_named():
    named = tradeoff.settings(tradeoff.parse_args(["--data", "digits", "--seeds", "0", "--variants", "oat", "oat-id"]))
    alone = tradeoff.settings(tradeoff.parse_args(["--data", "digits", "--seeds", "0", "--variants", "oat-id"]))
    assert [j[0] for j in tradeoff.jobs(named, False, False)].count("oat") == 1
    names = [j[0] for j in tradeoff.jobs(alone, False, False)]
    assert "oat" not in names and names.count("dedicated") == 6 and "oat-id" in names


def test_curve_plot_of_nothing_evaluated_yet_writes_nothing(tmp_path):
    ts.plot_curves({"oat-id": [], "mix-probs": []}, tmp_path / "c.png", "t")
    assert not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("flag", ["--aa-lams", "--aa-alphas"])
def test_autoattack_points_off_the_grid_are_refused(flag, tmp_path, capsys):
    argv = ["--data", "digits", "--attacks", "autoattack", flag, "0.6", "--runs", str(tmp_path / "runs"),
            "--out", str(tmp_path / "out")]
    assert tradeoff.main(argv) == 2
    assert f"{flag} [0.6]" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything was trained or written
