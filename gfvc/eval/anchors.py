"""Conventional low-delay anchors (HEVC/x265, AV1/SVT-AV1, VVC/VTM) on numpy frame sequences.

Every anchor codes one intra frame followed only by forward-predicted frames at a fixed QP,
so it sees the same conditions as a GFVC stream (one key frame, no look-ahead, no reordering).
The rate is the exact size of the elementary stream (Annex-B / OBU, parameter sets included,
no container), and the decoded frames come from actually decoding that stream.

Colour: RGB is converted to yuv420p by libswscale's default (BT.601, limited range) and
decoded back with the same matrix, so the anchor's PSNR includes the 4:2:0 round trip, like
the YUV420 key frames of the common software.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from gfvc.errors import BackendUnavailableError, InputError, UnknownNameError
from gfvc.eval._frames import check_frame
from gfvc.eval.rate import kbps as _kbps

#: Codec names accepted by ``anchor_code`` (aliases map to the first name of each row).
CODECS = ("x265", "svtav1", "vvc", "lossless")
_ALIASES = {
    "hevc": "x265",
    "h265": "x265",
    "libx265": "x265",
    "av1": "svtav1",
    "libsvtav1": "svtav1",
    "h266": "vvc",
    "vtm": "vvc",
}
#: Valid QP range per codec.
QP_RANGE = {"x265": (0, 51), "svtav1": (1, 63), "vvc": (0, 63), "lossless": (0, 63)}
_PIX_FMT = "yuv420p"


@dataclass(frozen=True)
class AnchorResult:
    """Exact stream size in bits, the decoded RGB frames and the rate in kbps."""

    bits: int
    decoded_frames: list[np.ndarray]
    kbps: float
    codec: str = ""
    qp: int = 0


def canonical_codec(name: str) -> str:
    """Canonical anchor codec name for ``name`` (case-insensitive, aliases allowed)."""
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in CODECS:
        raise UnknownNameError(f"unknown anchor codec {name!r}; choose from {', '.join(CODECS)}")
    return key


def _frame_rate(fps: float) -> Fraction:
    if not fps > 0:
        raise InputError(f"fps must be positive, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


def _check_frames(frames: Sequence[np.ndarray], even: bool) -> tuple[list[np.ndarray], int, int]:
    seq = [check_frame(f, f"frame {i}") for i, f in enumerate(frames)]
    if not seq:
        raise InputError("no frames to code")
    h, w = seq[0].shape[:2]
    for i, f in enumerate(seq):
        if f.shape[:2] != (h, w):
            raise InputError(f"frame {i} is {f.shape[1]}x{f.shape[0]} but frame 0 is {w}x{h}")
    if even and (h % 2 or w % 2):
        raise InputError(f"yuv420p anchors need even width and height, got {w}x{h}")
    return seq, h, w


def x265_options(qp: int, num_frames: int, preset: str = "medium") -> dict[str, str]:
    """libx265 low delay: one I frame, P frames only, fixed QP, no SEI, no scene cuts."""
    params = f"qp={qp}:keyint={num_frames}:min-keyint={num_frames}:bframes=0:scenecut=0:info=0:log-level=error"
    return {"preset": preset, "tune": "zerolatency", "x265-params": params}


def svtav1_options(qp: int, num_frames: int, preset: str = "8") -> dict[str, str]:
    """libsvtav1 low delay (pred-struct 1), fixed QP (rc 0, aq-mode 0), one key frame."""
    params = f"rc=0:qp={qp}:aq-mode=0:pred-struct=1:keyint={num_frames}:scd=0:enable-overlays=0"
    return {"preset": preset, "svtav1-params": params}


def _encode_pyav(
    frames: list[np.ndarray], encoder: str, options: dict[str, str], rate: Fraction
) -> list[bytes]:
    """Encode with a PyAV encoder; returns the packets' bytes in decoding order."""
    h, w = frames[0].shape[:2]
    try:
        ctx = av.CodecContext.create(encoder, "w")
    except (av.FFmpegError, ValueError) as exc:
        raise BackendUnavailableError(f"PyAV has no {encoder} encoder: {exc}") from exc
    ctx.width, ctx.height, ctx.pix_fmt = w, h, _PIX_FMT
    ctx.time_base, ctx.framerate = 1 / rate, rate
    ctx.options = options
    ctx.open()
    packets: list[bytes] = []
    for i, frame in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format=_PIX_FMT)
        vf.pts = i
        packets += [bytes(p) for p in ctx.encode(vf)]
    packets += [bytes(p) for p in ctx.encode(None)]
    return packets


def _decode_packets(decoder: str, packets: list[bytes]) -> list[np.ndarray]:
    """Decode whole packets (one per coded picture) to RGB frames."""
    ctx = av.CodecContext.create(decoder, "r")
    out = []
    for data in packets:
        out += ctx.decode(av.Packet(data))
    out += ctx.decode(None)
    return [f.to_ndarray(format="rgb24") for f in out]


def _decode_stream(decoder: str, data: bytes) -> list[np.ndarray]:
    """Decode a raw elementary stream, split into packets by FFmpeg's parser."""
    ctx = av.CodecContext.create(decoder, "r")
    out = []
    for packet in ctx.parse(data) + ctx.parse(b""):
        out += ctx.decode(packet)
    out += ctx.decode(None)
    return [f.to_ndarray(format="rgb24") for f in out]


def _yuv420_bytes(frames: list[np.ndarray]) -> bytes:
    """Planar I420 bytes of RGB frames, converted exactly like the PyAV encoders' input."""
    chunks = []
    for frame in frames:
        vf = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format=_PIX_FMT)
        chunks += [_plane_bytes(vf, i) for i in range(3)]
    return b"".join(chunks)


def _plane_bytes(vf: av.VideoFrame, index: int) -> bytes:
    """Tightly packed bytes of one plane (line padding removed)."""
    plane = vf.planes[index]
    rows = vf.height if index == 0 else (vf.height + 1) // 2
    cols = vf.width if index == 0 else (vf.width + 1) // 2
    buf = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)
    return buf[:rows, :cols].tobytes()


def vtm_encoder() -> tuple[str, str]:
    """(VTM encoder binary, low-delay cfg) from $GFVC_VTM_ENCODER/PATH and $GFVC_VTM_CFG."""
    binary = (
        os.environ.get("GFVC_VTM_ENCODER")
        or shutil.which("EncoderAppStatic")
        or shutil.which("EncoderApp")
    )
    if not binary:
        raise BackendUnavailableError(
            "VVC anchor needs the VTM encoder: put EncoderAppStatic or EncoderApp on PATH or set GFVC_VTM_ENCODER"
        )
    cfg = os.environ.get("GFVC_VTM_CFG", "")
    if not cfg or not Path(cfg).is_file():
        raise BackendUnavailableError(
            "VVC anchor needs a VTM low-delay config: set GFVC_VTM_CFG to VTM's cfg/encoder_lowdelay_vtm.cfg"
        )
    return binary, cfg


def vtm_command(
    binary: str, cfg: str, yuv: Path, out: Path, size: tuple[int, int], n: int, qp: int, fps: float
) -> list[str]:
    """VTM low-delay command: 8-bit 4:2:0 input and coding, one intra frame (IntraPeriod -1)."""
    h, w = size
    return [
        binary, "-c", cfg, "-i", str(yuv), "-b", str(out), "-o", "",
        f"--SourceWidth={w}", f"--SourceHeight={h}", f"--FrameRate={round(fps)}", f"--FramesToBeEncoded={n}",
        f"--QP={qp}", "--InputBitDepth=8", "--InternalBitDepth=8", "--OutputBitDepth=8",
        "--InputChromaFormat=420", "--IntraPeriod=-1", "--DecodingRefreshType=0", "--Level=6.2",
    ]  # fmt: skip


def _code_vvc(frames: list[np.ndarray], qp: int, fps: float) -> tuple[int, list[np.ndarray]]:
    binary, cfg = vtm_encoder()
    with tempfile.TemporaryDirectory(prefix="gfvc_vtm_") as tmp:
        yuv, out = Path(tmp) / "in.yuv", Path(tmp) / "out.266"
        yuv.write_bytes(_yuv420_bytes(frames))
        cmd = vtm_command(binary, cfg, yuv, out, frames[0].shape[:2], len(frames), qp, fps)
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        if res.returncode != 0 or not out.is_file():
            last = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BackendUnavailableError(f"VTM encoder failed (exit {res.returncode}): {last[0]}")
        data = out.read_bytes()
    return len(data) * 8, _decode_stream("vvc", data)


def anchor_code(
    frames: Sequence[np.ndarray],
    codec: str,
    qp: int,
    fps: float = 25.0,
    *,
    preset: str | None = None,
) -> AnchorResult:
    """Code ``frames`` with a low-delay conventional anchor at fixed ``qp``.

    ``codec``: x265 (HEVC), svtav1 (AV1), vvc (external VTM, else BackendUnavailableError) or
    lossless (returns the input; bits = uncompressed 24 bits per pixel).
    """
    name = canonical_codec(codec)
    lo, hi = QP_RANGE[name]
    if not isinstance(qp, int) or not lo <= qp <= hi:
        raise InputError(f"{name} QP must be an integer in [{lo}, {hi}], got {qp!r}")
    rate = _frame_rate(fps)
    seq, h, w = _check_frames(frames, even=name != "lossless")
    n = len(seq)
    if name == "lossless":
        bits = n * h * w * 24
        decoded = [f.copy() for f in seq]
    elif name == "vvc":
        bits, decoded = _code_vvc(seq, qp, fps)
    else:
        if name == "x265":
            encoder, decoder, options = "libx265", "hevc", x265_options(qp, n, preset or "medium")
        else:
            os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner to stderr otherwise
            encoder, decoder, options = (
                "libsvtav1",
                "libdav1d",
                svtav1_options(qp, n, preset or "8"),
            )
        packets = _encode_pyav(seq, encoder, options, rate)
        bits = sum(len(p) for p in packets) * 8
        decoded = _decode_packets(decoder, packets)
    if len(decoded) != n:
        raise BackendUnavailableError(
            f"{name} anchor decoded {len(decoded)} frames for {n} input frames"
        )
    return AnchorResult(
        bits=bits, decoded_frames=decoded, kbps=_kbps(bits, n, float(rate)), codec=name, qp=qp
    )
