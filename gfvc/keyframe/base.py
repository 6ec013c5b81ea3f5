"""The key-frame codec interface and its registry.

A key-frame codec turns one RGB picture into the exact payload bytes stored in the stream
(so the byte count *is* the key-frame cost) and back. Codec ids are written into bitstreams
and must never change.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np

from gfvc.errors import InputError, UnknownNameError

KeyframeFormat = Literal["yuv420", "rgb444"]
FORMATS: tuple[str, ...] = ("yuv420", "rgb444")

# Fixed ids (written into .gfv files): never renumber.
CODEC_IDS: dict[str, int] = {"x265": 1, "svtav1": 2, "vvc": 3, "lossless": 4}


class KeyframeCodec(abc.ABC):
    """Intra coding of a single RGB picture.

    Subclasses set ``codec_id``, ``qp_range`` (None: qp ignored), ``formats`` and
    ``option_defaults`` (the only ``**options`` accepted). ``decode`` must be deterministic
    across machines, because encoder and decoder both animate the decoded key frame.
    """

    name: ClassVar[str] = ""
    codec_id: ClassVar[int] = 0
    qp_range: ClassVar[tuple[int, int] | None] = (0, 51)
    formats: ClassVar[tuple[str, ...]] = FORMATS
    option_defaults: ClassVar[dict[str, Any]] = {}
    #: QP used when the user gives none.
    default_qp: ClassVar[int] = 32

    def __init__(
        self, qp: int | None = None, fmt: KeyframeFormat = "yuv420", **options: Any
    ) -> None:
        self.qp = check_qp(self.name, self.default_qp if qp is None else qp, self.qp_range)
        self.fmt = check_format(self.name, fmt, self.formats)
        self.options = merge_options(self.name, self.option_defaults, options)

    @abc.abstractmethod
    def encode(self, frame: np.ndarray) -> bytes:
        """(H, W, 3) uint8 RGB -> payload bytes (nothing else is needed to decode them)."""

    @abc.abstractmethod
    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        """Payload -> (height, width, 3) uint8 RGB; corrupt data raises BitstreamError."""

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}(qp={self.qp}, fmt={self.fmt!r}{opts})"


# ---------------------------------------------------------------------------------------------
# argument checks (pure)


def check_qp(codec: str, qp: int, qp_range: tuple[int, int] | None) -> int:
    """Validate ``qp`` against the codec's range (any int when the codec ignores qp)."""
    if isinstance(qp, bool) or not isinstance(qp, int | np.integer):
        raise InputError(f"{codec} qp must be an integer, got {qp!r}")
    qp = int(qp)
    if qp_range is None and not 0 <= qp <= 255:  # ignored, but stored in one header byte
        raise InputError(f"{codec} ignores qp: leave --qp unset, got {qp}")
    if qp_range is not None and not qp_range[0] <= qp <= qp_range[1]:
        raise InputError(f"{codec} qp must be in {qp_range[0]}..{qp_range[1]}, got {qp}")
    return qp


def check_format(codec: str, fmt: str, formats: tuple[str, ...]) -> str:
    if fmt not in formats:
        raise InputError(
            f"{codec} cannot code key frames as {fmt!r}; choose one of: {', '.join(formats)}"
        )
    return fmt


def merge_options(codec: str, defaults: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        allowed = ", ".join(sorted(defaults)) or "none"
        raise InputError(
            f"{codec} does not take option(s) {', '.join(unknown)}; allowed: {allowed}"
        )
    return {**defaults, **options}


def check_frame(frame: np.ndarray, fmt: str) -> np.ndarray:
    """A contiguous (H, W, 3) uint8 RGB frame, even-sized for 4:2:0."""
    arr = np.asarray(frame)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(
            f"key frame must be an (H, W, 3) uint8 RGB array, got {arr.dtype} {arr.shape}"
        )
    h, w = arr.shape[:2]
    if h < 16 or w < 16:
        raise InputError(f"key frame is {w}x{h}; it must be at least 16x16")
    if fmt == "yuv420" and (h % 2 or w % 2):
        raise InputError(f"key frame is {w}x{h}; 4:2:0 coding needs even width and height")
    return np.ascontiguousarray(arr)


# ---------------------------------------------------------------------------------------------
# registry

KEYFRAME_CODECS: dict[str, type[KeyframeCodec]] = {}

C = TypeVar("C", bound=type[KeyframeCodec])


def register_keyframe_codec(name: str) -> Callable[[C], C]:
    """Class decorator: register ``cls`` under ``name`` with its fixed id from CODEC_IDS."""

    def deco(cls: C) -> C:
        key = name.lower()
        if key in KEYFRAME_CODECS:
            raise ValueError(f"key-frame codec {key!r} registered twice")
        if not cls.codec_id:
            cls.codec_id = CODEC_IDS[key]
        for other in KEYFRAME_CODECS.values():
            if other.codec_id == cls.codec_id:
                raise ValueError(f"codec id {cls.codec_id} used by {other.name!r} and {key!r}")
        cls.name = key
        KEYFRAME_CODECS[key] = cls
        return cls

    return deco


def _fill_registry() -> None:
    import gfvc.keyframe  # noqa: F401  (importing the package registers every codec)


def keyframe_codec_class(name: str) -> type[KeyframeCodec]:
    """Look a codec class up by name, listing the choices when it is unknown."""
    _fill_registry()
    try:
        return KEYFRAME_CODECS[name.lower()]
    except KeyError:
        raise UnknownNameError(
            f"unknown key-frame codec {name!r}; choose one of: {', '.join(sorted(KEYFRAME_CODECS))}"
        ) from None


def keyframe_codec(name: str, **kw: Any) -> KeyframeCodec:
    """Build a codec by name, e.g. ``keyframe_codec("x265", qp=32, fmt="rgb444")``."""
    return keyframe_codec_class(name)(**kw)


def keyframe_codec_class_by_id(codec_id: int) -> type[KeyframeCodec]:
    """The class for an id read from a bitstream."""
    _fill_registry()
    for cls in KEYFRAME_CODECS.values():
        if cls.codec_id == codec_id:
            return cls
    known = ", ".join(f"{c.codec_id}={n}" for n, c in sorted(KEYFRAME_CODECS.items()))
    raise UnknownNameError(
        f"bitstream uses key-frame codec id {codec_id}, which this gfvc does not know "
        f"(known: {known})"
    )
