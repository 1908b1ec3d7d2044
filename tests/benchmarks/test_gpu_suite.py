"""The GPU suite never rots: its dry run (tiny sizes, CPU) runs every phase and writes its JSON."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gpu_suite  # noqa: E402


def test_phase_caps_fit_a_short_slot():
    assert sum(gpu_suite.CAPS.values()) <= 8 * 60


def test_dry_run_runs_every_phase(tmp_path):
    threads = __import__("torch").get_num_threads()
    try:
        assert gpu_suite.main(["--dry-run", "--out", str(tmp_path)]) == 0
    finally:
        __import__("torch").set_num_threads(threads)
    doc = json.loads((tmp_path / "gpu_suite.json").read_text())
    phases = doc["phases"]
    assert set(phases) == {"matmul", "step", "flops", "sweep", "epoch"}
    assert not any("error" in p for p in phases.values())
    assert {r["setting"] for r in phases["step"]["rows"]} == {"fp32", "bf16+cl"}  # compile: GPU runs only
    assert all(r["images_per_s"] > 0 for r in phases["step"]["rows"])
    assert phases["flops"]["flops_per_step"] > 0 and phases["epoch"]["complete"]
    assert phases["epoch"]["projected_paper_run_h"] > 0
    assert phases["sweep"]["batched_over_per_lam"] > 0
    assert "OAT step" in (tmp_path / "gpu_suite.md").read_text()
