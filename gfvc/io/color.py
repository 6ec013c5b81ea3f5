"""RGB <-> Y'CbCr conversion, BT.601 limited range, in integer arithmetic.

Why our own and not swscale: the key frame is decoded on both sides of the codec (the
encoder animates the same decoded picture the decoder will see), so the conversion must give
bit-identical results on every machine. swscale picks SIMD paths per CPU whose rounding can
differ; these integer routines cannot. The same routines back the raw ``.yuv`` reader/writer.

Chroma sits at the centre of each 2x2 luma block (averaged on the way down, bilinear on the
way up), 8-bit samples, Y in [16, 235] and Cb/Cr in [16, 240] for in-gamut input.
"""

from __future__ import annotations

import numpy as np

_SHIFT = 14  # fixed-point fraction bits of the coefficients
_ONE = 1 << _SHIFT


def _fix(x: float) -> int:
    return int(round(x * _ONE))


# Forward matrix (BT.601: Kr = 0.299, Kb = 0.114), rows scaled for 219 / 224 levels.
_KY = np.array([_fix(65.481 / 255), _fix(128.553 / 255), _fix(24.966 / 255)], dtype=np.int32)
_KCB = np.array([_fix(-37.797 / 255), _fix(-74.203 / 255), 0], dtype=np.int32)
_KCB[2] = -_KCB[0] - _KCB[1]  # rows sum to zero, so grey maps to exactly 128
_KCR = np.array([0, _fix(-93.786 / 255), _fix(-18.214 / 255)], dtype=np.int32)
_KCR[0] = -_KCR[1] - _KCR[2]

# Inverse matrix.
_IY = _fix(255 / 219)
_ICR_R = _fix(255 / 112 * 0.701)
_ICB_G = _fix(255 / 112 * 0.886 * 0.114 / 0.587)
_ICR_G = _fix(255 / 112 * 0.701 * 0.299 / 0.587)
_ICB_B = _fix(255 / 112 * 0.886)


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.dtype} {rgb.shape}")


def _dot(rgb32: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Fixed-point weighted channel sum without BLAS (whose summation order may vary)."""
    return rgb32[..., 0] * k[0] + rgb32[..., 1] * k[1] + rgb32[..., 2] * k[2]


def _round_shift(x: np.ndarray, shift: int, offset: int) -> np.ndarray:
    """``round(x / 2**shift) + offset`` clipped to uint8 (integer rounding, half up)."""
    return np.clip(((x + (1 << (shift - 1))) >> shift) + offset, 0, 255).astype(np.uint8)


def rgb_to_yuv444(rgb: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) uint8 -> planar Y'CbCr (3, H, W) uint8, BT.601 limited range."""
    _check_rgb(rgb)
    x = rgb.astype(np.int32)
    y = _round_shift(_dot(x, _KY), _SHIFT, 16)
    cb = _round_shift(_dot(x, _KCB), _SHIFT, 128)
    cr = _round_shift(_dot(x, _KCR), _SHIFT, 128)
    return np.stack([y, cb, cr])


def _sum2x2(p: np.ndarray) -> np.ndarray:
    return p[0::2, 0::2] + p[1::2, 0::2] + p[0::2, 1::2] + p[1::2, 1::2]


def rgb_to_yuv420(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB (H, W, 3) uint8 with even H, W -> I420 planes (Y (H, W), Cb, Cr (H/2, W/2)).

    BT.601 limited range; chroma is the rounded mean of each 2x2 block computed before
    rounding, so it loses no more than one rounding step.
    """
    _check_rgb(rgb)
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"4:2:0 needs even width and height, got {w}x{h}")
    x = rgb.astype(np.int32)
    y = _round_shift(_dot(x, _KY), _SHIFT, 16)
    cb = _round_shift(_sum2x2(_dot(x, _KCB)), _SHIFT + 2, 128)
    cr = _round_shift(_sum2x2(_dot(x, _KCR)), _SHIFT + 2, 128)
    return y, cb, cr


def _up2_axis(c: np.ndarray, axis: int) -> np.ndarray:
    """Centre-sited 2x linear upsampling along ``axis``; the result is 4x the input scale."""
    n = c.shape[axis]
    idx = np.arange(n)
    prev = np.take(c, np.maximum(idx - 1, 0), axis=axis)
    nxt = np.take(c, np.minimum(idx + 1, n - 1), axis=axis)
    even = 3 * c + prev
    odd = 3 * c + nxt
    out = np.stack([even, odd], axis=axis + 1)
    shape = list(c.shape)
    shape[axis] = 2 * n
    return out.reshape(shape)


def _yuv_to_rgb_scaled(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, shift: int) -> np.ndarray:
    """Shared inverse: ``cb``/``cr`` are (C - 128) * 2**shift at luma resolution."""
    y16 = (y.astype(np.int32) - 16) << shift
    r = _IY * y16 + _ICR_R * cr
    g = _IY * y16 - _ICB_G * cb - _ICR_G * cr
    b = _IY * y16 + _ICB_B * cb
    total = _SHIFT + shift
    return np.stack([_round_shift(c, total, 0) for c in (r, g, b)], axis=-1)


def yuv420_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """I420 planes (BT.601 limited) -> RGB (H, W, 3) uint8, bilinear chroma upsampling."""
    h, w = y.shape
    if cb.shape != (h // 2, w // 2) or cr.shape != cb.shape or h % 2 or w % 2:
        raise ValueError(f"bad I420 plane shapes {y.shape}, {cb.shape}, {cr.shape}")
    cb16 = _up2_axis(_up2_axis(cb.astype(np.int32) - 128, 0), 1)  # x16
    cr16 = _up2_axis(_up2_axis(cr.astype(np.int32) - 128, 0), 1)
    return _yuv_to_rgb_scaled(y, cb16, cr16, 4)


def yuv444_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """Planar Y'CbCr (3, H, W) uint8 (BT.601 limited) -> RGB (H, W, 3) uint8."""
    if yuv.ndim != 3 or yuv.shape[0] != 3:
        raise ValueError(f"expected (3, H, W) planes, got {yuv.shape}")
    cb = yuv[1].astype(np.int32) - 128
    cr = yuv[2].astype(np.int32) - 128
    return _yuv_to_rgb_scaled(yuv[0], cb, cr, 0)


def i420_bytes(rgb: np.ndarray) -> bytes:
    """RGB frame -> one I420 frame as raw bytes (Y plane, then Cb, then Cr)."""
    return b"".join(p.tobytes() for p in rgb_to_yuv420(rgb))


def i420_from_buffer(buf: np.ndarray, width: int, height: int) -> np.ndarray:
    """One raw I420 frame (flat uint8, ``width*height*3/2`` samples) -> RGB."""
    n = width * height
    q = n // 4
    y = buf[:n].reshape(height, width)
    cb = buf[n : n + q].reshape(height // 2, width // 2)
    cr = buf[n + q : n + 2 * q].reshape(height // 2, width // 2)
    return yuv420_to_rgb(y, cb, cr)
