"""The benchmarks' shared helpers count as the library does."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import common  # noqa: E402

from oat.data import ArrayDataset  # noqa: E402


def test_pgd_accuracy_counts_an_example_robust_only_if_it_is_also_clean_correct(monkeypatch):
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 2, 2).contiguous()
    labels = torch.tensor([1, 1])
    ds = ArrayDataset(images, labels, 2)

    def predict(x):
        # Class 1 for bright images: the bright one is right and the dark one wrong, clean.
        s = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([1 - s, s], dim=1) * 10

    assert common.clean_accuracy(predict, ds, torch.device("cpu")) == 0.5
    # An "attack" that inverts the images: the dark (clean-wrong) image becomes right, the bright wrong.
    import oat.attacks

    monkeypatch.setattr(oat.attacks, "pgd", lambda predict, x, y, **kw: 1 - x)
    assert common.pgd_accuracy(predict, ds, torch.device("cpu"), eps=0.1, steps=1) == 0.0


def test_recorded_commands_name_no_machine_path(tmp_path):
    repo = common.RESULTS.parents[1]
    argv = ["--threads", "1", "--out", str(repo / "benchmarks" / "results"), f"--runs={tmp_path / 'cache'}",
            "--n", "200", "relative/dir"]
    assert common.portable_argv(argv) == ["--threads", "1", "--out", "benchmarks/results", "--runs=cache",
                                          "--n", "200", "relative/dir"]
