"""λ encodings and the conditioning spec (OAT Sec. 3.1)."""

import pytest
import torch

from oat.checkpoint import load_model, save_checkpoint
from oat.conditioning import ENCODINGS, PAPER_LAMS, Conditioning, list_encodings, make_table
from oat.errors import ConfigError, LamError
from oat.models import create_model

INDEX_ENCODINGS = [n for n in list_encodings() if ENCODINGS[n].index_based]
VALUE_ENCODINGS = [n for n in list_encodings() if not ENCODINGS[n].index_based]


def test_registry_has_the_papers_encodings():
    assert {"random-orthogonal", "one-hot", "dct", "scalar", "continuous"} <= set(ENCODINGS)
    assert set(INDEX_ENCODINGS) == {"random-orthogonal", "one-hot", "dct"}


@pytest.mark.parametrize("name", INDEX_ENCODINGS)
def test_table_rows_are_unit_norm_and_orthogonal(name):
    table = make_table(Conditioning(lams=PAPER_LAMS, encoding=name, dim=128))
    assert table.shape == (6, 128)
    torch.testing.assert_close(table.norm(dim=1), torch.ones(6), atol=1e-5, rtol=0)
    # Rows of one-hot, orthonormal DCT and Q of a QR are mutually orthogonal.
    torch.testing.assert_close(table @ table.T, torch.eye(6), atol=1e-5, rtol=0)


def test_random_orthogonal_is_seeded():
    a = make_table(Conditioning(seed=3))
    assert torch.equal(a, make_table(Conditioning(seed=3)))
    assert not torch.allclose(a, make_table(Conditioning(seed=4)))


@pytest.mark.parametrize("name", VALUE_ENCODINGS)
def test_value_encodings_are_distinct_and_bounded(name):
    enc = ENCODINGS[name]
    lam = torch.tensor([0.0, 0.15, 0.5, 1.0])
    e = enc.make(lam, 16)
    assert e.shape == (4, enc.fixed_dim or 16)
    assert len({tuple(r.tolist()) for r in e}) == 4
    if name == "continuous":
        torch.testing.assert_close(e.norm(dim=1), torch.ones(4), atol=1e-5, rtol=0)


def test_table_is_in_state_dict_and_survives_save_load(tmp_path):
    spec = Conditioning(lams=(0.0, 0.5, 1.0), dim=16, seed=11)
    model = create_model("small-cnn", spec, in_channels=1, base=4)
    assert "lam_table" in model.state_dict()
    assert torch.equal(model.state_dict()["lam_table"], make_table(spec))
    save_checkpoint(tmp_path / "checkpoints", "epoch-0001", model)
    # Poison the generator: a re-drawn table would differ from the stored one.
    torch.manual_seed(123)
    loaded = load_model(tmp_path)
    assert torch.equal(loaded.lam_table, model.lam_table)


def test_table_is_never_redrawn_at_load(tmp_path):
    """A stored table wins over what the seed would draw (it is data, not a recipe)."""
    spec = Conditioning(lams=(0.0, 1.0), dim=8, seed=0)
    model = create_model("small-cnn", spec, in_channels=1, base=4)
    with torch.no_grad():
        model.lam_table.mul_(-1)
    save_checkpoint(tmp_path / "checkpoints", "epoch-0001", model)
    assert torch.equal(load_model(tmp_path).lam_table, -make_table(spec))


@pytest.mark.parametrize("name", INDEX_ENCODINGS)
def test_index_encoding_refuses_untrained_lam(name):
    spec = Conditioning(encoding=name, dim=16)
    with pytest.raises(LamError) as e:
        spec.check_lam(0.25)
    msg = str(e.value)
    assert "\n" not in msg and "0.25" in msg and "trained set" in msg


def test_lam_tolerance_finds_trained_value():
    spec = Conditioning()
    assert 0.1 + 0.2 != 0.3
    assert spec.check_lam(0.1 + 0.2) == 0.3
    assert spec.lam_index(0.1 + 0.2) == spec.lams.index(0.3)
    with pytest.raises(LamError):
        spec.check_lam(0.3 + 1e-4)


@pytest.mark.parametrize("encoding", list_encodings())
@pytest.mark.parametrize("bad", [-0.1, 1.0001, float("nan"), 2, "0.5"])
def test_lam_outside_unit_interval_refused(encoding, bad):
    spec = Conditioning(encoding=encoding, dim=16)
    with pytest.raises(LamError, match=r"\[0, 1\]"):
        spec.check_lam(bad)


@pytest.mark.parametrize("name", VALUE_ENCODINGS)
def test_value_encodings_accept_any_lam(name):
    spec = Conditioning(encoding=name, dim=16)
    assert spec.continuous
    for lam in (0.0, 0.05, 0.333, 0.77, 1.0):
        assert spec.check_lam(lam) == lam


def test_spec_validation():
    with pytest.raises(LamError):
        Conditioning(lams=(0.0, 1.5))
    with pytest.raises(ConfigError, match="repeated"):
        Conditioning(lams=(0.0, 0.0))
    with pytest.raises(ConfigError, match="unknown λ encoding"):
        Conditioning(encoding="fourier")
    with pytest.raises(ConfigError, match="width"):
        Conditioning(widths=(0.0,))


def test_spec_round_trips_through_dict():
    spec = Conditioning(lams=(1.0, 0.0, 0.5), encoding="dct", dim=32, widths=(0.5, 1.0), seed=7)
    assert spec.lams == (0.0, 0.5, 1.0) and spec.widths == (1.0, 0.5)
    assert Conditioning.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError):
        Conditioning.from_dict({**spec.to_dict(), "bogus": 1})


def test_dedicated_spec_names_its_lam():
    spec = Conditioning.dedicated(0.3)
    assert not spec.film and not spec.dual_bn and spec.lams == (0.3,)
    assert spec.check_lam(0.3) == 0.3
    with pytest.raises(LamError, match="dedicated") as e:
        spec.check_lam(0.4)
    assert "\n" not in str(e.value)
