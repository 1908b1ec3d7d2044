"""oat.convert: a residual CNN written here (torchvision's BasicBlock, with a downsample shortcut)
becomes an OAT model that trains on digits with the trade-off, round-trips through oat.load
bit-equal at every λ, exports, and refuses in one line what it cannot convert.

The factory ``make_resnet`` is recorded by its file: this test file, which oat.load runs again
(as a module of its own) to rebuild the network.
"""

import copy
import hashlib
import json
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import oat
from oat.conditioning import Conditioning
from oat.data import load_data
from oat.errors import CheckpointError, ConfigError, ConvertError
from oat.evaluate.sweep import sweep, to_rows
from oat.models import ConvertedNet, ConvertOptions
from oat.nn import Norm


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: conv-BN-ReLU-conv-BN, plus a (conv-BN) downsample shortcut."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, in_channels=1, num_classes=10, width=16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = nn.Sequential(BasicBlock(width, width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, stride=2))
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def make_resnet(in_channels=1, num_classes=10, width=16):
    return ResNet(in_channels, num_classes, width)


SPEC = Conditioning(lams=(0.0, 1.0), dim=16, film_form="identity")
# ~25 s of one CPU core. The identity FiLM form: with the reference form's leaky_relu scale this
# residual net learns next to nothing in 8 epochs (measured: SA 10% at λ = 1). Measured (seeds 0, 1):
# SA 98.6/99.4% at λ = 0 vs 95.8/95.8% at λ = 1; PGD-20 RA 1.7/0.3% vs 17.2/14.7%.
CFG = dict(data="digits", objective="oat", lams=[0.0, 1.0], enc_dim=16, film_form="identity", eps=0.3, epochs=8,
           batch_size=64, attack_steps=3, seed=0, device="cpu", amp="off", channels_last=False)
QUIET = dict(progress=False, log=lambda *a: None)


def _x(n=6, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _one_line(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def _randomised(net):
    """Every BN branch with its own statistics and affine, so clean and adversarial BN disagree."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t in (m.weight, m.bias, m.running_mean):
                    t.copy_(torch.randn(t.shape, generator=g) * 0.3 + (1.0 if t is m.weight else 0.0))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return net.eval()


# --------------------------------------------------------------------------- the conversion
def test_every_batchnorm_becomes_dual_bn_and_film_started_from_it():
    torch.manual_seed(0)
    user = _randomised(make_resnet())
    net = oat.convert(user, SPEC)
    assert isinstance(net, ConvertedNet) and net.arch["in_channels"] == 1 and net.num_classes == 10
    norms = {n: m for n, m in net.named_modules() if isinstance(m, Norm)}
    assert len(norms) == sum(isinstance(m, nn.BatchNorm2d) for m in user.modules()) == 6
    # As the reference: FiLM after every main-path BN, none after the shortcut's.
    assert [n for n, m in norms.items() if m.film is None] == ["net.layer2.0.downsample.1.norm"]
    bn = user.layer1[0].bn2
    for branch in net.net.layer1[0].bn2.norm.bn.bns[0]:
        for key in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(getattr(branch, key), getattr(bn, key)), key
    # The user's module is copied, not changed.
    assert isinstance(user.layer1[0].bn2, nn.BatchNorm2d) and user(_x()).shape == (6, 10)
    # With identity FiLM (zero at start) and both branches copied, every λ is the user's network.
    torch.testing.assert_close(net(_x(), 1.0), user(_x()), rtol=0, atol=1e-6)


def test_the_lam_context_reaches_the_replaced_layers_without_editing_forward():
    torch.manual_seed(0)
    net = _randomised(oat.convert(make_resnet(), Conditioning(lams=(0.0, 0.5, 1.0), dim=16)))
    x = _x()
    with torch.no_grad():
        per_lam = {lam: net(x, lam) for lam in (0.0, 0.5, 1.0)}
        assert not torch.allclose(per_lam[0.0], per_lam[1.0]) and not torch.allclose(per_lam[0.5], per_lam[1.0])
        lam = torch.tensor([0.0, 1.0, 0.5, 0.0, 1.0, 0.5])
        mixed = net(x, lam)  # per-example λ: each row as its λ alone
        for i, v in enumerate(lam.tolist()):
            torch.testing.assert_close(mixed[i], per_lam[v][i], rtol=0, atol=1e-5)
        predict = net.predictor(1.0)  # attacks: one context, many calls
        for _ in range(3):
            torch.testing.assert_close(predict(x), per_lam[1.0], rtol=0, atol=1e-5)
        torch.testing.assert_close(net.at(0.5)(x), per_lam[0.5], rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="outside the network's forward"):
        net.net(x)  # no context is left behind after a forward


def test_the_context_is_the_network_s_own_and_per_thread():
    torch.manual_seed(0)
    a = _randomised(oat.convert(make_resnet(), Conditioning(lams=(0.0, 1.0), dim=16)))
    b = copy.deepcopy(a)
    assert b.net.bn1._slot is b._slot and b._slot is not a._slot
    x = _x()
    with torch.no_grad():
        want = {0.0: a(x, 0.0), 1.0: a(x, 1.0)}
        # Forwards of a itself and of its copy at λ = 0 inside a's forward at λ = 1 (a hook, as a tool
        # that inspects features might) leave λ = 1 in force for a's later layers.
        depth = []

        def nested(*_):
            if not depth:  # once: a's nested forward passes this hook too
                depth.append(1)
                a(x, 0.0)
                b(x, 0.0)

        handle = a.net.layer1.register_forward_hook(nested)
        try:
            torch.testing.assert_close(a(x, 1.0), want[1.0], rtol=0, atol=0)
        finally:
            handle.remove()
    bad = []

    def worker(lam):
        with torch.no_grad():
            for _ in range(20):
                if not torch.equal(a(x, lam), want[lam]):
                    bad.append(lam)

    threads = [threading.Thread(target=worker, args=(lam,)) for lam in (0.0, 1.0, 0.0, 1.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


class NoBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.conv(x), 1).flatten(1))


class FunctionalBatchNorm(ResNet):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(16))
        self.register_buffer("var", torch.ones(16))

    def forward(self, x):
        x = F.relu(F.batch_norm(self.conv1(x), self.mean, self.var))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TwoOutputs(ResNet):
    def forward(self, x):
        return super().forward(x), x


def _with(layer_name, layer):
    net = make_resnet()
    setattr(net.layer1[0], layer_name, layer)
    return net


@pytest.mark.parametrize("module, spec, words", [
    (NoBatchNorm(), SPEC, ["no BatchNorm2d", "nothing to convert"]),
    (FunctionalBatchNorm(), SPEC, ["the module's forward", "batch norm without a BatchNorm2d module"]),
    (_with("bn2", nn.BatchNorm1d(16)), SPEC, ["layer1.0.bn2 is a BatchNorm1d", "no other normalisation"]),
    (_with("bn2", nn.GroupNorm(4, 16)), SPEC, ["layer1.0.bn2 is a GroupNorm"]),
    (_with("bn2", nn.LayerNorm([16, 8, 8])), SPEC, ["is a LayerNorm"]),
    (_with("bn2", nn.BatchNorm2d(16, affine=False)), SPEC, ["without affine parameters"]),
    (_with("bn2", nn.BatchNorm2d(16, track_running_stats=False)), SPEC, ["without running statistics"]),
    (make_resnet(), Conditioning(widths=(1.0, 0.5)), ["cannot make them slimmable", "OATS"]),
    (oat.create_model("small-cnn", SPEC, in_channels=1), SPEC, ["already an oat model"]),
    (TwoOutputs(), SPEC, ["logits of shape (N, classes)"]),
])
def test_what_cannot_be_converted_is_refused_in_one_line(module, spec, words):
    with pytest.raises(ConvertError) as e:
        oat.convert(module, spec)
    _one_line(e, *words)


def test_a_network_that_does_not_run_at_the_default_size_needs_its_input_shape():
    class Fixed(ResNet):  # a linear layer sized for 8×8 feature maps
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(32 * 4 * 4, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))), 1))

    with pytest.raises(ConvertError) as e:
        oat.convert(Fixed(), SPEC)
    _one_line(e, "(2, 1, 32, 32)", "input_shape=(C, H, W)")
    net = oat.convert(Fixed(), SPEC, ConvertOptions(input_shape=(1, 8, 8)))
    assert net(_x(), 0.0).shape == (6, 10)


def test_a_factory_that_cannot_be_recorded_is_refused():
    def local_factory():
        return make_resnet()

    with pytest.raises(ConvertError) as e:
        oat.convert(local_factory, SPEC)
    _one_line(e, "not defined at the top level of a file")
    with pytest.raises(ConvertError) as e:
        oat.convert(make_resnet, SPEC, kwargs={"width": object()})
    _one_line(e, "must be JSON values")


# --------------------------------------------------------------------------- training, loading, export
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    torch.manual_seed(0)
    net = oat.convert(make_resnet, SPEC)
    run = oat.fit(CFG, root / "run", model=net, evaluate=False, **QUIET)
    return run, net.eval()


def test_a_converted_resnet_trains_with_the_tradeoff(trained):
    run, _ = trained
    result = sweep(oat.load(run), load_data("digits").test, lams=[0.0, 1.0], widths=[None], attacks=["pgd20"],
                   eps=CFG["eps"], seed=0)
    rows = {r["lam"]: r for r in to_rows(result, eps=CFG["eps"], split="test", slimmable=False)}
    assert rows[0.0]["n"] == 360 and rows[0.0]["sa"] > 0.9
    assert rows[0.0]["sa"] > rows[1.0]["sa"]
    assert rows[1.0]["ra"] > rows[0.0]["ra"] + 0.05


def test_the_run_records_the_source_and_loads_bit_equal_at_every_lam(trained):
    run, net = trained
    text = open(__file__, encoding="utf-8").read()
    meta = json.loads((run / "config.json").read_text())
    assert meta["config"]["model"] == "converted" and meta["network"]["factory"] == "make_resnet"
    assert meta["network"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert (run / "network.py").read_text(encoding="utf-8") == text
    loaded = oat.load(run)
    assert type(loaded.net) is not ResNet  # rebuilt from the recorded text, not from this module
    x = load_data("digits").test.images[:64].float() / 255.0
    with torch.no_grad():
        for lam in SPEC.lams:
            assert torch.equal(loaded(x, lam), net(x, lam)), lam
            assert torch.equal(loaded.at(lam)(x), net.at(lam)(x)), lam
    again = oat.load(run, module=make_resnet)  # the user's own factory instead of the record
    with torch.no_grad():
        assert torch.equal(again(x, 1.0), net(x, 1.0))


def test_loading_with_a_module_of_another_architecture_is_refused(trained):
    run, _ = trained
    with pytest.raises(CheckpointError) as e:
        oat.load(run, module=make_resnet(width=8))
    _one_line(e, "another architecture")
    with pytest.raises(CheckpointError) as e:
        oat.load(run, module=NoBatchNorm())
    _one_line(e, "no BatchNorm2d")


def test_a_converted_model_exports_at_a_fixed_lam(trained, tmp_path):
    run, net = trained
    x = _x(4)
    path = oat.export(run, tmp_path / "m.safetensors", lam=1.0)
    from oat.deploy import load_dense

    with torch.no_grad():
        torch.testing.assert_close(load_dense(path)(x), net(x, 1.0), rtol=0, atol=1e-5)
    pytest.importorskip("onnxruntime", reason="checking ONNX files needs onnxruntime")
    from oat.deploy import onnx_logits

    every = oat.export(net, tmp_path / "every.onnx", lam="input")
    with torch.no_grad():
        for lam in SPEC.lams:
            torch.testing.assert_close(onnx_logits(every, x, [lam]), net(x, lam), rtol=0, atol=1e-4)


def test_fit_refuses_a_network_its_run_could_not_rebuild(tmp_path):
    with pytest.raises(ConfigError) as e:
        oat.fit(CFG, tmp_path / "a", model=oat.convert(make_resnet(), SPEC), evaluate=False, **QUIET)
    _one_line(e, "converted from a module instance")
    with pytest.raises(ConfigError) as e:
        oat.fit(CFG, tmp_path / "b", model=oat.convert(make_resnet, Conditioning(lams=(0.0, 0.5, 1.0), dim=16,
                                                                                  film_form="identity")),
                evaluate=False, **QUIET)
    _one_line(e, "conditioning differs", "lams")
    with pytest.raises(ConfigError) as e:
        oat.fit({**CFG, "model": "resnet18"}, tmp_path / "c", model=make_resnet, evaluate=False, **QUIET)
    _one_line(e, "two networks")
    assert not any(tmp_path.iterdir())  # nothing was written


def test_fit_converts_a_factory_with_the_config_s_conditioning(tmp_path):
    run = oat.fit({**CFG, "epochs": 1, "attack_steps": 1, "model_kwargs": {"width": 4}}, tmp_path / "run",
                  model=make_resnet, evaluate=False, **QUIET)
    model = oat.load(run)
    assert model.spec.lams == (0.0, 1.0) and model.spec.film_form == "identity"
    assert model.net.fc.in_features == 8  # width 4 reached the factory
    assert json.loads((run / "config.json").read_text())["network"]["kwargs"] == {
        "width": 4, "in_channels": 1, "num_classes": 10}
