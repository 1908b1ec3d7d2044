"""Argument types shared by the sub-commands."""

from __future__ import annotations

import argparse

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
    return float(v)


def lam_or_all(text: str):
    return "all" if text == "all" else number(text)
