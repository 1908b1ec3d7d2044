"""Bad input, tried on purpose: each ends in one clear line on stderr, a non-zero exit, no
traceback, and no change to existing files (the folders involved are hashed before/after)."""

from __future__ import annotations

import errno
import gzip
import hashlib
import importlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from oat.cli.main import main

TRAIN = ["--no-eval", "--no-progress", "--epochs", "1", "attack_steps=0"]
EVAL = ["--no-progress", "--subset", "10", "--attacks", "fgsm"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("bad") / "run"
    assert main(["train", "--out", str(run), "val_size=1000", *TRAIN]) == 0
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A private copy of the trained run, free to damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def tree_hash(*folders) -> str:
    h = hashlib.sha256()
    for folder in folders:
        if folder is None or not Path(folder).exists():
            h.update(b"absent")
            continue
        for p in sorted(Path(folder).rglob("*")):
            h.update(str(p.relative_to(folder)).encode())
            if p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


def refused(capsys, argv, *folders) -> str:
    """Run ``oat argv`` in-process; assert one ``oat: error:`` line, exit != 0, folders unchanged."""
    before = tree_hash(*folders)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("oat: error:"), err
    assert tree_hash(*folders) == before
    return lines[0]


# --------------------------------------------------------------------------- data files
def idx(array: np.ndarray, code: int = 8) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_mnist(root: Path, n: int = 40, shape=(28, 28), label_max: int = 10, code: int = 8) -> Path:
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", n), ("t10k", 10)):
        images = rng.integers(0, 256, (count, *shape), dtype=np.uint8)
        labels = (np.arange(count) % label_max).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx(images, code)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(labels)))
    return folder


def train_mnist(root: Path, *extra: str) -> list[str]:
    return ["train", "--data", "mnist", "--data-dir", str(root), "--out", str(root / "out"), "val_size=10",
            *TRAIN, *extra]


def test_missing_data_files(tmp_path, capsys):
    assert "mnist" in refused(capsys, train_mnist(tmp_path), tmp_path)


def test_empty_data_file(tmp_path, capsys):
    folder = write_mnist(tmp_path)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"")
    refused(capsys, train_mnist(tmp_path), tmp_path)


def test_truncated_data_file(tmp_path, capsys):
    folder = write_mnist(tmp_path)
    f = folder / "train-labels-idx1-ubyte.gz"
    f.write_bytes(gzip.compress(gzip.decompress(f.read_bytes())[:-5]))
    assert "truncated" in refused(capsys, train_mnist(tmp_path), tmp_path)


def test_corrupted_data_file(tmp_path, capsys):
    folder = write_mnist(tmp_path)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip " * 10)
    refused(capsys, train_mnist(tmp_path), tmp_path)


def test_corrupted_cifar_batch(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(os.urandom(300))
    argv = ["train", "--data", "cifar10", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"), *TRAIN]
    refused(capsys, argv, tmp_path)


def test_wrong_image_shape(tmp_path, capsys):
    write_mnist(tmp_path, shape=(27, 27))
    assert "28" in refused(capsys, train_mnist(tmp_path), tmp_path)


def test_wrong_dtype(tmp_path, capsys):
    write_mnist(tmp_path, code=0x0D)  # IDX type code of float32
    refused(capsys, train_mnist(tmp_path), tmp_path)


def test_label_out_of_range(tmp_path, capsys):
    write_mnist(tmp_path, label_max=13)
    assert "label" in refused(capsys, train_mnist(tmp_path), tmp_path).lower()


def test_empty_data_set(tmp_path, capsys):
    write_mnist(tmp_path, n=0)
    refused(capsys, train_mnist(tmp_path), tmp_path)


def test_batch_larger_than_data(tmp_path, capsys):
    write_mnist(tmp_path)
    assert "batch size" in refused(capsys, train_mnist(tmp_path, "--batch-size", "1000"), tmp_path)


# --------------------------------------------------------------------------- checkpoints
def ckpt_of(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


def test_checkpoint_truncated(run, capsys):
    f = ckpt_of(run) / "model.safetensors"
    f.write_bytes(f.read_bytes()[:200])
    assert "truncated or corrupt" in refused(capsys, ["evaluate", str(run), *EVAL], run)


def test_checkpoint_state_corrupted(run, capsys):
    (ckpt_of(run) / "state.json").write_text('{"format_version": 1, "arch": ')
    refused(capsys, ["train", "--out", str(run), "--resume", *TRAIN], run)


def test_checkpoint_of_another_architecture(run, capsys):
    from safetensors.torch import save_file

    from oat.conditioning import Conditioning
    from oat.models import create_model

    other = create_model("resnet18", Conditioning(), in_channels=1, num_classes=10)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(ckpt_of(run) / "model.safetensors"))
    assert "another architecture" in refused(capsys, ["evaluate", str(run), *EVAL], run)


def test_checkpoint_of_another_conditioning_spec(run, capsys):
    f = ckpt_of(run) / "state.json"
    doc = json.loads(f.read_text())
    doc["conditioning"]["lams"] = [0.0, 0.5, 1.0]
    f.write_text(json.dumps(doc))
    refused(capsys, ["evaluate", str(run), *EVAL], run)


def test_checkpoint_newer_format(run, capsys):
    f = ckpt_of(run) / "state.json"
    doc = json.loads(f.read_text())
    doc["format_version"] = 99
    f.write_text(json.dumps(doc))
    assert "newer" in refused(capsys, ["evaluate", str(run), *EVAL], run)


class Payload:
    """Unpickling this runs ``os.mkdir(marker)``: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_checkpoint_is_never_unpickled(run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    blob = pickle.dumps(Payload(str(marker)))
    (tmp_path / "model.pt").write_bytes(blob)
    refused(capsys, ["evaluate", str(tmp_path / "model.pt"), *EVAL], run)
    (ckpt_of(run) / "model.safetensors").write_bytes(blob)
    (ckpt_of(run) / "optimizer.safetensors").write_bytes(blob)
    refused(capsys, ["train", "--out", str(run), "--resume", *TRAIN], run)
    refused(capsys, ["evaluate", str(run), *EVAL], run)
    assert not marker.exists()


# --------------------------------------------------------------------------- λ, width, config
def test_lam_outside_unit_interval(run, tmp_path, capsys):
    refused(capsys, ["train", "--out", str(tmp_path / "o"), "--lams", "0", "1.5", *TRAIN], tmp_path / "o")
    refused(capsys, ["evaluate", str(run), "--lams", "-0.1", *EVAL], run)


def test_lam_not_supported_by_encoding(run, capsys):
    assert "0.25" in refused(capsys, ["evaluate", str(run), "--lams", "0.25", *EVAL], run)


def test_width_not_trained(run, capsys):
    refused(capsys, ["evaluate", str(run), "--widths", "0.5", *EVAL], run)


def test_unknown_config_key(tmp_path, capsys):
    assert "unknown config key" in refused(capsys, ["train", "--out", str(tmp_path / "o"), "epochz=3"], tmp_path)


def test_config_value_of_wrong_type(tmp_path, capsys):
    assert "expects int" in refused(capsys, ["train", "--out", str(tmp_path / "o"), "epochs=three"], tmp_path)


def test_run_folder_already_holds_a_run(run, capsys):
    assert "--resume" in refused(capsys, ["train", "--out", str(run), *TRAIN], run)


def test_resume_without_a_run(tmp_path, capsys):
    refused(capsys, ["train", "--out", str(tmp_path), "--resume", *TRAIN], tmp_path)


# --------------------------------------------------------------------------- disks
def test_read_only_output_folder(tmp_path, capsys, monkeypatch):
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **kw):
        if tmp_path in self.parents or self == tmp_path / "o":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    line = refused(capsys, ["train", "--out", str(tmp_path / "o"), "val_size=1000", *TRAIN], tmp_path)
    assert "read-only" in line


def test_full_disk_while_checkpointing_keeps_previous(run, capsys, monkeypatch):
    ck = importlib.import_module("oat.checkpoint")

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), a[1] if len(a) > 1 else None)

    doc = json.loads((run / "config.json").read_text())
    doc["config"]["epochs"] = 2  # continue for one more epoch, whose checkpoint cannot be written
    (run / "config.json").write_text(json.dumps(doc))
    monkeypatch.setattr(ck, "save_file", full)
    before_ckpt = tree_hash(run / "checkpoints")
    assert "disk is full" in refused(capsys, ["train", "--out", str(run), "--resume", *TRAIN])
    assert tree_hash(run / "checkpoints") == before_ckpt  # no half-written checkpoint, previous intact


def test_full_disk_while_writing_results(run, capsys, monkeypatch):
    ck = importlib.import_module("oat.checkpoint")

    def full(fd, *a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ck.os, "fsync", full)
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert "disk is full" in refused(capsys, ["evaluate", str(run), *EVAL])
    # evaluation may leave its resume journal (by design); every file that existed is intact
    assert all(p.read_bytes() == b for p, b in files.items())
    assert not (run / "results.json").exists() or "results.json" in {p.name for p in files}


# --------------------------------------------------------------------------- a real process
def test_subprocess_one_line_no_traceback(run):
    before = tree_hash(run)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "oat", "evaluate", str(run), "--lams", "7", *EVAL],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("oat: error:") and "Traceback" not in proc.stderr
    assert tree_hash(run) == before
