"""``landmark``: the default model — FaceMesh motion code, mesh warp, learned refinement.

Per frame it sends 28 numbers with a meaning each (see ``faceshape``): head pose (yaw,
pitch, roll, translation, scale) and 22 expression coefficients, the first ten named (jaw
open, smile, lip pucker, blinks, brow raise, gaze). The key frame's own 162 landmarks travel
once in the key unit, so the decoder knows the person's face shape without running FaceMesh.

Synthesis::

    key landmarks --(change of expression, new pose)--> driving landmarks
    key frame --piecewise-affine warp (key -> driving landmarks)--> warped
    [warped, key frame, driving mouth/eye masks] --refiner U-Net--> residual, alpha
    output = warped + alpha * residual

The refiner is a small depthwise-separable U-Net trained on CPU (``gfvc train``); it fixes
what a warp cannot: the mouth interior, eyes, occlusion edges. Everything the decoder derives
is computed from transmitted integers, so encoder and decoder agree exactly on the features.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gfvc.errors import BitstreamError, CheckpointError
from gfvc.models.base import FeatureField, MotionModel
from gfvc.models.faceshape import LIPS, POINTS, ShapeModel
from gfvc.models.mesh import LandmarkTracker, border_points, piecewise_affine_maps, triangulate
from gfvc.models.registry import register_motion_model

INNER_LIPS = (
    78,
    191,
    80,
    81,
    82,
    13,
    312,
    311,
    310,
    415,
    308,
    324,
    318,
    402,
    317,
    14,
    87,
    178,
    88,
    95,
)
LEFT_EYE_RING = (362, 398, 384, 385, 386, 387, 388, 466, 263, 249, 390, 373, 374, 380, 381, 382)
RIGHT_EYE_RING = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
_POS = {idx: i for i, idx in enumerate(POINTS)}
assert all(i in _POS for i in INNER_LIPS + LEFT_EYE_RING + RIGHT_EYE_RING + LIPS)
KEY_POINT_STEP = 0.5  # key landmarks are sent on a half-pixel grid


def data_file(name: str) -> Path:
    return Path(str(resources.files("gfvc") / "data" / name))


# ----------------------------------------------------------------------------- network


class DSConv(nn.Module):
    """Depthwise 3x3 + pointwise 1x1 (+ activation): a conv at a ninth of the cost."""

    def __init__(self, cin: int, cout: int, stride: int = 1, act: bool = True) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.pw = nn.Conv2d(cin, cout, 1)
        self.act = nn.LeakyReLU(0.1, inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.pw(self.dw(x)))


class DSRes(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.a, self.b = DSConv(ch, ch), DSConv(ch, ch, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.b(self.a(x)), 0.1)


class Refiner(nn.Module):
    """U-Net on [warped, key, masks] (9 channels) -> residual (3) and alpha (1), same size.

    The U-Net runs at half resolution (motion and context are low-frequency); a light
    full-resolution head sees the input again, so edges stay sharp. Shapes: input
    (B, 9, H, W) float in [0, 1] with H, W multiples of 32; output (B, 4, H, W).
    """

    def __init__(self, width: int = 24, in_ch: int = 9) -> None:
        super().__init__()
        w = [width, width * 2, width * 4, width * 6, width * 8]
        self.stem = nn.Sequential(nn.Conv2d(in_ch, w[0], 3, 2, 1), nn.LeakyReLU(0.1, inplace=True))
        self.down = nn.ModuleList(
            nn.Sequential(DSConv(w[i], w[i + 1], stride=2), DSRes(w[i + 1])) for i in range(4)
        )
        self.mid = nn.Sequential(DSRes(w[4]), DSRes(w[4]))
        self.up = nn.ModuleList(
            nn.Sequential(DSConv(w[i + 1] + w[i], w[i]), DSRes(w[i])) for i in reversed(range(4))
        )
        self.full = DSConv(w[0] + in_ch, 16)
        self.head = nn.Conv2d(16, 4, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for d in self.down:
            skips.append(d(skips[-1]))
        y = self.mid(skips.pop())
        for u in self.up:
            s = skips.pop()
            y = F.interpolate(y, size=s.shape[-2:], mode="bilinear", align_corners=False)
            y = u(torch.cat([y, s], 1))
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.full(torch.cat([y, x], 1)))


def compose(warped: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Final frame from the warp and the refiner output (both (B, C, H, W), [0, 1])."""
    residual, alpha = torch.tanh(out[:, :3]), torch.sigmoid(out[:, 3:4] - 2.0)
    return (warped + alpha * residual).clamp(0, 1)


# ----------------------------------------------------------------------------- geometry


def region_masks(pts2d: np.ndarray, size: int) -> np.ndarray:
    """(3, H, W) float masks of the inner mouth and both eye openings from (P, 2) points."""
    import cv2

    out = np.zeros((3, size, size), np.uint8)
    for k, ring in enumerate((INNER_LIPS, LEFT_EYE_RING, RIGHT_EYE_RING)):
        poly = np.round(pts2d[[_POS[i] for i in ring]] * 16).astype(np.int32)
        cv2.fillPoly(out[k], [poly], 255, lineType=cv2.LINE_AA, shift=4)
    return out.astype(np.float32) / 255.0


def warp_inputs(
    key_frame: np.ndarray,
    key_pts: np.ndarray,
    drv_pts: np.ndarray,
    triangles: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp the key frame onto the driving landmarks; returns (warped uint8, masks (3, H, W))."""
    import cv2

    size = key_frame.shape[0]
    border = border_points(size)
    src = np.concatenate([key_pts[:, :2], border])
    dst = np.concatenate([drv_pts[:, :2], border])
    tris = triangulate(src) if triangles is None else triangles
    mx, my = piecewise_affine_maps(src, dst, tris, size)
    warped = cv2.remap(key_frame, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return warped, region_masks(drv_pts[:, :2], size)


def network_input(warped: np.ndarray, key_frame: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(9, H, W) float32: warped RGB, key RGB (both in [0, 1]), 3 masks."""
    rgb = np.concatenate([warped, key_frame], axis=2).transpose(2, 0, 1).astype(np.float32) / 255
    return np.concatenate([rgb, masks], axis=0)


# ----------------------------------------------------------------------------- model


@register_motion_model("landmark")
class LandmarkModel(MotionModel):
    """FaceMesh pose + named expressions (28 values), mesh warp, learned refinement."""

    model_id: ClassVar[int] = 8
    default_qstep: ClassVar[float] = 1.0  # 1 degree / 1 pixel / 1 % steps
    send_key_feature: ClassVar[bool] = True

    def __init__(
        self,
        shape: ShapeModel,
        refiner: Refiner | None,
        size: int = 256,
        device: str = "cpu",
        weights_id: bytes = b"",
    ) -> None:
        self.size = size
        self.shape = shape
        self.refiner = refiner.eval().to(device) if refiner is not None else None
        self.device = device
        self._weights_id = weights_id
        self._tracker = LandmarkTracker(POINTS, dims=3, fps=25.0, min_cutoff=1.0, beta=0.05)
        self._key_pts: np.ndarray | None = None  # encoder: landmarks of the current key frame
        self._dec_key: tuple[np.ndarray, np.ndarray] | None = None  # decoder: key points, triangles

    @classmethod
    def create(cls, *, checkpoint=None, config=None, device="cpu", size=256) -> LandmarkModel:
        if size != 256:
            raise CheckpointError("the landmark model is trained at 256x256; use --size 256")
        path = Path(checkpoint) if checkpoint else data_file("landmark.pt")
        if not path.exists():
            raise CheckpointError(
                f"landmark model weights not found at {path}; train them with `gfvc train` or pass --checkpoint"
            )
        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
            shape = ShapeModel(
                *(np.asarray(ck["shape"][k], dtype=np.float64) for k in ("mean", "basis")),
                tuple(ck["shape"]["names"]),
            )
            refiner = None  # a release without a refiner decodes with the warp alone
            if ck.get("refiner") is not None:
                refiner = Refiner(**ck["refiner_config"])
                refiner.load_state_dict(ck["refiner"])
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(
                f"{path} is not a landmark model checkpoint ({type(e).__name__}: {str(e)[:120]})"
            ) from None
        digest = hashlib.sha256(path.read_bytes()).digest()
        return cls(shape, refiner, size=size, device=device, weights_id=digest)

    @property
    def fields(self) -> tuple[FeatureField, ...]:
        return (
            FeatureField("pose", "vector", (6,)),
            FeatureField("expression", "vector", (self.shape.n_expr,)),
        )

    @property
    def feature_names(self) -> tuple[str, ...]:
        return ("yaw", "pitch", "roll", "tx", "ty", "scale") + self.shape.names

    def config_dict(self) -> dict[str, Any]:
        return {
            "model": "landmark",
            "version": 1,
            "points": list(POINTS),
            "expr": list(self.shape.names),
            "size": self.size,
        }

    def weights_digest(self) -> bytes:
        return self._weights_id

    # -- encoder side
    def analyse(self, frame: np.ndarray) -> np.ndarray:
        pts = self._tracker(frame)
        self._key_pts = pts  # remembered in case this is a key frame
        return self.shape.analyse(pts)

    def key_side_info(self, key_feature: np.ndarray) -> bytes:
        """The key frame's landmarks, as residuals against the shape model's prediction."""
        from gfvc.features.entropy import encode_ints_eg

        if self._key_pts is None:
            raise RuntimeError("key_side_info called before analysing the key frame")
        pred = self.shape.template(key_feature)  # the decoder predicts the same points
        q = np.rint((self._key_pts - pred) / KEY_POINT_STEP).astype(np.int64)
        return encode_ints_eg(q.ravel())

    def load_key_side_info(self, data: bytes, key_feature: np.ndarray) -> None:
        from gfvc.features.entropy import decode_ints_eg

        n = len(POINTS) * 3
        if not data:
            raise BitstreamError("key-frame unit lacks the landmark model's key landmarks")
        q = decode_ints_eg(data, n, "key-frame landmarks").reshape(-1, 3)
        key_pts = self.shape.template(key_feature) + q * KEY_POINT_STEP
        border = border_points(self.size)
        self._dec_key = (key_pts, triangulate(np.concatenate([key_pts[:, :2], border])))

    def reset(self) -> None:
        self._tracker.reset()

    # -- decoder side
    def driving_points(self, key_feature: np.ndarray, feature: np.ndarray) -> np.ndarray:
        assert self._dec_key is not None
        return self.shape.animate(self._dec_key[0], key_feature, feature)

    @torch.inference_mode()
    def synthesize(
        self, key_frame: np.ndarray, key_feature: np.ndarray, feature: np.ndarray
    ) -> np.ndarray:
        if self._dec_key is None:
            raise BitstreamError(
                "landmark model: no key-frame landmarks received before a feature unit"
            )
        key_pts, tris = self._dec_key
        drv = self.shape.animate(key_pts, key_feature, np.asarray(feature, dtype=np.float64))
        warped, masks = warp_inputs(key_frame, key_pts, drv, tris)
        if self.refiner is None:
            return warped
        x = torch.from_numpy(network_input(warped, key_frame, masks))[None].to(self.device)
        y = compose(x[:, :3], self.refiner(x.contiguous(memory_format=torch.channels_last)))
        return (y[0].permute(1, 2, 0) * 255).round().clamp(0, 255).byte().cpu().numpy()
