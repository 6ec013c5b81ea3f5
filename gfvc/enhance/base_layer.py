"""The enhancement layer's base: the video at low resolution, coded by x265 low delay.

One HEVC picture per frame (P pictures only, no reordering, no lookahead), so each frame's
bytes exist as soon as the frame is coded and the receiver can show it at once. The stream
restarts with an IDR picture (and its parameter sets) at every gfvc key unit, so every key
unit stays a random-access point. Colour conversion uses gfvc's integer BT.601 routines, and
the decoded picture never feeds back into prediction: encoder and decoder need not agree on
anything but the HEVC bits.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np

from gfvc.bitstream.format import _read_varint, _varint
from gfvc.bitstream.nal import split_nal_units
from gfvc.enhance.fovea import Fovea, foveate
from gfvc.errors import BitstreamError, GfvcError
from gfvc.keyframe._av import av_frame_to_rgb, rgb_to_av_frame

#: Base-layer sizes a stream may use (square, pixels).
BASE_SIZES = (64, 128)
QP_RANGE = (0, 51)


def pack_nals(annexb: bytes) -> bytes:
    """Annex-B -> ``nal_len:varint nal`` per NAL unit: a P picture at these sizes is about
    12 bytes, and its 4-byte start code would be a quarter of it (0.6 kbps at 25 fps)."""
    out = bytearray()
    for u in split_nal_units(annexb, "hevc"):
        nal = annexb[u.payload_start - 2 : u.end]
        out += _varint(len(nal)) + nal
    return bytes(out)


def unpack_nals(chunk: bytes) -> bytes:
    """The inverse of ``pack_nals`` (BitstreamError when a length runs past the end)."""
    out, at = bytearray(), 0
    while at < len(chunk):
        n, at = _read_varint(chunk, at, "base-layer picture")
        if n < 2 or at + n > len(chunk):
            raise BitstreamError("base-layer picture is truncated")
        out += b"\x00\x00\x00\x01" + chunk[at : at + n]
        at += n
    return bytes(out)


def x265_stream_options(qp: int | None, kbps: float | None, size: int) -> dict[str, str]:
    """libx265 low delay for a live stream of ``size`` x ``size`` pictures: fixed QP, or
    x265's own rate control at ``kbps`` with a one-second VBV buffer (no frame may stall a
    call)."""
    parts = ["bframes=0", "scenecut=0", "keyint=100000", "min-keyint=100000", "info=0"]
    if size <= 64:
        # a picture of one 64x64 CTU codes differently from run to run, even at a fixed QP
        # on one thread (x265 3.x: 70 of 100 lp_d3 pictures differed between two runs);
        # 32x32 CTUs are deterministic and code as well (within 0.3 dB at 3-9 kbps)
        parts.append("ctu=32")
    # one frame thread: x265's rate control then depends on nothing but the pictures (with
    # several, on thread timing: the same clip gave different streams under load), and at
    # these sizes it is no slower (measured 0.74 vs 0.85 ms a 64x64 picture)
    parts += ["rc-lookahead=0", "log-level=error", "repeat-headers=1", "frame-threads=1"]
    if kbps is not None:
        k = max(1, round(kbps))
        parts += [f"bitrate={k}", f"vbv-maxrate={k}", f"vbv-bufsize={k}"]
    else:
        parts.append(f"qp={qp}")
    # preset slow: +0.3 dB at equal rate on 64x64 and 128x128 pictures (lp_d3, vr_1, dpe_d at
    # 8 and 11 kbps) for 0.5 / 2 ms more a picture; slower gains nothing more at 3x the time
    return {"preset": "slow", "tune": "zerolatency", "x265-params": ":".join(parts)}


class BaseLayerEncoder:
    """Frame in, that frame's HEVC bytes out; ``restart`` begins a new IDR-led stream.

    ``foveated``: the pictures sample the frame through a ``Fovea`` map, chosen at each
    restart and sent in 5 bytes ahead of the IDR picture (else: uniform area averaging)."""

    def __init__(
        self,
        size: int,
        *,
        qp: int | None = 34,
        kbps: float | None = None,
        fps: float = 25.0,
        foveated: bool = False,
    ) -> None:
        if size not in BASE_SIZES:
            raise ValueError(f"base-layer size must be one of {BASE_SIZES}, got {size}")
        self.size, self.qp, self.kbps, self.fps = size, qp, kbps, fps
        self.foveated = foveated
        self.fovea: Fovea | None = None  # the map since the last restart (foveated streams)
        self._ctx: Any = None
        self._pts = 0

    def _open(self) -> Any:
        import av

        ctx = av.CodecContext.create("libx265", "w")
        ctx.width = ctx.height = self.size
        ctx.pix_fmt = "yuv420p"
        rate = Fraction(self.fps).limit_denominator(1001)
        ctx.time_base, ctx.framerate = 1 / rate, rate
        ctx.options = x265_stream_options(self.qp, self.kbps, self.size)
        ctx.open()
        return ctx

    def encode(self, frame: np.ndarray, restart: bool = False, fovea: Fovea | None = None) -> bytes:
        """Code one (S, S, 3) frame (any S; it is downscaled here). ``fovea``: the map from
        this restart on (foveated streams; default: the standard map)."""
        head = b""
        if restart or self._ctx is None:
            self._ctx, self._pts = self._open(), 0
            if self.foveated:
                self.fovea = (fovea or Fovea()).quantized()
                head = self.fovea.to_bytes()
        vf = rgb_to_av_frame(foveate(frame, self.fovea, self.size), "yuv420p")
        vf.pts = self._pts
        self._pts += 1
        data = b"".join(bytes(p) for p in self._ctx.encode(vf))
        if not data:
            raise GfvcError("x265 held a base-layer picture back (low-delay settings failed)")
        return head + pack_nals(data)

    def set_target(self, qp: int | None = None, kbps: float | None = None) -> None:
        """New QP or rate, taking effect at the next restart (the next key unit)."""
        self.qp, self.kbps = qp, kbps


class BaseLayerDecoder:
    """One frame's base-layer bytes in, the (size, size, 3) RGB picture out; on foveated
    streams ``fovea`` is the map it was sampled through (``gfvc.enhance.fovea``)."""

    def __init__(self, size: int, foveated: bool = False) -> None:
        if size not in BASE_SIZES:
            raise BitstreamError(f"base-layer size {size} is not one of {BASE_SIZES}")
        self.size, self.foveated = size, foveated
        self.fovea: Fovea | None = None
        self._ctx: Any = None

    def _open(self) -> Any:
        import av

        ctx = av.CodecContext.create("hevc", "r")
        ctx.thread_count = 1
        ctx.options = {"err_detect": "explode"}
        return ctx

    def decode(self, data: bytes, restart: bool = False) -> np.ndarray:
        """Decode one picture. With ``restart`` (a key unit) a new stream begins, and the
        old one stays in place if the new picture fails. Without it, a failure leaves the
        stream broken (its reference picture is gone) until the next restart."""
        import av

        if not data:
            raise BitstreamError("base-layer picture is empty")
        fovea = self.fovea
        if restart and self.foveated:
            fovea, data = Fovea.from_bytes(data[:5]), data[5:]
        ctx = self._open() if restart else self._ctx
        if ctx is None:
            raise BitstreamError("base-layer stream broken or not started: wait for a key unit")
        if not restart:
            self._ctx = None  # until this picture decodes
        try:
            frames = list(ctx.decode(av.Packet(unpack_nals(data))))
        except av.FFmpegError as exc:
            raise BitstreamError(f"base-layer picture is corrupt (hevc: {exc})") from None
        if len(frames) != 1 or (frames[0].width, frames[0].height) != (self.size, self.size):
            raise BitstreamError("base-layer bytes did not decode to one picture of its size")
        self._ctx, self.fovea = ctx, fovea
        return av_frame_to_rgb(frames[0])
