"""Small value checks shared by the CLI, training and evaluation; each refuses with one line.

They run before anything is read at length or written, so that a bad value costs nothing.
"""

from __future__ import annotations

import math
import numbers

from oat.errors import ConfigError

# A seed goes to torch.Generator.manual_seed, which takes [0, 2**64); 2**63 keeps it an int64 too.
MAX_SEED = 2**63 - 1


def finite(name: str, value) -> float:
    """A real number that is neither NaN nor infinite."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ConfigError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def positive_int(name: str, value, *, at_most: int | None = None) -> int:
    """An int ≥ 1 (and ≤ ``at_most``, a bound against values that would exhaust memory)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name} must be a positive whole number; got {value!r}")
    if at_most is not None and value > at_most:
        raise ConfigError(f"{name} = {value} is larger than {at_most}, more than any sane setting")
    return int(value)


def seed(value, name: str = "seed") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{name} must be a whole number in [0, 2**63 - 1]; got {value!r}")
    return int(value)


def eval_args(*, batch_size, check_subset, subset=None, seed_value=0) -> None:
    """``evaluate_run``'s numbers, refused before the checkpoint and the data are read."""
    positive_int("batch_size", batch_size)
    positive_int("check_subset", check_subset)
    if subset is not None:
        positive_int("subset", subset)
    seed(seed_value)
