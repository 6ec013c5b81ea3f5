"""Foveated base pictures: more of the base layer's pixels on the eyes and mouth.

A uniform 128x128 base spends as many pixels on hair, neck and background as on the eyes and
mouth, though these decide whether an expression reads. The base picture here samples the
frame non-uniformly, separably per axis: source density ``1 + gain * N(centre, sigma)``, so
at ``gain`` 1 the face centre gets up to twice the linear resolution of the borders. The
encoder averages each base pixel's source interval exactly (area downsampling); the decoder
maps back with cubic (Catmull-Rom) interpolation at each output pixel's base coordinate.
Both are small matrices: ``base = Dy @ frame @ Dx.T``, ``up = Uy @ base @ Ux.T``.

Measured on three unseen clips (x265 ABR at 11 kbps, 128x128 base alone, 10 s each):
landmark distance 1.63 -> 1.41 px, identity 0.434 -> 0.412, mouth error 0.031 -> 0.026,
MS-SSIM 0.947 -> 0.944 (docs/enhance.md). The encoder signals the map in 5 bytes at each key
unit, so it may follow the face (``Fovea.around``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from gfvc.errors import BitstreamError

#: Fine grid on which each axis's density is integrated.
_FINE = 4096
#: Least sigma a stream may signal (in frame widths): narrower maps alias badly.
MIN_SIGMA = 0.05
#: The encoder's density gain per base size. At 64x64 the borders would be left with about
#: 43 pixels across, and the 12 kbps point lost VMAF (31.7 -> 24.2) and eye error for little
#: landmark distance (docs/enhance.md): that base stays uniform. At 128x128, gains 1.5 and 2
#: scored better on the face on the three ctc clips once the warp was aligned to the base,
#: but worse where the face moves away from the map's centre (the hard case's pan and cuts,
#: 12 kbps: identity 0.351 -> 0.397, error after a cut 5.7 -> 6.4; docs/enhance.md).
GAIN_BY_BASE_SIZE = {64: 0.0, 128: 1.0}


@dataclass(frozen=True)
class Fovea:
    """A separable map: centre (cx, cy) and spread (sx, sy) in frame widths/heights, and the
    density gain at the centre (0: uniform). Stored quantized, so encoder and decoder build
    the same matrices from the same 5 bytes."""

    cx: float = 0.5
    cy: float = 0.56
    sx: float = 0.2
    sy: float = 0.2
    gain: float = 1.0

    def to_bytes(self) -> bytes:
        q = [round(v * 255) for v in (self.cx, self.cy, self.sx, self.sy)]
        return bytes([*(min(255, max(0, v)) for v in q), min(255, max(0, round(self.gain * 16)))])

    @classmethod
    def from_bytes(cls, data: bytes) -> Fovea:
        if len(data) != 5:
            raise BitstreamError("base-layer key picture lacks its sampling map")
        cx, cy, sx, sy = (v / 255 for v in data[:4])
        if min(sx, sy) < MIN_SIGMA:
            raise BitstreamError("base-layer sampling map is corrupt (spread too small)")
        return cls(cx, cy, sx, sy, data[4] / 16)

    def quantized(self) -> Fovea:
        return Fovea.from_bytes(self.to_bytes())

    @classmethod
    def around(cls, eyes: np.ndarray, mouth: np.ndarray, size: int, gain: float = 1.0) -> Fovea:
        """The map centred between the eyes and the mouth of a face ((N, 2) pixel points
        in a ``size`` frame); the default map when the points are missing or implausible."""
        if not (len(eyes) and len(mouth)):
            return cls(gain=gain).quantized()
        e, m = eyes[:, :2].mean(0) / size, mouth[:, :2].mean(0) / size
        c = np.clip((e + m) / 2, 0.2, 0.8)
        if not np.all(np.isfinite(c)):
            return cls(gain=gain).quantized()
        return cls(float(c[0]), float(c[1]), gain=gain).quantized()


def fovea_for(
    points: tuple[np.ndarray, np.ndarray] | None, frame_size: int, base_size: int
) -> Fovea:
    """The encoder's map for a key picture: centred on the eyes and mouth ``points`` (a
    model's ``eyes_and_mouth``; None: no face), at the gain of ``base_size``."""
    gain = GAIN_BY_BASE_SIZE[base_size]
    if points is None:
        return Fovea(gain=gain).quantized()
    return Fovea.around(*points, frame_size, gain=gain)


def _edges(n_src: int, n_dst: int, c: float, s: float, g: float) -> np.ndarray:
    """Source coordinates (pixels) of the n_dst + 1 edges of the base pixels."""
    x = np.linspace(0, 1, _FINE + 1)
    mid = (x[:-1] + x[1:]) / 2
    cdf = np.concatenate([[0.0], np.cumsum(1 + g * np.exp(-0.5 * ((mid - c) / s) ** 2))])
    return np.interp(np.arange(n_dst + 1) / n_dst, cdf / cdf[-1], x) * n_src


@lru_cache(maxsize=64)
def down_matrix(n_src: int, n_dst: int, c: float, s: float, g: float) -> np.ndarray:
    """(n_dst, n_src) float32: each base pixel the exact mean of its source interval."""
    e = _edges(n_src, n_dst, c, s, g)
    px = np.arange(n_src)
    overlap = np.minimum(e[1:, None], px + 1) - np.maximum(e[:-1, None], px)
    d = np.clip(overlap, 0, None)
    return (d / d.sum(1, keepdims=True)).astype(np.float32)


def _catmull_rom(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    near = 1.5 * t**3 - 2.5 * t**2 + 1
    far = -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


@lru_cache(maxsize=64)
def up_matrix(n_src: int, n_dst: int, c: float, s: float, g: float) -> np.ndarray:
    """(n_src, n_dst) float32: cubic interpolation of the base at each frame pixel's base
    coordinate (the inverse map of ``down_matrix``; edges clamped)."""
    e = _edges(n_src, n_dst, c, s, g)
    centres = np.arange(n_src) + 0.5
    u = np.interp(centres, e, np.arange(n_dst + 1)) - 0.5  # in base pixel units
    m = np.zeros((n_src, n_dst))
    rows, first = np.arange(n_src), np.floor(u).astype(int)
    for k in range(-1, 3):
        j = first + k
        np.add.at(m, (rows, np.clip(j, 0, n_dst - 1)), _catmull_rom(u - j))
    return (m / m.sum(1, keepdims=True)).astype(np.float32)


def _axes(
    f: Fovea, n_src: int, n_dst: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ys, xs = (n_src, n_dst, f.cy, f.sy, f.gain), (n_src, n_dst, f.cx, f.sx, f.gain)
    return down_matrix(*ys), down_matrix(*xs), up_matrix(*ys), up_matrix(*xs)


def _band(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A banded (rows, cols) matrix as (rows, K) column indices and weights."""
    k = int((m > 0).sum(1).max())
    first = np.clip((m > 0).argmax(1), 0, m.shape[1] - k)
    idx = first[:, None] + np.arange(k)
    return idx, np.take_along_axis(m, idx, 1)


@lru_cache(maxsize=64)
def _down_bands(f: Fovea, n_src: int, n_dst: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    dy, dx, _, _ = _axes(f, n_src, n_dst)
    return _band(dy), _band(dx)


def downscale(frame: np.ndarray, size: int) -> np.ndarray:
    """The uniform base picture of a frame (area averaging)."""
    import cv2

    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)


def upscale(base: torch.Tensor, size: int) -> torch.Tensor:
    """Uniform base pictures (B, 3, s, s) in [0, 1] at frame size: bicubic, clamped."""
    if base.shape[-1] == size:
        return base
    return F.interpolate(base, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def foveate(frame: np.ndarray, fovea: Fovea | None, size: int) -> np.ndarray:
    """(S, S, 3) uint8 frame -> (size, size, 3) uint8 base picture; uniform (``downscale``)
    without a map or at gain 0. Gathers over the matrices' bands, no BLAS: OpenBLAS's (and
    torch's) spinning threads stalled the x265 and SVT-AV1 encoders beside them (two encoders
    on 2 cores: 48 s for 100 frames, not 1.8 s)."""
    if fovea is None or not fovea.gain:
        return downscale(frame, size)
    (iy, wy), (ix, wx) = _down_bands(fovea, frame.shape[0], size)
    img = frame.astype(np.float32)
    rows = np.einsum("jk,jkxc->jxc", wy, img[iy], optimize=False)  # (size, S, 3)
    out = np.einsum("lk,ylkc->ylc", wx, rows[:, ix], optimize=False)  # (size, size, 3)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def defoveate(base: torch.Tensor, fovea: Fovea | None, size: int) -> torch.Tensor:
    """(B, 3, s, s) base pictures in [0, 1] -> (B, 3, size, size), clamped; uniform
    (``upscale``) without a map or at gain 0."""
    if fovea is None or not fovea.gain:
        return upscale(base, size)
    _, _, uy, ux = _axes(fovea, size, base.shape[-1])
    uy_t, ux_t = torch.from_numpy(uy), torch.from_numpy(ux)
    return (uy_t @ base.float() @ ux_t.T).clamp(0, 1)
