"""Argument types shared by the sub-commands."""

from __future__ import annotations

import argparse
import math
import sys

from oat.errors import ConfigError
from oat.train.config import parse_value


def number(text: str) -> float:
    """A float, also written as a fraction such as ``8/255``."""
    try:
        v = parse_value(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return float(v)


def lam_or_all(text: str):
    return "all" if text == "all" else number(text)


def progress_wanted(no_progress: bool) -> bool:
    """A redrawn progress bar only on a terminal: in a log file or a pipe its ``\r`` redraws are noise,
    and the per-epoch lines (training) and the result table (evaluation) say what it would."""
    return not no_progress and sys.stderr.isatty()
