"""Compute per width (FLOPs, parameters, latency) and the OATS part of the report."""

import json

import pytest
import torch

from oat.conditioning import Conditioning
from oat.evaluate.cost import add_cost, count_flops, count_params, measure_latency, width_cost
from oat.evaluate.plots_oats import oats_section
from oat.evaluate.report import write_report
from oat.models import create_model
from oat.models.export import export

WIDTHS = (0.5, 0.75, 1.0)


@pytest.fixture(scope="module")
def oats_model():
    torch.manual_seed(0)
    return create_model("small-cnn", Conditioning(widths=WIDTHS, dim=16), in_channels=1, base=8).eval()


def test_count_flops_of_a_known_convolution():
    conv = torch.nn.Conv2d(1, 4, 3, padding=1, bias=False)
    assert count_flops(conv, (1, 1, 8, 8)) == 2 * 4 * 9 * 64  # a multiply-add is 2 FLOPs


def test_flops_params_fall_with_width(oats_model):
    costs = [width_cost(oats_model, w, (1, 8, 8), latency_batch=0) for w in WIDTHS]
    flops, params = [c["flops"] for c in costs], [c["params"] for c in costs]
    assert flops[0] < flops[1] < flops[2] and params[0] < params[1] < params[2]
    # convolutions dominate: half the channels in and out is about a quarter of the FLOPs
    assert flops[0] < 0.4 * flops[2]
    assert costs[0]["latency_ms"] is None


def test_bound_module_computes_only_the_slim_network(oats_model):
    # Per image, at() costs exactly what the exported slim network costs (FiLM's MLP runs
    # once per call, not per image, so it cancels in the difference of two batch sizes).
    for w in WIDTHS:
        bound = oats_model.at(0.3, w)
        per_image = count_flops(bound, (2, 1, 8, 8)) - count_flops(bound, (1, 1, 8, 8))
        assert per_image == count_flops(export(oats_model, 0.3, w), (1, 1, 8, 8))


def test_latency_is_measured_per_batch(oats_model):
    c = width_cost(oats_model, 0.5, (1, 8, 8), latency_batch=16, repeats=3)
    assert c["latency_batch"] == 16 and c["latency_ms"] > 0
    assert measure_latency(torch.nn.Identity(), (2, 3), repeats=2, warmup=1) >= 0


def test_add_cost_gives_each_row_its_widths_cost(oats_model):
    rows = [{"lam": lam, "width": w} for w in WIDTHS for lam in (0.0, 1.0)]
    add_cost(rows, oats_model, (1, 8, 8), latency_batch=4, repeats=1)
    by_w = {}
    for r in rows:
        assert {"flops", "params", "latency_ms", "latency_batch"} <= set(r)
        by_w.setdefault(r["width"], set()).add((r["flops"], r["params"]))
    assert all(len(v) == 1 for v in by_w.values())  # the cost does not depend on λ
    assert by_w[0.5] != by_w[1.0]
    assert rows[-1]["params"] == count_params(export(oats_model, 1.0, 1.0))


def _write(run, rows, objective, width_default=None):
    run.mkdir(parents=True)
    full = [{"split": "test", "attack": "pgd20", "eps": 0.3, "n": 100, "width": width_default, **r} for r in rows]
    (run / "results.json").write_text(json.dumps({"objective": objective, "model": "small-cnn", "data": "digits",
                                                  "eps": 0.3, "seed": 0, "rows": full}))


def test_report_of_a_slimmable_run_shows_cost_and_dedicated_slim_models(tmp_path):
    oats, ded_slim, ded_full = tmp_path / "oats", tmp_path / "ded-w0.5", tmp_path / "ded-full"
    cost = {1.0: (400_000, 9000), 0.5: (110_000, 2500)}
    _write(oats, [{"lam": lam, "width": w, "sa": 0.9 - 0.2 * lam - (1 - w) * 0.1, "ra": 0.1 + 0.4 * lam,
                   "flops": cost[w][0], "params": cost[w][1], "latency_ms": 1.5 * w, "latency_batch": 128}
                  for w in cost for lam in (0.0, 1.0)], "oats")
    _write(ded_slim, [{"lam": 1.0, "width": 0.5, "sa": 0.6, "ra": 0.45, "flops": 110_000, "params": 2500,
                       "latency_ms": 0.7, "latency_batch": 128}], "pgdat")
    _write(ded_full, [{"lam": 1.0, "sa": 0.65, "ra": 0.5}], "pgdat")
    text = write_report([oats, ded_slim, ded_full]).read_text()
    assert "## Accuracy, robustness and compute (OATS)" in text
    assert "| 0.5 | 0.110 | 2,500 | 0.75 | 128 |" in text  # the cost of width 0.5
    # OATS at (λ=1, w=0.5) beside the dedicated slim model: RA 50.00 vs 45.00
    assert "| 1 | 0.5 | 65.00 | 50.00 | 60.00 | 45.00 | 5.00 | 5.00 |" in text
    # the full-width comparison does not set the slim baseline against OATS's full width
    assert "| 1 | 1 | 70.00 | 50.00 | 65.00 | 50.00 | 5.00 | 0.00 |" in text
    assert "| 1 | 0.5 | 65.00 | 50.00 | – | – | – | – |" in text
    for png in ("ra_vs_flops.png", "tradeoff_per_width.png", "tradeoff.png"):
        assert (oats / png).stat().st_size > 1000


def test_no_oats_section_without_cost(tmp_path):
    assert oats_section([{"lam": 0.0, "width": None, "sa": 0.9, "ra": 0.1}], [], "test", "pgd20", tmp_path) == []
