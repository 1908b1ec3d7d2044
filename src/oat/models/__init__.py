"""Models: one registry; every model is a :class:`ConditionedNet`."""

from oat.models.base import BoundModel, ConditionedNet
from oat.models.conversion import ConvertedNet, ConvertOptions, convert
from oat.models.registry import MODELS, build_model, create_model, list_models, register_model

__all__ = ["MODELS", "BoundModel", "ConditionedNet", "ConvertOptions", "ConvertedNet", "build_model", "convert",
           "create_model", "list_models", "register_model"]
