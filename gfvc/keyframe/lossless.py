"""Exact key frames for experiments: WebP lossless of the RGB picture.

WebP lossless was the smallest simple option on a 256x256 face (about 39 kB, against 61 kB
for PNG, 76 kB for x265 lossless and 116 kB for zlib), and decoding it is exact by definition.
"""

from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np

from gfvc.errors import BitstreamError, GfvcError
from gfvc.keyframe.base import KeyframeCodec, check_frame, register_keyframe_codec

_WEBP_LOSSLESS = [cv2.IMWRITE_WEBP_QUALITY, 101]  # quality > 100 selects lossless


@register_keyframe_codec("lossless")
class LosslessCodec(KeyframeCodec):
    """Bit-exact RGB key frame; ``qp`` and ``fmt`` are accepted and ignored."""

    qp_range: ClassVar[tuple[int, int] | None] = None

    def encode(self, frame: np.ndarray) -> bytes:
        rgb = check_frame(frame, "rgb444")
        ok, buf = cv2.imencode(".webp", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), _WEBP_LOSSLESS)
        if not ok:
            raise GfvcError("OpenCV could not write WebP; reinstall opencv-contrib-python")
        return buf.tobytes()

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        try:
            bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        except cv2.error:
            bgr = None
        if bgr is None:
            raise BitstreamError("lossless key-frame payload is not a valid WebP image")
        if bgr.shape[:2] != (height, width):
            raise BitstreamError(
                f"key frame decodes to {bgr.shape[1]}x{bgr.shape[0]}, the stream says "
                f"{width}x{height}"
            )
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
