"""``oat train --model-file FILE.py[:FACTORY]``: a user's own CNN trained, evaluated and exported
through the CLI; the run records the file, so it loads, resumes and exports after the file is
edited or deleted; what cannot be built is one line, exit 2, and no run folder."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import oat
from oat.cli.main import build_parser, main
from oat.cli.train import config_from_args

NET = '''"""A user's network: conv-BN-ReLU twice, global average pool, linear."""
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_channels, num_classes, width):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3)))


def build(in_channels, num_classes, width=4):
    return Net(in_channels, num_classes, width)
'''
TRAIN = ["--data", "digits", "--objective", "oat", "--lams", "0", "1", "--epochs", "1", "--eps", "0.3",
         "--device", "cpu", "--no-progress", "--amp", "off", "enc_dim=8", "attack_steps=1"]


def one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert err.startswith("oat: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A converted network trained (1 epoch) and evaluated on a test subset through the CLI."""
    root = tmp_path_factory.mktemp("model-file")
    (root / "mynet.py").write_text(NET)
    out = root / "run"
    assert main(["train", "--model-file", f"{root / 'mynet.py'}:build", "--out", str(out), *TRAIN, "--no-eval",
                 "model_kwargs={width: 6}"]) == 0
    assert main(["evaluate", str(out), "--subset", "30", "--no-checks", "--no-progress"]) == 0
    return out


def test_the_run_records_the_file_and_evaluates_like_any_run(run):
    text = (run.parent / "mynet.py").read_text()
    meta = json.loads((run / "config.json").read_text())
    assert meta["config"]["model"] == "converted" and meta["config"]["model_file"].endswith("mynet.py:build")
    assert meta["network"] == {"copy": "network.py", "file": "mynet.py", "factory": "build",
                               "kwargs": {"width": 6, "in_channels": 1, "num_classes": 10},
                               "sha256": hashlib.sha256(text.encode()).hexdigest()}
    assert (run / "network.py").read_text() == text
    rows = json.loads((run / "results.json").read_text())["rows"]
    assert {r["lam"] for r in rows} == {0.0, 1.0} and all(r["n"] == 30 and r["model"] == "converted"
                                                          for r in rows if "model" in r)
    assert (run / "report.md").exists()


def test_the_run_resumes_and_exports_from_its_record_after_the_file_is_gone(run, tmp_path, capsys):
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = {lam: oat.load(run)(x, lam) for lam in (0.0, 1.0)}
    (run.parent / "mynet.py").write_text("raise SystemExit('edited')\n")  # an edit that would not even run
    assert main(["train", "--out", str(run), "--resume", "--no-eval", "--no-progress"]) == 0
    (run.parent / "mynet.py").unlink()
    # A fresh process (nothing of the file cached) loads the run and exports it.
    onnx = tmp_path / "m.onnx"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    args = ["export", str(run), "--lam", "1", "--out", str(onnx)]
    if _has("onnxruntime"):
        args.append("--verify")
    p = subprocess.run([sys.executable, "-m", "oat", *args], capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    assert onnx.stat().st_size > 0
    with torch.no_grad():
        for lam, logits in before.items():
            assert torch.equal(oat.load(run)(x, lam), logits)


def _has(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


BAD_FILES = {
    "nobn.py": "from torch import nn\n\ndef make_model(**kw):\n    return nn.Sequential(nn.Conv2d(1, 4, 3), "
               "nn.Flatten(), nn.LazyLinear(10))\n",
    "functional.py": NET + """

class F(Net):
    def forward(self, x):
        import torch.nn.functional as fn
        x = fn.batch_norm(self.body[0](x), None, None, training=True)
        return self.head(self.body[2:](x).mean((2, 3)))


def make_model(in_channels, num_classes):
    return F(in_channels, num_classes, 4)
""",
    "sibling.py": "import my_sibling_module_that_is_not_recorded\n\ndef make_model():\n    pass\n",
    "rgb.py": NET + "\n\ndef make_model(**kw):\n    return Net(3, 10, 4)\n",
}


@pytest.mark.parametrize("argv, words", [
    (["--model-file", "{d}/missing.py"], "does not exist"),
    (["--model-file", "{d}/mynet.txt"], "must name a Python file"),
    (["--model-file", "{d}/mynet.py:nothere"], "defines no nothere at its top level; name the factory"),
    (["--model-file", "{d}/mynet.py"], "defines no make_model"),
    (["--model-file", "{d}/mynet.py:build", "--model", "small-cnn"], "give model or model_file, not both"),
    (["--model-file", "{d}/mynet.py:build", "--objective", "oats"], "one width"),
    (["--model-file", "{d}/mynet.py:build", "model_kwargs={depth: 3}"], "build(**{'depth': 3"),
    (["--model-file", "{d}/nobn.py"], "no BatchNorm2d"),
    (["--model-file", "{d}/functional.py"], "batch norm without a BatchNorm2d module"),
    (["--model-file", "{d}/sibling.py"], "failed to run: ModuleNotFoundError"),
    (["--model-file", "{d}/rgb.py"], "a forward pass of a (2, 1, 8, 8) example failed (RuntimeError"),
    (["model=converted"], "give model_file"),
])
def test_a_network_that_cannot_be_built_is_one_line_and_no_run_folder(tmp_path, capsys, argv, words):
    (tmp_path / "mynet.py").write_text(NET)
    for name, text in BAD_FILES.items():
        (tmp_path / name).write_text(text)
    out = tmp_path / "run"
    err = one_line_error(capsys, ["train", "--out", str(out), *TRAIN, *(a.replace("{d}", str(tmp_path)) for a in argv)])
    assert words in err, err
    assert not out.exists()


def test_a_model_file_flag_replaces_the_recipe_s_model(tmp_path):
    args = build_parser().parse_args(["train", "--recipe", "digits-small-oat", "--model-file", "net.py:build"])
    cfg = config_from_args(args)
    assert (cfg.model, cfg.model_file) == ("converted", "net.py:build")
    args = build_parser().parse_args(["train", "--recipe", "digits-small-oat", "model=resnet18"])
    assert config_from_args(args).model == "resnet18"
