"""Pixel-fidelity metrics: PSNR (RGB and Y), SSIM and MS-SSIM on one frame pair.

Definitions are fixed in docs/metrics.md; the reference software disagrees on each of them
(RGB-mean vs Y PSNR, R-only vs RGB SSIM), so every choice here is written down once.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pytorch_msssim import ms_ssim as _torch_ms_ssim
from scipy.ndimage import correlate1d

from gfvc.eval._frames import check_pair, torch_threads

#: PSNR reported for identical frames (MSE == 0), as in the reference software.
PSNR_IDENTICAL_DB = 100.0
#: Peak value of 8-bit samples.
PEAK = 255.0
#: BT.709 luma weights (Kr, Kg, Kb), applied to full-range RGB (no 16..235 scaling).
BT709_LUMA = (0.2126, 0.7152, 0.0722)
#: SSIM window: Gaussian, 11 taps, sigma 1.5 (Wang et al. 2004).
SSIM_WIN_SIZE = 11
SSIM_WIN_SIGMA = 1.5
#: MS-SSIM (5 scales, 11-tap window) needs each side larger than (11 - 1) * 2**4 = 160.
MS_SSIM_MIN_SIDE = 161


def mse_to_psnr(mse: float, peak: float = PEAK) -> float:
    """PSNR in dB from a mean squared error; MSE == 0 gives ``PSNR_IDENTICAL_DB``."""
    if mse <= 0.0:
        return PSNR_IDENTICAL_DB
    return 10.0 * math.log10(peak * peak / mse)


def rgb_to_y(frame: np.ndarray) -> np.ndarray:
    """Full-range BT.709 luma as float64 (0..255, not rounded): Y = .2126R + .7152G + .0722B."""
    kr, kg, kb = BT709_LUMA
    f = frame.astype(np.float64)
    return kr * f[..., 0] + kg * f[..., 1] + kb * f[..., 2]


def psnr_rgb(ref: np.ndarray, dec: np.ndarray) -> float:
    """PSNR of the MSE taken over all three RGB channels together (one MSE, one log)."""
    ref, dec = check_pair(ref, dec)
    diff = ref.astype(np.float64) - dec.astype(np.float64)
    return mse_to_psnr(float(np.mean(diff * diff)))


def psnr_y(ref: np.ndarray, dec: np.ndarray) -> float:
    """PSNR of full-range BT.709 luma computed from RGB (unrounded float Y, peak 255)."""
    ref, dec = check_pair(ref, dec)
    diff = rgb_to_y(ref) - rgb_to_y(dec)
    return mse_to_psnr(float(np.mean(diff * diff)))


def _y_tensor(frame: np.ndarray) -> torch.Tensor:
    """Luma plane as a (1, 1, H, W) float32 tensor for pytorch-msssim."""
    return torch.from_numpy(rgb_to_y(frame)).to(torch.float32)[None, None]


def gaussian_window(size: int = SSIM_WIN_SIZE, sigma: float = SSIM_WIN_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian taps (the 2-D window is their outer product)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _valid_blur(plane: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable filtering keeping only positions where the window lies inside the image."""
    r = len(taps) // 2
    rows = correlate1d(plane, taps, axis=0, mode="constant")[r:-r]
    return correlate1d(rows, taps, axis=1, mode="constant")[:, r:-r]


def ssim_map(x: np.ndarray, y: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """SSIM map of two float planes ('valid' positions only), K1 = 0.01, K2 = 0.03."""
    taps = gaussian_window()
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mx, my = _valid_blur(x, taps), _valid_blur(y, taps)
    vxx = _valid_blur(x * x, taps) - mx * mx
    vyy = _valid_blur(y * y, taps) - my * my
    cxy = _valid_blur(x * y, taps) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vxx + vyy + c2))


def ssim(ref: np.ndarray, dec: np.ndarray) -> float | None:
    """SSIM on BT.709 luma: Gaussian 11x11 window, sigma 1.5, K1 .01, K2 .03, L 255, 'valid'
    borders, mean of the SSIM map (float64). None when a side is shorter than the window."""
    ref, dec = check_pair(ref, dec)
    if min(ref.shape[:2]) < SSIM_WIN_SIZE:
        return None
    return float(np.mean(ssim_map(rgb_to_y(ref), rgb_to_y(dec))))


def ms_ssim_unavailable_reason(height: int, width: int) -> str | None:
    """Why MS-SSIM cannot be computed at this size, or None when it can."""
    if min(height, width) < MS_SSIM_MIN_SIDE:
        return f"ms_ssim needs both sides >= {MS_SSIM_MIN_SIDE} px (5 scales of an 11-tap window), got {width}x{height}"
    return None


def ms_ssim(ref: np.ndarray, dec: np.ndarray) -> float | None:
    """MS-SSIM (pytorch-msssim, 5 scales, default weights, float32) on BT.709 luma; None below
    161 px."""
    ref, dec = check_pair(ref, dec)
    if ms_ssim_unavailable_reason(*ref.shape[:2]) is not None:
        return None
    with torch_threads(1):
        value = _torch_ms_ssim(
            _y_tensor(ref),
            _y_tensor(dec),
            data_range=PEAK,
            win_size=SSIM_WIN_SIZE,
            win_sigma=SSIM_WIN_SIGMA,
        )
    return float(value)
