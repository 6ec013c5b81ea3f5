"""A linear 3-D face-shape model on FaceMesh landmarks: rigid pose plus named expressions.

Why: FaceMesh gives 478 points per frame, far too many to send. Most of their motion is rigid
head motion (6 numbers) plus a few expression modes. This module splits a landmark set into

    pose        yaw, pitch, roll (degrees), tx, ty (pixels), 100 ln(scale)
    expression  coefficients on a basis fitted on training landmarks; the first components are
                *named* (jaw open, smile, blinks, brows, gaze), the rest are PCA of what the
                named ones leave, so every number can be edited with a meaning
and puts them back together relative to the key frame's own landmarks (which keep the
person's identity shape).

Convention: image points are (x, y, z) in pixels of the coded frame (FaceMesh's z scaled like
x); canonical points are the same points after removing the similarity transform, in a frame
where the mean face is about 100 units wide and centred on the origin. image = s R canon + t.
Expression units are pixels: a coefficient of 1 moves the most-moving point of its component
by one canonical unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# FaceMesh indices used by the model: face oval, brows, eyes, irises, nose, lips (162 points).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)  # fmt: skip
BROWS = (46, 52, 53, 55, 63, 65, 66, 70, 105, 107, 276, 282, 283, 285, 293, 295, 296, 300, 334, 336)
EYES = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246,
        249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)  # fmt: skip
IRISES = (468, 469, 470, 471, 472, 473, 474, 475, 476, 477)
NOSE = (
    1,
    2,
    4,
    5,
    6,
    19,
    45,
    48,
    64,
    94,
    97,
    98,
    115,
    168,
    195,
    197,
    220,
    275,
    278,
    294,
    326,
    327,
    344,
    440,
)
LIPS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191,
        267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)  # fmt: skip
POINTS: tuple[int, ...] = FACE_OVAL + BROWS + EYES + IRISES + NOSE + LIPS
_POS = {idx: i for i, idx in enumerate(POINTS)}
#: Points that move little with expression: used to fit the head pose.
RIGID = tuple(
    _POS[i]
    for i in (10, 109, 338, 67, 297, 6, 168, 197, 195, 5, 4, 33, 133, 263, 362, 234, 454, 127, 356)
)

POSE_NAMES = ("yaw", "pitch", "roll", "tx", "ty", "scale")
#: Named expression measures: (name, function of canonical points) -> a scalar per frame.
NAMED = ("jaw_open", "smile", "lip_pucker", "blink_left", "blink_right", "brow_raise",
         "gaze_left_x", "gaze_left_y", "gaze_right_x", "gaze_right_y")  # fmt: skip


def _p(c: np.ndarray, idx: int) -> np.ndarray:
    return c[..., _POS[idx], :]


def named_measures(canon: np.ndarray) -> np.ndarray:
    """(..., P, 3) canonical points -> (..., len(NAMED)) expression measures (canonical units)."""
    d = np.linalg.norm
    jaw = d(_p(canon, 13) - _p(canon, 14), axis=-1)
    smile = d(_p(canon, 61) - _p(canon, 291), axis=-1)
    pucker = d(_p(canon, 0) - _p(canon, 17), axis=-1) - 0.5 * smile
    blink_l = d(_p(canon, 386) - _p(canon, 374), axis=-1)
    blink_r = d(_p(canon, 159) - _p(canon, 145), axis=-1)
    brow = 0.5 * (
        (_p(canon, 33)[..., 1] - _p(canon, 105)[..., 1])
        + (_p(canon, 263)[..., 1] - _p(canon, 334)[..., 1])
    )
    eye_l = 0.5 * (_p(canon, 362) + _p(canon, 263))
    eye_r = 0.5 * (_p(canon, 33) + _p(canon, 133))
    gl = _p(canon, 473) - eye_l
    gr = _p(canon, 468) - eye_r
    return np.stack(
        [
            jaw,
            smile,
            pucker,
            blink_l,
            blink_r,
            brow,
            gl[..., 0],
            gl[..., 1],
            gr[..., 0],
            gr[..., 1],
        ],
        axis=-1,
    )


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares s, R, t with dst ~= s R src + t (Umeyama 1991); R a proper rotation."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    fix = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    r = u @ fix @ vt
    s = float(np.trace(np.diag(sig) @ fix) / (a**2).sum(1).mean())
    return s, r, mu_d - s * r @ mu_s


def rotation_from_euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Rz(roll) Ry(yaw) Rx(pitch), angles in degrees (x right, y down, z into the screen)."""
    y, p, r = np.radians([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def euler_from_rotation(r: np.ndarray) -> tuple[float, float, float]:
    """Inverse of ``rotation_from_euler`` (degrees), for |yaw| < 90."""
    yaw = np.arcsin(np.clip(-r[2, 0], -1, 1))
    pitch = np.arctan2(r[2, 1], r[2, 2])
    roll = np.arctan2(r[1, 0], r[0, 0])
    return float(np.degrees(yaw)), float(np.degrees(pitch)), float(np.degrees(roll))


@dataclass
class ShapeModel:
    """Mean canonical shape and expression basis (shipped as a small .npz)."""

    mean: np.ndarray  # (P, 3)
    basis: np.ndarray  # (K, P, 3); row k moves points by coefficient * basis[k]
    names: tuple[str, ...]  # K names: NAMED first, then pca1, pca2 ...

    @property
    def n_expr(self) -> int:
        return len(self.names)

    def save(self, path: str | Path) -> None:
        np.savez_compressed(
            path,
            mean=self.mean.astype(np.float32),
            basis=self.basis.astype(np.float32),
            names=np.array(self.names),
        )

    @classmethod
    def load(cls, path: str | Path) -> ShapeModel:
        d = np.load(path)
        return cls(
            d["mean"].astype(np.float64),
            d["basis"].astype(np.float64),
            tuple(str(n) for n in d["names"]),
        )

    # -- analysis
    def pose(self, pts: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Similarity (s, R, t) taking the mean shape onto ``pts`` (P, 3), fitted on rigid points."""
        rig = list(RIGID)
        return similarity_fit(self.mean[rig], pts[rig])

    def canonical(self, pts: np.ndarray, s: float, r: np.ndarray, t: np.ndarray) -> np.ndarray:
        return (pts - t) @ r / s

    def coefficients(self, canon: np.ndarray) -> np.ndarray:
        """Least-squares expression coefficients of a canonical shape."""
        if getattr(self, "_pinv", None) is None:
            self._pinv = np.linalg.pinv(self.basis.reshape(self.n_expr, -1).T)
        return self._pinv @ (canon - self.mean).ravel()

    def analyse(self, pts: np.ndarray) -> np.ndarray:
        """(P, 3) image points -> pose (6) + expression (K) feature vector."""
        s, r, t = self.pose(pts)
        yaw, pitch, roll = euler_from_rotation(r)
        canon = self.canonical(pts, s, r, t)
        return np.concatenate(
            [[yaw, pitch, roll, t[0], t[1], 100 * np.log(s)], self.coefficients(canon)]
        )

    # -- synthesis
    def template(self, feature: np.ndarray) -> np.ndarray:
        """The mean face with ``feature``'s expression and pose: a prediction of its points."""
        s, r, t = _pose_of(feature)
        return s * (self.mean + np.tensordot(feature[6:], self.basis, axes=1)) @ r.T + t

    def animate(
        self, key_pts: np.ndarray, key_feature: np.ndarray, feature: np.ndarray
    ) -> np.ndarray:
        """Driving image points: the key's own shape, moved by the change of expression, posed.

        key_pts (P, 3) are the key frame's landmarks (its identity shape); the features are
        pose + expression vectors of the key and the driving frame.
        """
        ks, kr, kt = _pose_of(key_feature)
        key_canon = self.canonical(key_pts, ks, kr, kt)
        de = feature[6:] - key_feature[6:]
        canon = key_canon + np.tensordot(de, self.basis, axes=1)
        s, r, t = _pose_of(feature)
        return s * canon @ r.T + t


def _pose_of(feature: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    yaw, pitch, roll, tx, ty, ls = feature[:6]
    return float(np.exp(ls / 100)), rotation_from_euler(yaw, pitch, roll), np.array([tx, ty, 0.0])


def fit_shape_model(landmarks: np.ndarray, n_pca: int = 12, iters: int = 3) -> ShapeModel:
    """Fit mean, named components and PCA on (N, P, 3) image landmarks of many people."""
    # mean shape: iterate Procrustes alignment (generalised Procrustes analysis)
    mean = landmarks[0] - landmarks[0].mean(0)
    for _ in range(iters):
        canon = []
        for pts in landmarks:
            s, r, t = similarity_fit(mean[list(RIGID)], pts[list(RIGID)])
            canon.append((pts - t) @ r / s)
        canon = np.stack(canon)
        mean = canon.mean(0)
        mean -= mean.mean(0)
        width = np.ptp(mean[:, 0])
        mean *= 100.0 / width
    canon = []
    for pts in landmarks:
        s, r, t = similarity_fit(mean[list(RIGID)], pts[list(RIGID)])
        canon.append((pts - t) @ r / s)
    canon = np.stack(canon)
    dev = (canon - mean).reshape(len(canon), -1)
    dev -= dev.mean(0)
    # named components: regression of the deviation on each (centred) measure, in turn,
    # removing what earlier components explain (Gram-Schmidt on the data)
    meas = named_measures(canon)
    comps, resid = [], dev.copy()
    for k in range(len(NAMED)):
        m = meas[:, k] - meas[:, k].mean()
        v = resid.T @ m / max(m @ m, 1e-9)
        comps.append(v)
        coef = resid @ v / (v @ v)
        resid = resid - np.outer(coef, v)
    # the rest: principal components of what the named ones leave
    _, _, vt = np.linalg.svd(resid, full_matrices=False)
    comps += list(vt[:n_pca])
    basis = []
    for v in comps:
        v = v.reshape(-1, 3)
        basis.append(v / np.abs(v).max())  # a coefficient of 1 moves the busiest point by 1 unit
    names = NAMED + tuple(f"pca{i + 1}" for i in range(n_pca))
    return ShapeModel(mean, np.stack(basis), names)
