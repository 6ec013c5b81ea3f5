"""Motion models. Importing this package registers every family (see ``registry``)."""

# Family modules register themselves on import.
from gfvc.models import (  # noqa: E402,F401
    cfte,  # noqa: E402,F401
    dac,  # noqa: E402,F401
    fomm,  # noqa: E402,F401
    fv2v,  # noqa: E402,F401
    hdac,  # noqa: E402,F401
    landmark,
    mesh,
    rdac,  # noqa: E402,F401
)
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
