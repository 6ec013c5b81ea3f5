"""HEVC key frames with libx265 through PyAV (raw Annex-B, intra only, no container)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from gfvc.keyframe._av import decode_rgb, encode_picture, rgb_to_av_frame
from gfvc.keyframe.base import KeyframeCodec, check_frame, register_keyframe_codec


def x265_params(qp: int, fmt: str, extra: str = "") -> str:
    """The ``x265-params`` string.

    ``info=0`` drops the version/settings SEI (it doubled a QP 32 frame). For RGB, psy-rd
    is off because with it x265 codes the B and R planes at QP+6 (its 4:4:4 chroma rule),
    which is wrong when they are colours, not chroma. Note x265 codes I slices at
    ``qp - 3`` (ipratio 1.4), as in every x265 anchor.
    """
    parts = [f"qp={qp}", "keyint=1", "info=0", "log-level=error"]
    if fmt == "rgb444":
        parts.append("psy-rd=0")
    if extra:
        parts.append(extra.strip(":"))
    return ":".join(parts)


@register_keyframe_codec("x265")
class X265Codec(KeyframeCodec):
    """libx265 intra picture: yuv420 -> Main (4:2:0, BT.601 limited), rgb444 -> 4:4:4 GBR."""

    qp_range: ClassVar[tuple[int, int] | None] = (0, 51)
    option_defaults: ClassVar[dict[str, Any]] = {"preset": "medium", "params": ""}

    @property
    def pix_fmt(self) -> str:
        return "gbrp" if self.fmt == "rgb444" else "yuv420p"

    def encode(self, frame: np.ndarray) -> bytes:
        rgb = check_frame(frame, self.fmt)
        options = {
            "preset": str(self.options["preset"]),
            "x265-params": x265_params(self.qp, self.fmt, str(self.options["params"])),
        }
        return encode_picture("libx265", rgb_to_av_frame(rgb, self.pix_fmt), options)

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        return decode_rgb("hevc", data, width, height)
