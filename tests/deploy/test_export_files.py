"""oat.export: a (λ, width) and the λ-input model as ONNX, checked with onnxruntime against PyTorch
at every trained λ and width; the dense safetensors file and its loader; refusals in one line.

Models are untrained but made to disagree across branches: BN statistics and affines are random,
so the clean and adversarial BN of each width differ, and FiLM (the reference form) depends on λ.
"""

import pytest
import torch

import oat
from oat.conditioning import Conditioning
from oat.deploy import LamInputNet, export, file_metadata, load_dense, onnx_logits, verify
from oat.errors import CheckpointError, ConfigError, LamError, OatError, WidthError
from oat.models import create_model
from random_bn import randomise_bn

pytest.importorskip("onnx", reason="ONNX export needs the onnx package (pip install 'oat-torch[export]')")
pytest.importorskip("onnxruntime", reason="checking ONNX files needs onnxruntime (pip install 'oat-torch[export]')")

TOL = 1e-4
WIDTHS = (0.5, 1.0)
# (name, kwargs, image channels, image size, widths): small-cnn on digits, resnet18 at 32×32, OATS models.
CASES = {
    "small-cnn": ("small-cnn", {"base": 8}, 1, 8, (1.0,)),
    "resnet18": ("resnet18", {}, 3, 32, (1.0,)),
    "small-cnn-oats": ("small-cnn", {"base": 8}, 1, 8, WIDTHS),
    "resnet18-oats": ("resnet18", {"base": 16}, 3, 32, WIDTHS),
}




def _model(case, **spec_kw):
    name, kw, cin, size, widths = CASES[case]
    torch.manual_seed(0)
    spec = Conditioning(widths=widths, dim=16, **spec_kw)
    return randomise_bn(create_model(name, spec, in_channels=cin, **kw)).eval(), cin, size


def _images(cin, size, n=2, seed=0):
    return torch.rand(n, cin, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", CASES)
def test_fixed_lam_onnx_matches_pytorch(case, tmp_path):
    model, cin, size = _model(case)
    x = _images(cin, size)
    for w in model.spec.widths:
        for lam in (0.0, 0.2, 1.0):
            path = export(model, tmp_path / f"m-{lam}-{w}.onnx", lam=lam, width=w)
            diff = verify(path, model, x)
            assert list(diff) == [f"{lam:g}"] and diff[f"{lam:g}"] < TOL, (w, lam, diff)


@pytest.mark.parametrize("case", CASES)
def test_lam_input_onnx_matches_pytorch_at_every_trained_lam(case, tmp_path):
    model, cin, size = _model(case)
    x = _images(cin, size, n=6 if "small" in case else 2)
    for w in model.spec.widths:
        path = export(model, tmp_path / f"all-{w}.onnx", lam="input", width=w)
        diffs = verify(path, model, x)
        assert set(diffs) == {f"{v:g}" for v in model.spec.lams} | {"per-example"}
        assert max(diffs.values()) < TOL, (w, diffs)


def test_the_branches_differ_so_the_checks_can_fail():
    # Guards the tests above: a model whose λ did not matter would pass them trivially.
    model, cin, size = _model("small-cnn-oats")
    x = _images(cin, size)
    with torch.no_grad():
        assert (model(x, 0.0) - model(x, 0.1)).abs().max() > 1e-2
        assert (model(x, 0.1) - model(x, 1.0)).abs().max() > 1e-2
        assert (model(x, 1.0, 0.5) - model(x, 1.0)).abs().max() > 1e-2


@pytest.mark.parametrize("encoding", ["one-hot", "dct", "scalar", "continuous"])
def test_lam_input_onnx_for_every_encoding(encoding, tmp_path):
    model, cin, size = _model("small-cnn-oats", encoding=encoding)
    path = export(model, tmp_path / "all.onnx", lam="input", width=0.5)
    assert max(verify(path, model, _images(cin, size, n=6)).values()) < TOL


def test_lam_input_without_film_routes_bn_by_the_nearest_trained_lam(tmp_path):
    model, cin, size = _model("small-cnn-oats", film=False, encoding="none")
    x = _images(cin, size, n=6)
    path = export(model, tmp_path / "all.onnx", lam="input", width=0.5)
    assert max(verify(path, model, x).values()) < TOL
    with torch.no_grad():  # 0.04 is served as λ = 0: the clean BN
        torch.testing.assert_close(onnx_logits(path, x, [0.04]), model(x, 0.0, 0.5), atol=TOL, rtol=0)


@pytest.mark.parametrize("encoding", ["scalar", "continuous"])
def test_lam_input_serves_any_lam_for_continuous_encodings(encoding, tmp_path):
    model, cin, size = _model("small-cnn-oats", encoding=encoding)
    x = _images(cin, size, n=3)
    path = export(model, tmp_path / "all.onnx", lam="input")
    for lam in (0.05, 0.25, 0.77):
        with torch.no_grad():
            expected = model(x, lam)
        torch.testing.assert_close(onnx_logits(path, x, [lam]), expected, atol=TOL, rtol=0)
    # a fixed untrained λ is accepted too, as model.at accepts it
    fixed = export(model, tmp_path / "fixed.onnx", lam=0.25)
    assert verify(fixed, model, x)["0.25"] < TOL


def test_index_encoding_serves_an_untrained_lam_as_its_nearest_trained_lam(tmp_path):
    model, cin, size = _model("small-cnn")
    x = _images(cin, size, n=5)
    path = export(model, tmp_path / "all.onnx", lam="input")
    # 0.04 → 0 (clean BN), 0.07 → 0.1 (adversarial BN), 0.36 → 0.4, and outside [0, 1]: clamped.
    served = {0.04: 0.0, 0.07: 0.1, 0.36: 0.4, 1.5: 1.0, -0.3: 0.0}
    got = onnx_logits(path, x.repeat(len(served), 1, 1, 1), torch.tensor(list(served)).repeat_interleave(5))
    with torch.no_grad():
        expected = torch.cat([model(x, v) for v in served.values()])
    torch.testing.assert_close(got, expected, atol=TOL, rtol=0)
    assert "nearest trained" in file_metadata(path)["oat.lam_rule"]


def test_lam_input_graph_takes_one_lam_for_a_batch_and_any_image_size(tmp_path):
    model, cin, _ = _model("small-cnn-oats")
    path = export(model, tmp_path / "all.onnx", lam="input", width=0.5)
    x = _images(cin, 12, n=4)  # traced at 8×8
    with torch.no_grad():
        expected = model(x, 0.3, 0.5)
    torch.testing.assert_close(onnx_logits(path, x, [0.3]), expected, atol=TOL, rtol=0)


def test_lam_input_module_equals_the_model_in_pytorch():
    model, cin, size = _model("small-cnn-oats")
    x = _images(cin, size, n=6)
    lam = torch.tensor(model.spec.lams)
    for w in WIDTHS:
        with torch.no_grad():
            torch.testing.assert_close(LamInputNet(model, w)(x, lam), model(x, lam, w), atol=1e-5, rtol=0)


def test_onnx_metadata_describes_the_export(tmp_path):
    model, _, _ = _model("small-cnn-oats")
    meta = file_metadata(export(model, tmp_path / "m.onnx", lam=0.4, width=0.5))
    assert meta["oat.lam"] == "0.4" and meta["oat.width"] == "0.5" and meta["oat.input_shape"] == "[1, 32, 32]"
    assert '"small-cnn"' in meta["oat.arch"] and '"widths": [1.0, 0.5]' in meta["oat.conditioning"]


@pytest.mark.parametrize("case", ["small-cnn-oats", "resnet18-oats"])
def test_safetensors_export_rebuilds_with_load_dense(case, tmp_path):
    model, cin, size = _model(case)
    x = _images(cin, size)
    for w in WIDTHS:
        for lam in (0.0, 0.3):
            path = export(model, tmp_path / f"m-{lam}-{w}.safetensors", lam=lam, width=w)
            slim = load_dense(path)
            assert not slim.training and (slim.lam, slim.width) == (lam, w)
            with torch.no_grad():
                torch.testing.assert_close(slim(x), model(x, lam, w), atol=1e-5, rtol=0)


def test_safetensors_holds_a_plain_state_dict_and_its_layers(tmp_path):
    import json

    from safetensors.torch import load_file

    model, _, _ = _model("small-cnn-oats")
    path = export(model, tmp_path / "m.safetensors", lam=1.0, width=0.5)
    tensors, meta = load_file(str(path)), file_metadata(path)
    assert tensors["convs.1.weight"].shape == (8, 4, 3, 3)  # width 0.5 of base 8 → 4 → 8 channels
    assert {"norms.0.bn.weight", "norms.0.bn.running_var", "fc.weight"} <= set(tensors)
    assert not any("film" in k or "bns" in k for k in tensors)  # FiLM folded; one BN left
    layers = json.loads(meta["oat.layers"])
    assert layers["convs.1"]["in_channels"] == 4 and layers["norms.0.bn"]["type"] == "BatchNorm2d"
    assert layers["fc"] == {"type": "Linear", "in_features": 16, "out_features": 10, "bias": True}


def test_load_dense_refuses_other_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    for name in ("other", "junk", "missing"):
        with pytest.raises(CheckpointError):
            load_dense(tmp_path / f"{name}.safetensors")


@pytest.mark.parametrize("kw, error, words", [
    (dict(lam=0.25), LamError, "not in the trained set"),
    (dict(lam=1.5), LamError, "[0, 1]"),
    (dict(lam=0.2, width=0.75), WidthError, "not trained"),
    (dict(lam="input", width=0.75), WidthError, "not trained"),
    (dict(lam="input", format="safetensors"), ConfigError, "--format onnx"),
    (dict(lam="all"), LamError, "[0, 1]"),
    (dict(lam=0.2, format="tflite"), ConfigError, "unknown export format"),
])
def test_untrained_lam_or_width_is_refused_and_nothing_written(kw, error, words, tmp_path):
    model, _, _ = _model("small-cnn-oats")
    with pytest.raises(error, match=None) as e:
        export(model, tmp_path / "m.onnx", **kw)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_a_blend_is_refused(tmp_path):
    model, _, _ = _model("small-cnn")
    model.arch = {**model.arch, "name": "mix-outputs"}  # what oat mix writes; its members are the exports
    with pytest.raises(ConfigError, match="blend"):
        export(model, tmp_path / "m.onnx", lam=0.2)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter, used here as oat uses it
def test_file_metadata_refuses_a_foreign_onnx_file(tmp_path):
    import io

    buf = io.BytesIO()
    torch.onnx.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), buf, dynamo=False)
    (tmp_path / "other.onnx").write_bytes(buf.getvalue())
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    for name in ("other", "junk"):
        with pytest.raises(OatError, match="oat export|not a readable"):
            file_metadata(tmp_path / f"{name}.onnx")


def test_a_dedicated_model_has_no_lam_input(tmp_path):
    torch.manual_seed(0)
    model = create_model("small-cnn", Conditioning.dedicated(0.2), in_channels=1, base=8).eval()
    with pytest.raises(ConfigError, match="λ changes nothing"):
        export(model, tmp_path / "m.onnx", lam="input")
    with pytest.raises(LamError, match="dedicated"):
        export(model, tmp_path / "m.onnx", lam=0.3)
    assert verify(export(model, tmp_path / "m.onnx", lam=0.2), model, _images(1, 8))["0.2"] < TOL


def test_an_existing_file_is_kept_unless_overwrite(tmp_path):
    model, _, _ = _model("small-cnn")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep")
    with pytest.raises(ConfigError, match="exists"):
        export(model, out, lam=0.2)
    assert out.read_bytes() == b"keep"
    oat.export(model, out, lam=0.2, overwrite=True)
    assert file_metadata(out)["oat.lam"] == "0.2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary file left


def test_export_leaves_the_model_alone(tmp_path):
    model, cin, size = _model("small-cnn-oats")
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    export(model, tmp_path / "a.onnx", lam="input", width=0.5)
    export(model, tmp_path / "b.onnx", lam=0.1, width=0.5)
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
