"""Frame checks and resizing shared by the evaluation modules.

Every metric takes numpy frames of shape (H, W, 3), dtype uint8, RGB. The checks live in one
place so that every metric refuses the same bad inputs with the same one-line message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from gfvc.errors import InputError


def check_frame(frame: np.ndarray, what: str = "frame") -> np.ndarray:
    """Return ``frame`` as a C-contiguous (H, W, 3) uint8 array or raise ``InputError``."""
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"{what} must have shape (H, W, 3), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise InputError(f"{what} must be uint8 RGB, got dtype {arr.dtype}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"{what} is empty: shape {arr.shape}")
    return np.ascontiguousarray(arr)


def check_pair(ref: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (reference, decoded) pair: both valid frames of the same size."""
    ref = check_frame(ref, "reference frame")
    dec = check_frame(dec, "decoded frame")
    if ref.shape != dec.shape:
        raise InputError(
            f"reference frame is {ref.shape[1]}x{ref.shape[0]} but decoded frame is "
            f"{dec.shape[1]}x{dec.shape[0]}"
        )
    return ref, dec


def resize_rgb(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a uint8 RGB frame: area averaging when shrinking, bilinear when enlarging.

    Done with torch (already a dependency) so that no image library is needed; the result is
    rounded back to uint8 so landmark detectors see an ordinary 8-bit image.
    """
    if frame.shape[0] == height and frame.shape[1] == width:
        return frame
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].to(torch.float32)
    shrinking = height <= frame.shape[0] and width <= frame.shape[1]
    with torch_threads(1):
        if shrinking:
            y = F.interpolate(x, size=(height, width), mode="area")
        else:
            y = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    out = y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    return np.ascontiguousarray(out)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run small torch ops on ``n`` threads, restoring the previous count afterwards.

    Tiny per-frame ops (MS-SSIM at 256x256, resizing) gain nothing from several threads, and
    on a busy machine OpenMP spin-waiting made them 10-50x slower (measured 11 ms vs 240 ms).
    """
    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
