"""Real-camera test clips made from the real face clips: faces that pan across a wide canvas,
leave and come back, two people, phone files (rotation metadata), variable frame rate,
10-bit, full range, odd sizes, audio. Small and short so the tests stay fast; the same
makers build the longer clips of ``benchmarks/bench_real_input.py``."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"


def face_frames(path: str | Path, n: int, side: int | None = None, start: int = 0) -> list:
    """Frames ``start .. start+n-1`` of a clip as RGB arrays (resized to ``side`` when set)."""
    import cv2

    from gfvc.io import read_frames

    out = []
    for i, f in enumerate(read_frames(path, start + n)):
        if i >= start:
            out.append(cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA) if side else f)
    return out


def write_clip(
    path: str | Path,
    frames: list[np.ndarray],
    fps: int = 25,
    *,
    times: list[float] | None = None,
    pix_fmt: str = "yuv420p",
    codec: str = "libx264",
    rotation: int = 0,
    full_range: bool = False,
    audio: bool = False,
) -> Path:
    """Write frames as a camera would: ``times`` (seconds) for variable frame rate,
    ``rotation`` as display-matrix metadata (counter-clockwise degrees, the stored picture
    is the shown one turned back), 10-bit or 4:4:4 ``pix_fmt``, full range, an AAC track."""
    import av

    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        stored = [np.ascontiguousarray(np.rot90(f, -(rotation // 90))) for f in frames]
        s.height, s.width = stored[0].shape[:2]
        s.pix_fmt = pix_fmt
        s.time_base = tb
        s.codec_context.time_base = tb
        if codec == "libx264":
            s.options = {"crf": "16", "preset": "ultrafast"}
        if full_range:
            s.codec_context.color_range = 2  # JPEG / full
        if rotation:
            s.set_display_rotation(rotation)
        a = None
        if audio:
            a = c.add_stream("aac", rate=16000)
            a.layout = "mono"
        for i, f in enumerate(stored):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf = vf.reformat(format=pix_fmt, dst_color_range=2 if full_range else 1)
            t = times[i] if times is not None else i / fps
            vf.pts = int(round(t / tb))
            vf.time_base = tb
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
        if a is not None:
            n = int(16000 * len(frames) / fps)
            tone = (0.2 * np.sin(np.arange(n) * 2 * np.pi * 440 / 16000)).astype(np.float32)
            for k in range(0, n, 1024):
                af = av.AudioFrame.from_ndarray(
                    tone[None, k : k + 1024], format="fltp", layout="mono"
                )
                af.sample_rate = 16000
                af.pts = k
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode(None):
                c.mux(p)
    return Path(path)


def paste(canvas: np.ndarray, face: np.ndarray, x: int, y: int) -> None:
    """Paste ``face`` with its top-left at (x, y), clipped to the canvas."""
    h, w = face.shape[:2]
    H, W = canvas.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x0 < x1 and y0 < y1:
        canvas[y0:y1, x0:x1] = face[y0 - y : y1 - y, x0 - x : x1 - x]


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A calm textured room-like background (gradient plus soft blobs)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([90 + 40 * xx / width, 100 + 30 * yy / height, 110 + 0 * xx], -1)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, 80)
        img += (
            rng.uniform(-30, 30, 3) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r**2)[..., None]
        )
    return np.clip(img, 0, 255).astype(np.uint8)


def pan(faces: list[np.ndarray], width: int, height: int, xs, ys) -> list[np.ndarray]:
    """The face clip moving over a wide canvas: frame i has its top-left at (xs[i], ys[i])."""
    bg = background(width, height)
    out = []
    for f, x, y in zip(faces, xs, ys, strict=False):
        c = bg.copy()
        paste(c, f, int(round(x)), int(round(y)))
        out.append(c)
    return out


def pan_path(n: int, width: int, height: int, side: int, jump_at: int | None = None):
    """A smooth pan from the left to the right third and back, (xs, ys); with ``jump_at``
    the face jumps to the other side there (a cut)."""
    t = np.linspace(0, 1, n)
    xs = 0.08 * width + (0.84 * width - side) * (0.5 - 0.5 * np.cos(2 * np.pi * t))
    ys = (height - side) / 2 + 0.08 * height * np.sin(4 * np.pi * t)
    if jump_at is not None:
        xs[jump_at:] = width - side - xs[jump_at:]
    return xs, ys


def leave_and_return(
    faces: list[np.ndarray], width: int, height: int, gone: tuple[int, int]
) -> list[np.ndarray]:
    """The person slides out of the frame to the right, stays away for frames
    ``gone[0]..gone[1]`` and comes back."""
    n = len(faces)
    side = faces[0].shape[0]
    x_in = (width - side) / 2
    xs = np.full(n, x_in)
    a, b = gone
    k = max(1, min(8, a))
    xs[a - k : a] = np.linspace(x_in, width + 10, k)  # walks out
    xs[a:b] = width + 10
    k2 = min(8, n - b)
    xs[b : b + k2] = np.linspace(width - side * 0.6, x_in, k2)  # comes back
    return pan(faces, width, height, xs, np.full(n, (height - side) / 2))


def two_people(a: list[np.ndarray], b: list[np.ndarray], width: int, height: int, grow_b=1.0):
    """Two faces side by side; the second (right) one grows to ``grow_b`` times its size over
    the clip (so 'the biggest face this frame' changes while the subject does not)."""
    import cv2

    bg = background(width, height, seed=1)
    out = []
    n = min(len(a), len(b))
    for i in range(n):
        c = bg.copy()
        s = a[i].shape[0]
        paste(c, a[i], int(width * 0.25 - s / 2), (height - s) // 2)
        k = 1 + (grow_b - 1) * i / max(1, n - 1)
        sb = int(b[i].shape[0] * k)
        fb = cv2.resize(b[i], (sb, sb))
        paste(c, fb, int(width * 0.75 - sb / 2), (height - sb) // 2)
        out.append(c)
    return out
