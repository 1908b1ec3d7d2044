"""Shared fixtures: tiny models and batches that run in milliseconds on a CPU.

Also pins torch to one thread and undoes ``use_deterministic_algorithms`` after each
test, so tests stay fast on a shared box and independent of their order.
"""

import os
import sys
from pathlib import Path

import pytest
import torch

try:
    import oat  # noqa: F401
except ImportError:  # a source checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from clean_training import train_clean  # noqa: E402
from oat.conditioning import Conditioning  # noqa: E402
from oat.models import create_model  # noqa: E402

TINY_LAMS = (0.0, 0.1, 0.2, 0.3, 0.4, 1.0)

# The tests run tiny models on a 2-core box that is often shared: one intra-op thread is
# as fast for them and avoids threads spinning against each other (10x slower under load).
torch.set_num_threads(int(os.environ.get("OAT_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    """Undo ``use_deterministic_algorithms`` (set by deterministic runs) after each test."""
    det = torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    # Only when changed: the call imports torch._inductor (seconds).
    if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) != (
        det,
        warn,
    ):
        torch.use_deterministic_algorithms(det, warn_only=warn)


@pytest.fixture
def tiny_spec() -> Conditioning:
    """The paper's λ set with a small encoding (dim 16) to keep FiLM tiny."""
    return Conditioning(lams=TINY_LAMS, dim=16)


def _make_tiny(spec: Conditioning, seed: int = 0, base: int = 8, in_channels: int = 1):
    torch.manual_seed(seed)
    return create_model("small-cnn", spec, in_channels=in_channels, num_classes=10, base=base)


@pytest.fixture
def make_tiny():
    """``make_tiny(spec, seed=0, base=8, in_channels=1)``: a small-cnn for 8×8 images."""
    return _make_tiny


@pytest.fixture
def tiny_model(tiny_spec):
    return _make_tiny(tiny_spec)


@pytest.fixture
def batch():
    """A reproducible batch of 12 random 8×8 images in [0, 1] and labels."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(12, 1, 8, 8, generator=g), torch.randint(0, 10, (12,), generator=g)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as float tensors: (x_train, y_train, x_test, y_test)."""
    from oat.data import load_data

    d = load_data("digits")
    f = lambda ds: (ds.images.float() / 255.0, ds.labels)
    return (*f(d.train), *f(d.test))


@pytest.fixture(scope="session")
def trained_digits_model(digits):
    """A dedicated small-cnn trained cleanly on digits for a few epochs (~1 s): a model
    whose loss an attack can meaningfully raise."""
    x, y, _, _ = digits
    torch.manual_seed(0)
    model = create_model("small-cnn", Conditioning.dedicated(0.0), in_channels=1, num_classes=10, base=16)
    return train_clean(model, x, y, lambda n: 0.0)
