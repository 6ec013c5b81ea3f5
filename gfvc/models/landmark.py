"""``landmark``: the default model — FaceMesh motion code, mesh warp, learned refinement.

Per frame it sends 28 numbers with a meaning each (see ``faceshape``): head pose (yaw,
pitch, roll, translation, scale) and 22 expression coefficients, the first ten named (jaw
open, smile, lip pucker, blinks, brow raise, gaze). The key frame's own 162 landmarks travel
once in the key unit, so the decoder knows the person's face shape without running FaceMesh.

Synthesis::

    key landmarks --(change of expression, new pose)--> driving landmarks
    key frame --piecewise-affine warp (key -> driving landmarks)--> warped
    [warped, key, mouth/eye masks, motion] --refiner U-Net--> grid correction, residual, alpha
    output = key frame re-sampled through (mesh grid + correction) + alpha * residual

The refiner is a small depthwise-separable U-Net trained on CPU (``gfvc train``). It moves
key-frame pixels rather than painting new ones (painting under L1/SSIM losses blurs), and
paints only in the grown mouth and eye regions, which a warp of the key frame cannot serve. Everything the decoder derives
is computed from transmitted integers, so encoder and decoder agree exactly on the features.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

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


_T, _Fmt = torch.Tensor, torch.memory_format


class RefinerOutput(NamedTuple):
    frame: torch.Tensor  # (B, 3, h, w) in [0, 1]
    alpha: torch.Tensor  # (B, 1, h, w) painting weight
    correction: torch.Tensor  # (B, h, w, 2) added to the mesh grid (normalised units)


FLOW_SCALE = 0.05  # flow head units -> normalised grid units (1.0 = 6.4 px at 256x256)
IN_CHANNELS = 11  # warped RGB, key RGB, 3 region masks, 2 motion channels


class Refiner(nn.Module):
    """Corrects the mesh warp where a warp can be corrected, and paints only where it cannot.

    A U-Net (half resolution in, quarter out) looks at [warped, key, masks, motion] and predicts a smooth
    correction of the sampling grid: the key frame is re-sampled through it, so texture stays
    as sharp as in the key frame (a network asked to paint pixels under L1/SSIM learns to
    blur: runs v0 and v1, docs/landmark.md). A light full-resolution head then adds a residual
    whose blending weight is gated to the mouth and eyes (dilated), the regions a warp of the
    key frame cannot serve (teeth, tongue, eye openings).

    Shapes: ``x`` (B, 11, h, w) with h, w multiples of 32; ``key`` (B, 3, H, W) the whole key
    frame in [0, 1]; ``grid`` (B, h, w, 2) the mesh warp's sampling grid for the pixels of
    ``x`` (normalised, align_corners=False). Returns a ``RefinerOutput``.
    """

    def __init__(self, width: int = 24, in_ch: int = IN_CHANNELS) -> None:
        super().__init__()
        w = [width, width * 2, width * 4, width * 6, width * 8]
        self.stem = nn.Sequential(nn.Conv2d(in_ch, w[0], 3, 2, 1), nn.LeakyReLU(0.1, inplace=True))
        self.down = nn.ModuleList(
            nn.Sequential(DSConv(w[i], w[i + 1], stride=2), DSRes(w[i + 1])) for i in range(4)
        )
        self.mid = nn.Sequential(DSRes(w[4]), DSRes(w[4]))
        self.up = nn.ModuleList(  # decodes back to a quarter of the resolution only
            nn.Sequential(DSConv(w[i + 1] + w[i], w[i]), DSRes(w[i])) for i in (3, 2, 1)
        )
        self.flow = nn.Conv2d(w[1], 2, 3, 1, 1)
        self.context = nn.Conv2d(w[1], 8, 1)  # few channels cross to full resolution
        self.full = DSConv(8 + 3 + 3, 16)  # context, re-warped RGB, masks
        self.head = nn.Conv2d(16, 4, 1)
        for conv in (self.flow, self.head):  # start as the plain warp
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor, key: torch.Tensor, grid: torch.Tensor) -> RefinerOutput:
        fmt = (  # keep one memory format throughout: mixing costs 5x on the 1x1 convs
            torch.channels_last
            if x.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format
        )
        skips = [self.stem(x)]
        for d in self.down:
            skips.append(d(skips[-1]))
        y = self.mid(skips.pop())
        skips.pop(0)  # the half-resolution stem output only feeds the encoder
        for u in self.up:
            s = skips.pop()
            y = F.interpolate(y, size=s.shape[-2:], mode="bilinear", align_corners=False)
            y = u(torch.cat([y, s], 1).contiguous(memory_format=fmt))
        size = x.shape[-2:]
        flow = F.interpolate(self.flow(y), size=size, mode="bilinear", align_corners=False)
        correction = FLOW_SCALE * flow.permute(0, 2, 3, 1)
        rewarped = F.grid_sample(
            key, grid + correction, mode="bilinear", padding_mode="border", align_corners=False
        )
        masks = x[:, 6:9]
        gate = paint_gate(masks)
        paint = self._paint if self.training or x.shape[0] != 1 else self._paint_where_gated
        return RefinerOutput(*paint(y, rewarped, masks, gate, fmt), correction)

    def _paint(self, y: _T, rewarped: _T, masks: _T, gate: _T, fmt: _Fmt) -> tuple[_T, _T]:
        """Full-resolution head: residual blended in with a gated weight."""
        ctx = F.interpolate(
            self.context(y), size=rewarped.shape[-2:], mode="bilinear", align_corners=False
        )
        out = self.head(
            self.full(torch.cat([ctx, rewarped, masks], 1).contiguous(memory_format=fmt))
        )
        alpha = torch.sigmoid(out[:, 3:4] - 2.0) * gate
        return (rewarped + alpha * F.hardtanh(out[:, :3])).clamp(0, 1), alpha

    def _paint_where_gated(
        self, y: _T, rewarped: _T, masks: _T, gate: _T, fmt: _Fmt
    ) -> tuple[_T, _T]:
        """``_paint`` on boxes around the non-zero gate only (decoding, one frame): the gate is
        exactly zero elsewhere, so the frame there is the re-warped key. One box per band of
        gated rows (eyes, mouth), each with a margin of two quarter-resolution pixels that keeps
        the upsampling and 3x3 edges out of it."""
        frame, alpha = rewarped.clamp(0, 1), torch.zeros_like(gate)
        on = gate[0, 0] > 0
        qh, qw = y.shape[-2:]
        for r0, r1 in _runs(on.any(1).tolist()):
            cols = torch.nonzero(on[r0:r1].any(0)).flatten()
            y0, y1 = max(0, r0 // 4 - 2), min(qh, (r1 - 1) // 4 + 3)
            x0, x1 = max(0, int(cols[0]) // 4 - 2), min(qw, int(cols[-1]) // 4 + 3)
            box = (..., slice(4 * y0, 4 * y1), slice(4 * x0, 4 * x1))
            sub, sub_alpha = self._paint(
                y[..., y0:y1, x0:x1], rewarped[box], masks[box], gate[box], fmt
            )
            frame[box], alpha[box] = sub, sub_alpha
        return frame, alpha


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """[start, end) of each run of True values."""
    out, start = [], None
    for i, f in enumerate([*flags, False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            out.append((start, i))
            start = None
    return out


def paint_gate(masks: torch.Tensor) -> torch.Tensor:
    """(B, 1, h, w) soft union of the region masks grown by about 8 pixels (computed at a
    quarter of the resolution: a 17x17 max-pool at full size costs 30 ms)."""
    m = F.avg_pool2d(masks.amax(1, keepdim=True), 4)
    m = F.avg_pool2d(F.max_pool2d(m, 5, 1, 2), 3, 1, 1, count_include_pad=False)
    return F.interpolate(m, size=masks.shape[-2:], mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------- geometry


def region_masks(pts2d: np.ndarray, size: int) -> np.ndarray:
    """(3, H, W) float masks of the inner mouth and both eye openings from (P, 2) points."""
    import cv2

    out = np.zeros((3, size, size), np.uint8)
    for k, ring in enumerate((INNER_LIPS, LEFT_EYE_RING, RIGHT_EYE_RING)):
        poly = np.round(pts2d[[_POS[i] for i in ring]] * 16).astype(np.int32)
        cv2.fillPoly(out[k], [poly], 255, lineType=cv2.LINE_AA, shift=4)
    return out.astype(np.float32) / 255.0


def face_hull(pts2d: np.ndarray, size: int) -> np.ndarray:
    """(H, W) float32 mask, 1 inside the convex hull of (P, 2) landmark points: the face, where
    the enhancement layer's fusion takes the warp's fine detail (``add_detail``)."""
    import cv2

    out = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(np.round(pts2d * 16).astype(np.int32))
    cv2.fillConvexPoly(out, hull, 1, shift=4)
    return out.astype(np.float32)


#: (upper, lower, corner, corner) of the inner mouth (FaceMesh indices).
_MOUTH_GAP = (13, 14, 78, 308)
#: Channels of ``fusion_guide`` (what a guided fusion network sees).
GUIDE_CHANNELS = 6
#: The channel of ``LandmarkModel.fusion_inputs``' hints after ``fusion_guide``'s: ``face_hull``.
FACE_CHANNEL = GUIDE_CHANNELS


def _gap_over_width(pts: np.ndarray, up: int, lo: int, c0: int, c1: int) -> float:
    """Distance ``up``-``lo`` over distance ``c0``-``c1`` (FaceMesh indices)."""

    def dist(a: int, b: int) -> float:
        return float(np.linalg.norm(pts[_POS[a], :2] - pts[_POS[b], :2]))

    return dist(up, lo) / max(dist(c0, c1), 1e-6)


def region_openings(pts: np.ndarray) -> np.ndarray:
    """(3,) gap over width of the inner mouth and of each eye (``region_masks``' order:
    mouth, left eye, right eye)."""
    return np.array([_gap_over_width(pts, *_MOUTH_GAP), *eye_openings(pts)[::-1]])


def fusion_guide(
    drv_pts: np.ndarray, key_pts: np.ndarray, size: int, masks: np.ndarray | None = None
) -> np.ndarray:
    """(6, H, W) float32 hints for the fusion network: the driving frame's inner-mouth and
    eye-opening masks (``masks``, when the warp has them already), and the same masks scaled
    by how much more (positive) or less each opening is than the key frame's (x4: a change
    of a quarter of the width reads as 1). A warp stretches or squeezes the key's texture in
    just those places, so there the base picture is the better witness. From decoded
    landmarks only."""
    if masks is None:
        masks = region_masks(drv_pts[:, :2], size)
    delta = 4.0 * (region_openings(drv_pts) - region_openings(key_pts))
    return np.concatenate([masks, masks * delta[:, None, None].astype(np.float32)])


def sampling_grid(map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32 grid for ``grid_sample`` (align_corners=False) from cv2 remap maps
    (pixel centres at integer coordinates)."""
    h, w = map_x.shape
    return np.stack([(2 * map_x + 1) / w - 1, (2 * map_y + 1) / h - 1], axis=-1).astype(np.float32)


@functools.lru_cache(maxsize=4)
def identity_grid(h: int, w: int) -> np.ndarray:
    """The sampling grid that moves nothing (read-only, shared)."""
    g = sampling_grid(*np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)))
    g.flags.writeable = False
    return g


#: (eye ring, upper-lid mid point, lower-lid mid point) of each eye (FaceMesh indices); a ring
#: runs corner, seven upper-lid points, corner, seven lower-lid points.
_EYES = ((RIGHT_EYE_RING, 159, 145), (LEFT_EYE_RING, 386, 374))
LID_FROM = 0.75  # an eye this much less open than the key's starts to show its lid
LID_FULL = 0.3  # ... and shows only lid from this much
LID_LIFT = 0.5  # the lid patch reaches this share of the closing above the driving lid
#: The lid's texture is taken this many key eye openings above the driving lid. At 0.9 the
#: patch still sampled lashes and crease, which dlib reads as an open eye: 1.5 brought the eye
#: error of ten training people's clips (uncoded key, unquantized features) from 0.0345 to
#: 0.0330 (1.1: 0.0339, 1.3: 0.0332) and of the five held-out ctc people from 0.0405 to 0.0339
#: (docs/landmark.md).
LID_RAISE = 1.5
#: ... in streams coded before: their model hash has no ``lid_raise`` (``match_stream``)
LID_RAISE_V1 = 0.9
_LID_REACH = 10  # pixels the anti-aliased, dilated and blurred patch reaches beyond its polygon


def warp_inputs(
    key_frame: np.ndarray,
    key_pts: np.ndarray,
    drv_pts: np.ndarray,
    triangles: np.ndarray | None = None,
    lid_raise: float = LID_RAISE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp the key frame onto the driving landmarks (closing eyes' lids by ``close_lids``
    with ``lid_raise``).

    Returns the warped frame (uint8), the driving frame's region masks (3, H, W) and the
    warp's sampling grid (H, W, 2), which the refiner corrects."""
    import cv2

    size = key_frame.shape[0]
    border = border_points(size)
    src = np.concatenate([key_pts[:, :2], border])
    dst = np.concatenate([drv_pts[:, :2], border])
    tris = triangulate(src) if triangles is None else triangles
    mx, my = piecewise_affine_maps(src, dst, tris, size)
    close_lids(key_pts, drv_pts, my, lid_raise)
    warped = cv2.remap(key_frame, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return warped, region_masks(drv_pts[:, :2], size), sampling_grid(mx, my)


def close_lids(
    key_pts: np.ndarray, drv_pts: np.ndarray, map_y: np.ndarray, lid_raise: float = LID_RAISE
) -> None:
    """Let closing eyes show their lids (in place, on the warp's ``map_y``).

    A warp of an open-eyed key frame squeezes iris, lashes and crease into a closing eye: a
    dark smear that face trackers read as an open eye. Where the driving eye is much less
    open than the key's, the eye area (grown upwards by part of the closing) samples the key
    from about one eye opening higher instead: the lid skin. Computed from the driving and
    key landmarks only (transmitted integers), so encoder and decoder agree. Only the box
    around each closing eye is touched (the decoder's per-frame path)."""
    import cv2

    size = map_y.shape[0]
    for ring, up, lo in _EYES:
        key_open = key_pts[_POS[lo], 1] - key_pts[_POS[up], 1]
        drv_open = drv_pts[_POS[lo], 1] - drv_pts[_POS[up], 1]
        if key_open <= 1:
            continue
        share = float(np.clip((LID_FROM - drv_open / key_open) / (LID_FROM - LID_FULL), 0, 1))
        if share <= 0:
            continue
        poly = drv_pts[[_POS[i] for i in ring], :2].copy()
        poly[1:8, 1] -= max(0.0, key_open - drv_open) * LID_LIFT
        x0, y0 = np.maximum(np.floor(poly.min(0)).astype(int) - _LID_REACH, 0)
        x1, y1 = np.minimum(np.ceil(poly.max(0)).astype(int) + _LID_REACH + 1, size)
        if x0 >= x1 or y0 >= y1:
            continue
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        pts = np.round((poly - (x0, y0)) * 16).astype(np.int32)
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, shift=4)
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
        soft = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 1.5)
        map_y[y0:y1, x0:x1] -= (share * lid_raise * key_open) * soft


#: An eye open this much more (lid gap over eye width) than the reference's cannot be shown
#: from it (lp_d3: 0.05-0.14 looking down, 0.33-0.43 open).
EYES_BEYOND = 0.12


def eye_openings(pts: np.ndarray) -> np.ndarray:
    """(2,) lid gap over eye width (corner to corner) of the right and the left eye, from
    (P, 2+) landmarks."""
    return np.array([_gap_over_width(pts, up, lo, ring[0], ring[8]) for ring, up, lo in _EYES])


def network_input(
    warped: np.ndarray, key_frame: np.ndarray, masks: np.ndarray, grid: np.ndarray
) -> np.ndarray:
    """(11, H, W) float32: warped RGB, key RGB (both in [0, 1]), 3 masks, and the warp's
    displacement (grid minus identity, x4 so a quarter-frame move reads as 1)."""
    rgb = np.concatenate([warped, key_frame], axis=2).transpose(2, 0, 1).astype(np.float32) / 255
    motion = 4 * (grid - identity_grid(*grid.shape[:2])).transpose(2, 0, 1)
    return np.concatenate([rgb, masks, motion], axis=0)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255)


# ----------------------------------------------------------------------------- model


@register_motion_model("landmark")
class LandmarkModel(MotionModel):
    """FaceMesh pose + named expressions (28 values), mesh warp, learned refinement."""

    model_id: ClassVar[int] = 8
    # Half-degree / half-pixel / half-percent steps: on vr_1 and dpe_d (150 frames, key svtav1
    # QP 40, warp only) qstep 1 -> 2 cost 0.15 kbps and gained 0.004-0.009 MS-SSIM and 0.15-0.3
    # px landmark distance, far more than the same bits spent on the key frame would.
    default_qstep: ClassVar[float] = 2.0
    default_deadzone: ClassVar[float] = 0.7  # -16 to -25 % feature bits for +0.03 px error
    default_keyframe_codec: ClassVar[str] = "svtav1"  # ~10 % fewer key bits than x265
    send_key_feature: ClassVar[bool] = True
    cheap_preview: ClassVar[bool] = True  # the mesh warp without the refiner: ~6 ms
    fusion_ready: ClassVar[bool] = True  # the enhancement layer fuses that warp with its base

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
        self.lid_raise = LID_RAISE  # LID_RAISE_V1 while decoding an older stream
        self._tracker = LandmarkTracker(POINTS, dims=3, fps=25.0, min_cutoff=1.0, beta=0.05)
        self._key_pts: np.ndarray | None = None  # encoder: landmarks of the current key frame
        self._dec_key: tuple[np.ndarray, np.ndarray] | None = None  # decoder: key points, triangles
        self._key_tensor: tuple[np.ndarray, torch.Tensor] | None = None  # decoder: key as a tensor

    @classmethod
    def default_checkpoint(cls) -> Path | None:
        return data_file("landmark.pt")

    @classmethod
    def create(cls, *, checkpoint=None, config=None, device="cpu", size=256) -> LandmarkModel:
        if size != 256:
            raise CheckpointError("the landmark model is trained at 256x256; use --size 256")
        path = Path(checkpoint) if checkpoint else cls.default_checkpoint()
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
            # absent from the hash of streams coded with the first lid rule
            **({} if self.lid_raise == LID_RAISE_V1 else {"lid_raise": self.lid_raise}),
        }

    def match_stream(self, model_hash: bytes | None) -> bool:
        """Streams coded before the lids were taken from higher up (``LID_RAISE_V1``) decode
        as they did; new streams use ``LID_RAISE``."""
        for lid_raise in (LID_RAISE, LID_RAISE_V1):
            self.lid_raise = lid_raise
            if model_hash is None or self.config_hash() == model_hash:
                return True
        self.lid_raise = LID_RAISE
        return False

    def weights_digest(self) -> bytes:
        return self._weights_id

    # -- encoder side
    def analyse(self, frame: np.ndarray) -> np.ndarray:
        pts = self._tracker(frame)
        self._key_pts = pts  # remembered in case this is a key frame
        return self.shape.analyse(pts)

    def eyes_and_mouth(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self._key_pts is None or not self.tracking:
            return None
        eyes = [_POS[i] for i in LEFT_EYE_RING + RIGHT_EYE_RING]
        return self._key_pts[eyes, :2], self._key_pts[[_POS[i] for i in LIPS], :2]

    def eyes_beyond_reference(self) -> bool:
        """An eye of the analysed frame is open by more than ``EYES_BEYOND`` of its width
        beyond the reference's: the reference was coded with the eyes (nearly) closed or
        looking down, and a warp can close an eye (``close_lids``) but cannot open one."""
        if self._key_pts is None or self._dec_key is None:
            return False
        now, ref = eye_openings(self._key_pts), eye_openings(self._dec_key[0])
        return bool(np.any(now - ref > EYES_BEYOND))

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

    def begin_stream(self) -> None:
        self._tracker.restart()
        self.match_stream(None)  # a new stream: today's lid rule

    @property
    def tracking(self) -> bool:
        return self._tracker.found

    def _mesh_warp(
        self, key_frame: np.ndarray, key_feature: np.ndarray, feature: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The mesh warp of the key frame onto ``feature``'s landmarks, their region masks
        and the landmarks themselves."""
        if self._dec_key is None:
            raise BitstreamError("landmark model: preview before key-frame landmarks")
        key_pts, tris = self._dec_key
        drv = self.shape.animate(key_pts, key_feature, np.asarray(feature, dtype=np.float64))
        warped, masks, _ = warp_inputs(key_frame, key_pts, drv, tris, self.lid_raise)
        return warped, masks, drv

    def preview(
        self, key_frame: np.ndarray, key_feature: np.ndarray, feature: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The mesh warp the refiner starts from, and the driving eye/mouth openings."""
        warped, masks, _ = self._mesh_warp(key_frame, key_feature, feature)
        return warped, masks.max(axis=0) > 0.05

    def fusion_inputs(
        self, key_frame: np.ndarray, key_feature: np.ndarray, feature: np.ndarray, guide: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The mesh warp and, with ``guide``, its ``fusion_guide`` followed by the driving
        face's ``face_hull`` (``FACE_CHANNEL``; one warp for all)."""
        warped, masks, drv = self._mesh_warp(key_frame, key_feature, feature)
        if not guide:
            return warped, None
        hints = fusion_guide(drv, self._dec_key[0], self.size, masks)  # type: ignore[index]
        return warped, np.concatenate([hints, face_hull(drv[:, :2], self.size)[None]])

    @property
    def key_landmarks(self) -> np.ndarray:
        """Decoder: the current key frame's landmarks ((P, 3) pixels)."""
        if self._dec_key is None:
            raise BitstreamError("landmark model: no key-frame landmarks received yet")
        return self._dec_key[0]

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
        warped, masks, grid = warp_inputs(key_frame, key_pts, drv, tris, self.lid_raise)
        if self.refiner is None:
            return warped
        dev = self.device
        x = torch.from_numpy(network_input(warped, key_frame, masks, grid))[None].to(dev)
        if self._key_tensor is None or self._key_tensor[0] is not key_frame:
            self._key_tensor = (key_frame, to_tensor(key_frame)[None].to(dev))  # once per key
        key = self._key_tensor[1]
        x = x.contiguous(memory_format=torch.channels_last)
        y = self.refiner(x, key, torch.from_numpy(grid)[None].to(dev)).frame
        return (y[0].permute(1, 2, 0) * 255).round().clamp(0, 255).byte().cpu().numpy()
