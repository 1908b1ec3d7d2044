"""Picking λ (and width) for a target RA or SA on the validation split."""

import pytest

from oat.cli.main import main
from oat.errors import ConfigError
from oat.evaluate.results import read_results
from oat.evaluate.select import describe, select_operating_point


def _rows():
    pts = [(0.0, 1.0, 0.95, 0.05), (0.2, 1.0, 0.90, 0.40), (0.4, 1.0, 0.85, 0.50), (1.0, 1.0, 0.70, 0.60),
           (0.2, 0.5, 0.90, 0.40), (0.4, 0.5, 0.80, 0.45)]
    rows = [{"lam": lam, "width": w, "split": "val", "attack": "pgd20", "eps": 0.1, "sa": sa, "ra": ra, "n": 100}
            for lam, w, sa, ra in pts]
    # Test rows must never decide the choice (they would say λ=0.4 w=0.5 is best).
    rows.append({**rows[-1], "split": "test", "sa": 0.99, "ra": 0.99})
    return rows


def test_target_ra_picks_best_sa_among_those_meeting_it():
    best = select_operating_point(_rows(), target_ra=0.45)
    assert (best["lam"], best["width"]) == (0.4, 1.0)
    # Ties in SA (and RA) go to the smaller, cheaper width.
    tie = select_operating_point(_rows(), target_ra=0.40)
    assert (tie["lam"], tie["width"]) == (0.2, 0.5)
    assert select_operating_point(_rows(), target_ra=0.9) is None


def test_target_sa_picks_best_ra():
    best = select_operating_point(_rows(), target_sa=0.85)
    assert (best["lam"], best["width"]) == (0.4, 1.0)
    assert select_operating_point(_rows(), target_sa=0.0)["lam"] == 1.0


def test_bad_targets_are_refused():
    with pytest.raises(ConfigError):
        select_operating_point(_rows())
    with pytest.raises(ConfigError):
        select_operating_point(_rows(), target_ra=0.1, target_sa=0.1)
    with pytest.raises(ConfigError):
        select_operating_point(_rows(), target_ra=45)


def test_worst_is_preferred_over_single_attacks():
    rows = _rows() + [{**r, "attack": "worst", "ra": r["ra"] - 0.1} for r in _rows()]
    assert select_operating_point(rows, target_ra=0.45)["lam"] == 1.0


def test_describe_gives_numbers_or_one_line_why_not():
    rows = _rows()
    assert "λ=0.4 width=1: SA 85.00%, RA (pgd20, ε=0.1) 50.00% on val" in describe(
        select_operating_point(rows, target_ra=0.45), rows, target_ra=0.45)
    line = describe(None, rows, target_ra=0.95)
    assert "\n" not in line and line.startswith("no λ and width reaches RA ≥ 95.00%")


def test_cli_target_ra_evaluates_val_when_missing(eval_run, capsys):
    argv = ["evaluate", str(eval_run), "--subset", "40", "--no-checks", "--no-progress"]
    assert main(argv + ["--target-ra", "0.05"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("λ=") and "on val" in out[-1]
    assert {r["split"] for r in read_results(eval_run)["rows"]} == {"val"}
    assert main(argv + ["--target-sa", "1.01"]) == 2  # a fraction, not a percentage
    assert main(argv + ["--target-ra", "1.0"]) in (0, 1)
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(("λ=", "no λ"))
