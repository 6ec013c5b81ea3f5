"""The animated key frame moved onto the base picture's geometry before fusion.

The mesh warp carries the person's sharp texture, but where the face is not where the warp
put it (eyes closing beyond the reference, a jaw the mesh does not follow, hair and collar
that the mesh leaves behind) the fusion network can only fall back on the blurry base. A
dense optical flow from the upscaled base to the (equally blurred) warp moves the warp's
texture to where the camera saw it, so the network takes more of it. DIS flow at OpenCV's
"fast" preset costs about 1 ms a 256x256 frame on one core.

Measured on three unseen clips (lp_d3, vr_1, dpe_d, 10 s each) with the packaged fusion
network as it was (a fine-tune on aligned warps lost eye error): docs/enhance.md, "Aligning the
warp to the base". Decoder only: nothing here feeds back into prediction, so small float
differences between machines cannot accumulate.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Gaussian blur (pixels at 256x256) applied to the warp before the flow is estimated, so
#: that its sharp texture matches the upscaled base's blur.
FLOW_SIGMA = 1.5
#: Name of the alignment recorded in a fusion checkpoint trained with it.
ALIGN_NAME = "dis-fast-1.5"


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


class WarpAligner:
    """Moves a warped frame onto a base picture's geometry (both (H, W, 3) uint8 RGB)."""

    def __init__(self) -> None:
        cv2.setNumThreads(1)  # beside torch's threads; 1 ms a frame needs no more
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        self._grid: tuple[np.ndarray, np.ndarray] | None = None

    def _coords(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        if self._grid is None or self._grid[0].shape != (h, w):
            gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            self._grid = (gx, gy)
        return self._grid

    def __call__(self, warped: np.ndarray, base_up: np.ndarray) -> np.ndarray:
        target = _gray(base_up)
        moving = cv2.GaussianBlur(_gray(warped), (0, 0), FLOW_SIGMA)
        flow = self._flow.calc(target, moving, None)  # target(x) ~ moving(x + flow(x))
        gx, gy = self._coords(*target.shape)
        return cv2.remap(
            warped,
            gx + flow[..., 0],
            gy + flow[..., 1],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
