"""Conditioned building blocks: FiLM, dual/switchable BN, slimmable layers."""

from oat.nn.context import Ctx
from oat.nn.dual_bn import DualBN
from oat.nn.film import FiLM
from oat.nn.norm import Norm, bn_affine, fold
from oat.nn.slimmable import SConv2d, SLinear

__all__ = ["Ctx", "DualBN", "FiLM", "Norm", "SConv2d", "SLinear", "bn_affine", "fold"]
