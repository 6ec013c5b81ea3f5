"""Motion models. Importing this package registers every family (see ``registry``)."""

from gfvc.models.base import FeatureField, MotionModel
from gfvc.models.registry import MOTION_MODELS, model_class, model_class_by_id, register_motion_model

# Family modules register themselves on import.
from gfvc.models import landmark, mesh  # noqa: E402,F401
from gfvc.models import fomm  # noqa: E402,F401
from gfvc.models import cfte  # noqa: E402,F401
from gfvc.models import fv2v  # noqa: E402,F401

__all__ = [
    "FeatureField",
    "MotionModel",
    "MOTION_MODELS",
    "model_class",
    "model_class_by_id",
    "register_motion_model",
]
