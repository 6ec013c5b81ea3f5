"""Motion models. Importing this package registers every family (see ``registry``).

Our own models live here (``landmark``, ``mesh``, with ``faceshape``); the reproductions of
the official GFVC models live in :mod:`gfvc.models.official`.
"""

# Family modules register themselves on import.
from gfvc.models import landmark, mesh, official  # noqa: F401
from gfvc.models.base import FeatureField, MotionModel
from gfvc.models.registry import (
    MOTION_MODELS,
    model_class,
    model_class_by_id,
    register_motion_model,
)

__all__ = [
    "FeatureField",
    "MotionModel",
    "MOTION_MODELS",
    "model_class",
    "model_class_by_id",
    "register_motion_model",
]
