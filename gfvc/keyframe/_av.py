"""PyAV plumbing shared by the key-frame codecs: one picture in, raw packets out, and back.

Colour conversion is done with gfvc's integer BT.601 routines rather than swscale, so the
decoded RGB key frame is bit-identical on every machine.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from gfvc.errors import BitstreamError, GfvcError, InputError
from gfvc.io.color import rgb_to_yuv420, yuv420_to_rgb, yuv444_to_rgb

_RATE = Fraction(25)


def rgb_to_av_frame(rgb: np.ndarray, pix_fmt: str) -> Any:
    """RGB -> an ``av.VideoFrame`` in ``pix_fmt`` ('yuv420p' or 'gbrp')."""
    import av

    if pix_fmt == "gbrp":
        return av.VideoFrame.from_ndarray(rgb, format="gbrp")  # takes RGB order
    if pix_fmt == "yuv420p":
        h, w = rgb.shape[:2]
        i420 = np.concatenate([p.ravel() for p in rgb_to_yuv420(rgb)])
        return av.VideoFrame.from_ndarray(i420.reshape(h * 3 // 2, w), format="yuv420p")
    raise ValueError(f"unsupported pix_fmt {pix_fmt}")


def encode_picture(codec: str, frame: Any, options: dict[str, str]) -> bytes:
    """Encode one picture with a fresh encoder, flush it and join the raw packets."""
    import av

    try:
        ctx = av.CodecContext.create(codec, "w")
    except (av.FFmpegError, ValueError) as exc:
        raise GfvcError(f"this PyAV build has no {codec} encoder ({exc})") from None
    ctx.width, ctx.height = frame.width, frame.height
    ctx.pix_fmt = frame.format.name
    ctx.time_base = 1 / _RATE
    ctx.framerate = _RATE
    ctx.options = options
    frame.pts = 0
    try:
        packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    except av.FFmpegError as exc:
        raise InputError(
            f"{codec} could not encode the {frame.width}x{frame.height} key frame ({exc})"
        ) from None
    return b"".join(bytes(p) for p in packets)


def decode_picture(decoder: str, data: bytes) -> Any:
    """Decode a payload that holds exactly one picture; anything else is a BitstreamError."""
    import av

    if not data:
        raise BitstreamError("key-frame payload is empty")
    ctx = av.CodecContext.create(decoder, "r")
    ctx.thread_count = 1
    ctx.options = {"err_detect": "explode"}  # refuse damage instead of concealing it
    try:
        frames = list(ctx.decode(av.Packet(bytes(data)))) + list(ctx.decode(None))
    except av.FFmpegError as exc:
        raise BitstreamError(f"key-frame payload is corrupt ({decoder}: {exc})") from None
    if len(frames) != 1:
        raise BitstreamError(
            f"key-frame payload decoded to {len(frames)} pictures with {decoder}, expected 1"
        )
    return frames[0]


def _plane(frame: Any, i: int) -> np.ndarray:
    """One 8-bit plane as (height, width), without the line padding."""
    p = frame.planes[i]
    buf = np.frombuffer(memoryview(p), dtype=np.uint8)
    return buf.reshape(p.height, p.line_size)[:, : p.width]


def av_frame_to_rgb(frame: Any) -> np.ndarray:
    """Decoded frame -> RGB, bit-exact for yuv420p / yuv444p / gbrp (our encoders' output).

    Other formats (e.g. 10-bit from a foreign encoder) fall back to swscale, which is correct
    but not guaranteed identical across CPUs.
    """
    fmt = frame.format.name
    if fmt == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return yuv420_to_rgb(_plane(frame, 0), _plane(frame, 1), _plane(frame, 2))
    if fmt == "yuv444p":
        return yuv444_to_rgb(np.stack([_plane(frame, i) for i in range(3)]))
    if fmt == "gbrp":
        g, b, r = (_plane(frame, i) for i in range(3))
        return np.ascontiguousarray(np.stack([r, g, b], axis=-1))
    return frame.to_ndarray(format="rgb24")


def decode_rgb(decoder: str, data: bytes, width: int, height: int) -> np.ndarray:
    """Payload -> RGB of the expected size (a size mismatch means a corrupt stream)."""
    frame = decode_picture(decoder, data)
    if (frame.width, frame.height) != (width, height):
        raise BitstreamError(
            f"key frame decodes to {frame.width}x{frame.height}, the stream says {width}x{height}"
        )
    return av_frame_to_rgb(frame)
