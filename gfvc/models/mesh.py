"""``mesh``: the learning-free baseline every learned model must beat.

Feature: 50 MediaPipe FaceMesh landmarks (x, y in pixels of the model-sized frame) covering
the face outline, brows, eyes, irises, nose and lips, smoothed over time at the encoder.
Synthesis: a piecewise-affine warp of the decoded key frame. The key frame's landmarks plus
fixed points on the image border are triangulated (Delaunay); each output pixel is mapped
through the affine transform of the triangle it falls in under the *current* landmarks,
back into the key frame. The border points never move, so the background stays as in the
key frame::

    key frame --(landmarks, sent once as integers)--+
                                                    +--> triangles --> per-pixel affine map
    frame t  --FaceMesh--> smooth --> 100 scalars --+                       |
                                                          key frame --remap--> frame t

It needs no learned weights, so it runs right after ``pip install``; it smears what a warp
cannot create (mouth interior, teeth, eyes closing, hair against moving background).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np

from gfvc.errors import NoFaceError
from gfvc.models.base import FeatureField, MotionModel
from gfvc.models.registry import register_motion_model

#: FaceMesh indices: every other face-oval point, brows, eye corners/lids, iris centres,
#: nose bridge/tip/wings, outer and inner lips. Changing this changes the model hash.
LANDMARKS: tuple[int, ...] = (
    # face oval (clockwise from the forehead top)
    10, 297, 284, 389, 454, 361, 397, 379, 400, 152, 176, 150, 172, 132, 234, 162, 54, 67,
    # brows (right, then left)
    70, 105, 107, 336, 334, 300,
    # eyes: right outer corner, upper lid, inner corner, lower lid; then left
    33, 159, 133, 145, 362, 386, 263, 374,
    # iris centres (right, left)
    468, 473,
    # nose: bridge, tip, wings
    168, 1, 98, 327,
    # outer lips: corners, upper, lower
    61, 37, 0, 267, 291, 314, 17, 84,
    # inner lips
    78, 13, 308, 14,
)  # fmt: skip


class OneEuroFilter:
    """Speed-adaptive low-pass filter (Casiez et al., CHI 2012) for landmark jitter.

    Slow motion is smoothed hard (jitter dominates), fast motion little (lag would show).
    """

    def __init__(
        self, fps: float = 25.0, min_cutoff: float = 1.5, beta: float = 0.05, d_cutoff: float = 1.0
    ):
        self.fps, self.min_cutoff, self.beta, self.d_cutoff = fps, min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def _alpha(self, cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau * self.fps)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self._x is None:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            return x
        dx = (x - self._x) * self.fps
        a_d = self._alpha(self.d_cutoff)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = self._alpha(cutoff)
        self._x = a * x + (1 - a) * self._x
        return self._x.copy()

    def reset(self) -> None:
        self._x = self._dx = None


class LandmarkTracker:
    """FaceMesh on every frame, the chosen points, One-Euro smoothed (encoder side).

    Holds the last pose through a frame where no face is found; a first frame without a face
    is an error. ``dims`` keeps x, y (2) or x, y, z (3) in pixels.
    """

    def __init__(
        self,
        indices: tuple[int, ...],
        dims: int = 2,
        smoothing: bool = True,
        **filter_options: float,
    ) -> None:
        self.indices, self.dims, self.smoothing = list(indices), dims, smoothing
        self._filter = OneEuroFilter(**filter_options)
        self._landmarker = None
        self._last: np.ndarray | None = None
        self.found = True  # whether the last frame showed a face

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        from gfvc.io import FaceLandmarker

        if self._landmarker is None:
            self._landmarker = FaceLandmarker()
        lm = self._landmarker(frame)
        self.found = lm is not None
        if lm is None:
            if self._last is None:
                raise NoFaceError(
                    "no face found in the key frame; check the input or its crop "
                    "(--no-crop is only for already-aligned faces)"
                )
            return self._last
        pts = lm[self.indices, : self.dims].astype(np.float64)
        if self.smoothing:
            pts = self._filter(pts)
        self._last = pts
        return pts

    def reset(self) -> None:
        """Start a new smoothing run (at a key frame). The last pose stays as the fallback for
        a key frame without a face: refresh must not fail because the face is hidden."""
        self._filter.reset()
        self.found = True

    def restart(self) -> None:
        """Start over for another video: FaceMesh's tracking and the fallback pose go too."""
        self.reset()
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None
        self._last = None


def border_points(size: int, per_side: int = 4) -> np.ndarray:
    """Fixed anchor points on the frame border (corners included), (M, 2) float."""
    t = np.linspace(0, size - 1, per_side + 1)
    top = np.stack([t, np.zeros_like(t)], 1)
    bottom = np.stack([t, np.full_like(t, size - 1)], 1)
    left = np.stack([np.zeros_like(t[1:-1]), t[1:-1]], 1)
    right = np.stack([np.full_like(t[1:-1], size - 1), t[1:-1]], 1)
    return np.concatenate([top, bottom, left, right])


def triangulate(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles (T, 3) of ``points``; deterministic for identical input."""
    from scipy.spatial import Delaunay

    return Delaunay(points).simplices.astype(np.int32)


def piecewise_affine_maps(
    src_pts: np.ndarray, dst_pts: np.ndarray, triangles: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel sampling maps (map_x, map_y) for ``cv2.remap`` that move ``src`` onto ``dst``.

    Convention: points are (x, y) in pixels, pixel centres at integer coordinates, origin top
    left. For an output pixel p inside triangle t of ``dst_pts`` the map holds A_t p, where
    A_t is the affine transform taking that triangle's ``dst`` corners to its ``src``
    corners. Pixels outside every triangle map to themselves.
    """
    import cv2

    tri_map = np.full((size, size), -1, dtype=np.int32)
    dst_fixed = np.round(dst_pts * 16).astype(np.int32)  # 4 fractional bits for fillConvexPoly
    for t, tri in enumerate(triangles):
        cv2.fillConvexPoly(tri_map, dst_fixed[tri], int(t), lineType=cv2.LINE_8, shift=4)
    d = np.concatenate([dst_pts[triangles], np.ones((len(triangles), 3, 1))], axis=2)  # (T, 3, 3)
    s = src_pts[triangles]  # (T, 3, 2)
    try:
        affine = np.linalg.solve(d, s)  # (T, 3, 2): [x y 1] @ A = source xy
    except np.linalg.LinAlgError:  # a degenerate (flat) triangle: least squares instead
        affine = np.linalg.pinv(d) @ s
    # Pixels outside every triangle get the identity transform (an extra last entry).
    affine = np.concatenate([affine, [[[1, 0], [0, 1], [0, 0]]]]).astype(np.float32)
    idx = np.where(tri_map >= 0, tri_map, len(affine) - 1)
    ys, xs = _pixel_grid(size)
    coef = np.take(affine.reshape(-1, 6), idx, axis=0)  # (H, W, 6)
    map_x = xs * coef[..., 0] + ys * coef[..., 2] + coef[..., 4]
    map_y = xs * coef[..., 1] + ys * coef[..., 3] + coef[..., 5]
    return map_x, map_y


@functools.lru_cache(maxsize=4)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    ys.flags.writeable = xs.flags.writeable = False
    return ys, xs


@register_motion_model("mesh")
class MeshModel(MotionModel):
    """Landmark-driven piecewise-affine warp (no learned weights)."""

    model_id: ClassVar[int] = 1
    default_qstep: ClassVar[float] = 0.5  # 2-pixel steps at 256x256 (closed loop: error <= 1 px)
    send_key_feature: ClassVar[bool] = True
    cheap_preview: ClassVar[bool] = True  # synthesis is one warp

    @property
    def tracking(self) -> bool:
        return self._tracker.found

    def __init__(self, size: int = 256, smoothing: bool = True, fps: float = 25.0) -> None:
        self.size = size
        self._tracker = LandmarkTracker(LANDMARKS, dims=2, smoothing=smoothing, fps=fps)
        self._key_cache: tuple[bytes, np.ndarray, np.ndarray] | None = None

    @classmethod
    def create(cls, *, checkpoint=None, config=None, device="cpu", size=256) -> MeshModel:
        if checkpoint is not None:
            from gfvc.errors import CheckpointError

            raise CheckpointError("the mesh model has no learned weights; drop --checkpoint")
        return cls(size=size)

    @property
    def fields(self) -> tuple[FeatureField, ...]:
        return (FeatureField("landmarks", "coordinates", (len(LANDMARKS), 2)),)

    def config_dict(self) -> dict[str, Any]:
        return {"model": "mesh", "version": 1, "landmarks": list(LANDMARKS), "border": 4}

    # -- encoder side
    def analyse(self, frame: np.ndarray) -> np.ndarray:
        return self._tracker(frame).reshape(-1).copy()

    def reset(self) -> None:
        self._tracker.reset()

    # -- decoder side
    def _key_geometry(self, key_feature: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        digest = np.asarray(key_feature, dtype=np.float64).tobytes()
        if self._key_cache is None or self._key_cache[0] != digest:
            pts = np.concatenate([key_feature.reshape(-1, 2), border_points(self.size)])
            self._key_cache = (digest, pts, triangulate(pts))
        return self._key_cache[1], self._key_cache[2]

    def synthesize(
        self, key_frame: np.ndarray, key_feature: np.ndarray, feature: np.ndarray
    ) -> np.ndarray:
        import cv2

        src, tris = self._key_geometry(key_feature)
        dst = np.concatenate(
            [np.asarray(feature, dtype=np.float64).reshape(-1, 2), border_points(self.size)]
        )
        map_x, map_y = piecewise_affine_maps(src, dst, tris, self.size)
        return cv2.remap(key_frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
