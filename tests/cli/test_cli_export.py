"""``oat export`` on a trained digits OATS run: ONNX at a fixed λ and with λ as an input at both widths,
checked with onnxruntime (``--verify``); safetensors; a λ or width not trained is one line and exit 2."""

import json

import pytest
import torch

import oat
from oat.cli.main import main
from oat.deploy import file_metadata, load_dense, onnx_logits

pytest.importorskip("onnx", reason="ONNX export needs the onnx package (pip install 'oat-torch[export]')")
pytest.importorskip("onnxruntime", reason="checking ONNX files needs onnxruntime (pip install 'oat-torch[export]')")

CFG = dict(data="digits", model="small-cnn", model_kwargs={"base": 8}, objective="oats", widths=[0.5, 1.0],
           epochs=1, attack_steps=0, eps=0.3, device="cpu", amp="off")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return oat.fit(CFG, tmp_path_factory.mktemp("export") / "run", progress=False, evaluate=False,
                   log=lambda *a: None)


def _verified(capsys, argv) -> str:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote ") and "max |Δlogit| vs PyTorch" in out
    return out


@pytest.mark.parametrize("width", ["0.5", "1"])
def test_export_onnx_at_a_fixed_lam_and_with_lam_as_input(run, tmp_path, capsys, width):
    fixed, every = tmp_path / "fixed.onnx", tmp_path / "every.onnx"
    out = _verified(capsys, ["export", str(run), "--lam", "0.2", "--width", width, "--out", str(fixed), "--verify"])
    assert "λ=0.2:" in out
    out = _verified(capsys, ["export", str(run), "--lam", "input", "--width", width, "--out", str(every), "--verify"])
    assert all(f"λ={v:g}:" in out for v in oat.PAPER_LAMS) and "λ=per-example:" in out
    meta = file_metadata(every)
    assert meta["oat.input_shape"] == "[1, 8, 8]" and float(meta["oat.width"]) == float(width)
    model = oat.load(run)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(x, 0.2, float(width))
    torch.testing.assert_close(onnx_logits(fixed, x), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(onnx_logits(every, x, [0.2]), expected, atol=1e-4, rtol=0)


def test_export_safetensors(run, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    _verified(capsys, ["export", str(run), "--lam", "1", "--width", "0.5", "--out", str(out), "--verify"])
    assert json.loads(file_metadata(out)["oat.arch"])["name"] == "small-cnn"
    slim = load_dense(out)
    assert slim.width == 0.5 and sum(p.numel() for p in slim.parameters()) < sum(
        p.numel() for p in oat.load(run).parameters())


@pytest.mark.parametrize("argv, words", [
    (["--lam", "0.25"], "not in the trained set"),
    (["--lam", "0.2", "--width", "0.75"], "width 0.75 was not trained"),
    (["--lam", "input", "--format", "safetensors"], "--format onnx"),
    (["--lam", "2"], "[0, 1]"),
])
def test_untrained_lam_or_width_is_one_line_and_exit_2(run, tmp_path, capsys, argv, words):
    out = tmp_path / "m.onnx"
    assert main(["export", str(run), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("oat: error:") and err.count("\n") == 1 and words in err, err
    assert not out.exists()


def test_an_existing_file_is_refused_without_overwrite(run, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep")
    assert main(["export", str(run), "--lam", "0", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"keep"
    assert main(["export", str(run), "--lam", "0", "--out", str(out), "--overwrite"]) == 0
