"""VVC key frames: an external encoder (vvenc's ``vvencapp`` or VTM's ``EncoderApp``) writes
the bitstream; PyAV's native ``vvc`` decoder reads it back.

No VVC encoder ships with PyAV, so the encoder is looked for (in this order) in the
``encoder=PATH`` option, the ``GFVC_VVC_ENCODER`` variable, then ``vvencapp`` and
``EncoderApp`` on PATH. Decoding needs no external tool.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from gfvc.errors import BackendUnavailableError, GfvcError
from gfvc.io.color import i420_bytes
from gfvc.keyframe._av import decode_rgb
from gfvc.keyframe.base import KeyframeCodec, check_frame, register_keyframe_codec

ENCODER_ENV = "GFVC_VVC_ENCODER"
ENCODER_NAMES = ("vvencapp", "EncoderApp")
EncoderKind = Literal["vvenc", "vtm"]

_MISSING = (
    "no VVC encoder found: install vvenc (vvencapp) or VTM EncoderApp on PATH, "
    "or use --keyframe-codec x265"
)


def encoder_kind(path: str) -> EncoderKind:
    """``vvencapp`` has its own short options; VTM's EncoderApp and vvenc's expert
    ``vvencFFapp`` share the VTM ones. Told apart by the program name."""
    return "vvenc" if Path(path).name.lower().startswith("vvencapp") else "vtm"


def find_vvc_encoder(explicit: str | None = None) -> str:
    """Path of the VVC encoder to run, or BackendUnavailableError."""
    chosen = explicit or os.environ.get(ENCODER_ENV)
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            raise BackendUnavailableError(
                f"VVC encoder {chosen!r} is not an executable file; fix the path or unset "
                f"{ENCODER_ENV}"
            )
        return found
    for name in ENCODER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise BackendUnavailableError(_MISSING)


def vvc_command(
    encoder: str,
    yuv: str,
    out: str,
    width: int,
    height: int,
    qp: int,
    preset: str = "medium",
    config: str | None = None,
) -> list[str]:
    """Arguments for one 8-bit 4:2:0 intra picture at ``qp`` (no decoded-picture hash SEI)."""
    if encoder_kind(encoder) == "vvenc":
        return [
            encoder, "-i", yuv, "-s", f"{width}x{height}", "-c", "yuv420", "-r", "25",
            "-f", "1", "--qp", str(qp), "--preset", preset, "--internal-bitdepth", "8",
            "-o", out,
        ]  # fmt: skip
    cmd = [encoder]
    if config:
        cmd += ["-c", config]
    return cmd + [
        "-i", yuv, "-b", out, "-wdt", str(width), "-hgt", str(height), "-fr", "25",
        "-f", "1", "-q", str(qp), "--InputBitDepth=8", "--OutputBitDepth=8",
        "--InternalBitDepth=8", "--InputChromaFormat=420", "--IntraPeriod=1",
        "--DecodingRefreshType=1", "--GOPSize=1", "--SEIDecodedPictureHash=0",
    ]  # fmt: skip


@register_keyframe_codec("vvc")
class VvcCodec(KeyframeCodec):
    """VVC intra picture (4:2:0, BT.601 limited), qp 0..63 as in VTM/vvenc."""

    qp_range: ClassVar[tuple[int, int] | None] = (0, 63)
    formats: ClassVar[tuple[str, ...]] = ("yuv420",)
    option_defaults: ClassVar[dict[str, Any]] = {
        "encoder": None,
        "preset": "medium",
        "config": None,
    }

    def encode(self, frame: np.ndarray) -> bytes:
        rgb = check_frame(frame, self.fmt)
        encoder = find_vvc_encoder(self.options["encoder"])
        h, w = rgb.shape[:2]
        with tempfile.TemporaryDirectory(prefix="gfvc-vvc-") as tmp:
            yuv, out = os.path.join(tmp, "in.yuv"), os.path.join(tmp, "out.266")
            Path(yuv).write_bytes(i420_bytes(rgb))
            cmd = vvc_command(
                encoder, yuv, out, w, h, self.qp, str(self.options["preset"]),
                self.options["config"],
            )  # fmt: skip
            try:
                subprocess.run(cmd, check=True, capture_output=True, cwd=tmp)
            except (subprocess.CalledProcessError, OSError) as exc:
                detail = _last_line(getattr(exc, "stderr", b"") or getattr(exc, "stdout", b""))
                raise GfvcError(f"VVC encoder {encoder} failed: {detail or exc}") from None
            data = Path(out).read_bytes() if os.path.exists(out) else b""
        if not data:
            raise GfvcError(f"VVC encoder {encoder} wrote no bitstream")
        return data

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        return decode_rgb("vvc", data, width, height)


def _last_line(raw: bytes | str | None) -> str:
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else (raw or "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""
