"""Checkpoints: safetensors + JSON folders, identical logits after a round trip, no pickles."""

import json
import pickle
import shutil

import pytest
import torch

import oat
from oat import checkpoint as ck
from oat.checkpoint import FORMAT_VERSION, load_model, resolve_checkpoint, save_checkpoint
from oat.cli.main import main
from oat.conditioning import Conditioning
from oat.errors import CheckpointError


@pytest.fixture
def trained(tiny_model):
    """The tiny model after a few SGD steps (non-trivial BN statistics in both BNs)."""
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(tiny_model.parameters(), lr=0.1, momentum=0.9)
    tiny_model.train()
    for _ in range(3):
        x, y = torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        lam = torch.tensor([0.0, 0.0, 0.0] + [0.1, 0.2, 0.3, 0.4, 1.0] * 2 + [1.0, 0.1, 0.2])
        loss = torch.nn.functional.cross_entropy(tiny_model(x, lam), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tiny_model, opt


@pytest.fixture
def saved(trained, tmp_path):
    model, opt = trained
    save_checkpoint(tmp_path / "checkpoints", "epoch-0001", model, opt, {"epoch": 1, "step": 3})
    return tmp_path, model


def _one_line_error(fn):
    with pytest.raises(CheckpointError) as e:
        fn()
    assert "\n" not in str(e.value) and str(e.value)
    return str(e.value)


def test_round_trip_gives_identical_logits_at_every_lam(saved):
    run, model = saved
    loaded = load_model(run)
    assert not loaded.training
    model.eval()
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for lam in model.spec.lams:
            assert torch.equal(loaded(x, lam), model(x, lam))
        mixed = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 1.0, 0.0, 1.0, 0.3, 0.1])
        assert torch.equal(loaded(x, mixed), model(x, mixed))
    assert loaded.spec == model.spec
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_every_path_form_loads_the_same_checkpoint(saved):
    run, _ = saved
    ckpt = run / "checkpoints" / "epoch-0001"
    for p in (run, run / "checkpoints", ckpt, ckpt / "model.safetensors", ckpt / "state.json"):
        assert resolve_checkpoint(p) == ckpt
    assert isinstance(oat.load(run), oat.models.ConditionedNet)


def test_state_json_is_self_describing(saved):
    run, model = saved
    doc = json.loads((run / "checkpoints" / "epoch-0001" / "state.json").read_text())
    assert doc["format_version"] == FORMAT_VERSION
    assert doc["arch"] == {"name": "small-cnn", "in_channels": 1, "num_classes": 10, "kwargs": {"base": 8}}
    assert Conditioning.from_dict(doc["conditioning"]) == model.spec
    assert doc["epoch"] == 1 and "param_groups" in doc["optimizer"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "epoch-0001"


def test_channels_last_model_round_trips(trained, tmp_path):
    model, _ = trained
    model = model.to(memory_format=torch.channels_last).eval()
    save_checkpoint(tmp_path / "checkpoints", "epoch-0001", model)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path)(x, 0.4), model(x, 0.4))


def test_optimizer_state_round_trips(saved, trained):
    run, model = saved
    _, opt = trained
    fresh = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    ckpt = resolve_checkpoint(run)
    ck.load_optimizer(fresh, ckpt, ck.read_state(ckpt))
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i, st in a["state"].items():
        assert torch.equal(st["momentum_buffer"], b["state"][i]["momentum_buffer"])


def test_keeps_the_newest_and_latest_points_at_it(trained, tmp_path):
    model, _ = trained
    root = tmp_path / "checkpoints"
    for e in range(1, 5):
        save_checkpoint(root, f"epoch-{e:04d}", model, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["epoch-0003", "epoch-0004", "latest"]
    assert resolve_checkpoint(tmp_path).name == "epoch-0004"


def test_a_crash_mid_write_keeps_the_previous_checkpoint(saved, monkeypatch):
    run, model = saved

    def crash(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck, "save_file", crash)
    with pytest.raises(OSError):
        save_checkpoint(run / "checkpoints", "epoch-0002", model)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch-0001", "latest"]
    load_model(run)


def test_truncated_weights(saved):
    run, _ = saved
    f = run / "checkpoints" / "epoch-0001" / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert "truncated or corrupt" in _one_line_error(lambda: load_model(run))


def test_corrupt_state_json(saved):
    run, _ = saved
    f = run / "checkpoints" / "epoch-0001" / "state.json"
    f.write_text(f.read_text()[:100])
    assert "state.json" in _one_line_error(lambda: load_model(run))
    f.write_text("[1, 2]")
    _one_line_error(lambda: load_model(run))


def test_missing_files(saved, tmp_path):
    run, _ = saved
    _one_line_error(lambda: load_model(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no checkpoint" in _one_line_error(lambda: load_model(empty))
    (run / "checkpoints" / "epoch-0001" / "model.safetensors").unlink()
    assert "model.safetensors" in _one_line_error(lambda: load_model(run))


def test_weights_of_another_architecture(saved, tmp_path):
    run, _ = saved
    other = oat.create_model("wrn-16-1", Conditioning(dim=16), in_channels=1)
    save_checkpoint(tmp_path / "other" / "checkpoints", "epoch-0001", other)
    # state.json says small-cnn, the weights are a WRN's.
    shutil.copy(tmp_path / "other" / "checkpoints" / "epoch-0001" / "model.safetensors",
                run / "checkpoints" / "epoch-0001" / "model.safetensors")
    assert "another architecture" in _one_line_error(lambda: load_model(run))


def test_unknown_architecture_or_newer_format(saved):
    run, _ = saved
    f = run / "checkpoints" / "epoch-0001" / "state.json"
    doc = json.loads(f.read_text())
    f.write_text(json.dumps({**doc, "arch": {**doc["arch"], "name": "resnet-9000"}}))
    assert "cannot build" in _one_line_error(lambda: load_model(run))
    f.write_text(json.dumps({**doc, "format_version": FORMAT_VERSION + 1}))
    assert "newer" in _one_line_error(lambda: load_model(run))


class _Payload:
    """Unpickling this creates a marker file: a stand-in for arbitrary code execution."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _evil_files(tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "model.pt"
    torch.save({"state_dict": _Payload(marker)}, evil)
    # The payload is live: an unsafe load would run it (checked elsewhere, then removed).
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe)))
    assert probe.exists()
    return evil, marker


def test_pickles_are_never_loaded(tmp_path, capsys):
    evil, marker = _evil_files(tmp_path)
    _one_line_error(lambda: oat.load(evil))
    # A pickle disguised as the weights of a checkpoint folder.
    ckpt = tmp_path / "run" / "checkpoints" / "epoch-0001"
    ckpt.mkdir(parents=True)
    shutil.copy(evil, ckpt / "model.safetensors")
    model = oat.create_model("small-cnn", Conditioning(dim=16), in_channels=1, base=8)
    doc = {"format_version": 1, "arch": model.arch, "conditioning": model.spec.to_dict()}
    (ckpt / "state.json").write_text(json.dumps(doc))
    (ckpt.parent / "latest").write_text("epoch-0001\n")
    _one_line_error(lambda: oat.load(tmp_path / "run"))
    for target in (evil, tmp_path / "run"):
        assert main(["evaluate", str(target), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("oat: error:") and err.count("\n") == 1
    assert not marker.exists()
