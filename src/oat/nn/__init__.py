"""Conditioned building blocks: FiLM, dual/switchable BN, slimmable layers."""

from oat.nn.context import Ctx
from oat.nn.dual_bn import DualBN
from oat.nn.film import FiLM
from oat.nn.slimmable import SConv2d, SLinear

__all__ = ["Ctx", "DualBN", "FiLM", "SConv2d", "SLinear"]
