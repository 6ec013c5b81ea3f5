"""VMAF through an FFmpeg binary built with libvmaf.

PyAV's bundled FFmpeg has no libvmaf, so VMAF runs an external ``ffmpeg``: $GFVC_FFMPEG, else
the one bundled in the ``imageio-ffmpeg`` wheel (a dependency; its Linux x86-64 build 0.8.1
has libvmaf), else ``ffmpeg`` on PATH; the first of them that has the libvmaf filter is used.
VMAF is computed on the whole sequence at once (its motion feature needs the previous frame),
from raw RGB files converted by FFmpeg to yuv420p, and reported per frame from libvmaf's JSON
log.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from gfvc.errors import BackendUnavailableError, InputError
from gfvc.eval._frames import check_pair

_HINT = (
    "no ffmpeg with libvmaf found (imageio-ffmpeg's ffmpeg, PATH); set GFVC_FFMPEG to one that "
    "has it"
)


def _candidates() -> list[str]:
    """Possible ffmpeg binaries, in order of preference."""
    out = []
    if os.environ.get("GFVC_FFMPEG"):
        out.append(os.environ["GFVC_FFMPEG"])
    try:  # the binary bundled in the imageio-ffmpeg wheel (never downloads anything)
        import imageio_ffmpeg

        out.append(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception:  # not installed, or no binary for this platform
        pass
    found = shutil.which("ffmpeg")
    if found:
        out.append(found)
    return out


@functools.lru_cache(maxsize=8)
def _has_libvmaf(binary: str) -> bool:
    try:
        res = subprocess.run(
            [binary, "-hide_banner", "-filters"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0 and "libvmaf" in res.stdout


def find_ffmpeg_with_vmaf() -> str:
    """Path of an ffmpeg binary that has the libvmaf filter, or ``BackendUnavailableError``."""
    for cand in _candidates():
        if _has_libvmaf(cand):
            return cand
    raise BackendUnavailableError(_HINT)


class VmafSequence:
    """Collects frame pairs in raw files, then runs one FFmpeg libvmaf pass over them."""

    def __init__(self, ffmpeg: str | None = None, fps: float = 25.0) -> None:
        self.ffmpeg = ffmpeg or find_ffmpeg_with_vmaf()
        self.fps = fps
        self._dir = tempfile.TemporaryDirectory(prefix="gfvc_vmaf_")
        self._ref = open(Path(self._dir.name) / "ref.rgb", "wb")  # noqa: SIM115 - closed in run()
        self._dec = open(Path(self._dir.name) / "dec.rgb", "wb")  # noqa: SIM115
        self.size: tuple[int, int] | None = None
        self.count = 0

    def add(self, ref: np.ndarray, dec: np.ndarray) -> None:
        """Append one frame pair."""
        ref, dec = check_pair(ref, dec)
        if self.size is None:
            self.size = (ref.shape[0], ref.shape[1])
        elif self.size != ref.shape[:2]:
            raise InputError(
                f"frame {self.count} is {ref.shape[1]}x{ref.shape[0]}, earlier frames {self.size[1]}x{self.size[0]}"
            )
        self._ref.write(ref.tobytes())
        self._dec.write(dec.tobytes())
        self.count += 1

    def run(self) -> list[float]:
        """Per-frame VMAF scores (libvmaf default model)."""
        self._ref.close()
        self._dec.close()
        try:
            if self.count == 0 or self.size is None:
                raise InputError("VMAF needs at least one frame")
            log = Path(self._dir.name) / "vmaf.json"
            cmd = vmaf_command(self.ffmpeg, Path(self._dir.name), self.size, self.fps, log)
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0 or not log.is_file():
                tail = res.stderr.strip().splitlines()[-1:] or ["no output"]
                raise BackendUnavailableError(f"ffmpeg libvmaf failed: {tail[0]}")
            return parse_vmaf_log(json.loads(log.read_text()), self.count)
        finally:
            self._dir.cleanup()


def vmaf_command(
    ffmpeg: str, folder: Path, size: tuple[int, int], fps: float, log: Path
) -> list[str]:
    """FFmpeg command: distorted first, reference second, both converted to yuv420p."""
    h, w = size
    raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:g}"]
    graph = f"[0:v]format=yuv420p[d];[1:v]format=yuv420p[r];[d][r]libvmaf=log_fmt=json:log_path={log.as_posix()}"
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
        *raw, "-i", str(folder / "dec.rgb"),
        *raw, "-i", str(folder / "ref.rgb"),
        "-lavfi", graph, "-f", "null", "-",
    ]  # fmt: skip


def parse_vmaf_log(log: dict, expected: int) -> list[float]:
    """Per-frame ``vmaf`` values from a libvmaf JSON log, checked against the frame count."""
    frames = sorted(log.get("frames", []), key=lambda f: f.get("frameNum", 0))
    values = [float(f["metrics"]["vmaf"]) for f in frames]
    if len(values) != expected:
        raise BackendUnavailableError(f"libvmaf scored {len(values)} frames, expected {expected}")
    return values


def vmaf(
    ref_frames: Iterable[np.ndarray], dec_frames: Iterable[np.ndarray], fps: float = 25.0
) -> list[float]:
    """Per-frame VMAF of two equally long frame sequences."""
    refs, decs = list(ref_frames), list(dec_frames)
    if len(refs) != len(decs):
        raise InputError(
            f"sequence lengths differ: {len(refs)} reference and {len(decs)} decoded frames"
        )
    seq = VmafSequence(fps=fps)
    for ref, dec in zip(refs, decs, strict=True):
        seq.add(ref, dec)
    return seq.run()
