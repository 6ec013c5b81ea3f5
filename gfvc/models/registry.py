"""Name -> motion model class, filled by decorators when ``gfvc.models`` is imported."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from gfvc.errors import UnknownNameError
from gfvc.models.base import MotionModel

M = TypeVar("M", bound=type[MotionModel])

MOTION_MODELS: dict[str, type[MotionModel]] = {}


def register_motion_model(name: str) -> Callable[[M], M]:
    """Class decorator: register ``cls`` under ``name`` (and check its id is unique)."""

    def deco(cls: M) -> M:
        if name in MOTION_MODELS:
            raise ValueError(f"motion model {name!r} registered twice")
        for other in MOTION_MODELS.values():
            if other.model_id == cls.model_id:
                raise ValueError(f"model id {cls.model_id} used by {other.name!r} and {name!r}")
        cls.name = name
        MOTION_MODELS[name] = cls
        return cls

    return deco


def model_class(name: str) -> type[MotionModel]:
    """Look a model up by name, with the list of choices in the error."""
    import gfvc.models  # noqa: F401  (fills the registry)

    try:
        return MOTION_MODELS[name.lower()]
    except KeyError:
        raise UnknownNameError(
            f"unknown model {name!r}; choose one of: {', '.join(sorted(MOTION_MODELS))}"
        ) from None


def model_class_by_id(model_id: int) -> type[MotionModel]:
    import gfvc.models  # noqa: F401

    for cls in MOTION_MODELS.values():
        if cls.model_id == model_id:
            return cls
    raise UnknownNameError(f"bitstream uses model id {model_id}, which this gfvc does not know")
