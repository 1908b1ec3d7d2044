"""Models: one registry; every model is a :class:`ConditionedNet`."""

from oat.models.base import BoundModel, ConditionedNet
from oat.models.registry import MODELS, create_model, list_models, register_model

__all__ = ["MODELS", "BoundModel", "ConditionedNet", "create_model", "list_models", "register_model"]
