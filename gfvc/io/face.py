"""Find the face to code, crop it, and track its landmarks (mediapipe ``solutions``, offline).

mediapipe is imported inside the functions that need it: the import takes over a second and
most commands (decoding, metrics) never touch it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType, TracebackType

import cv2
import numpy as np

from gfvc.errors import BackendUnavailableError, InputError, NoFaceError
from gfvc.io.video import to_rgb_frame

# Face detector box (mediapipe short-range model: eyebrows to chin) -> head framing.
HEAD_SHIFT_UP = 0.12  # move the centre up by this fraction of the box so hair fits too
COARSE_FRAMES = 12  # full-frame detections used to locate the face roughly
REFINE_CONTEXT = 3.0  # side of the refinement window, in coarse face boxes
REFINE_SIDE = 256  # refinement window is resized to this many pixels


@dataclass(frozen=True)
class CropBox:
    """A square in source pixels (top-left ``x``, ``y`` and side ``size``).

    It may reach past the picture border; :func:`crop_and_resize` pads by edge replication.
    """

    x: int
    y: int
    size: int


def _mediapipe() -> ModuleType:
    """Import mediapipe quietly (its C++ logs and a protobuf deprecation warning are noise)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated")
    try:
        import mediapipe as mp
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise BackendUnavailableError(
            f"mediapipe cannot be imported ({exc}); reinstall gfvc's dependencies"
        ) from None
    return mp


# ---------------------------------------------------------------------------------------------
# cropping


def _square_center(h: int, w: int) -> CropBox:
    side = min(h, w)
    return CropBox((w - side) // 2, (h - side) // 2, side)


def crop_square(frame: np.ndarray, box: CropBox) -> np.ndarray:
    """Cut ``box`` out of ``frame``, replicating edge pixels where it leaves the picture."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box.x, box.y, box.x + box.size, box.y + box.size
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx0 >= cx1 or cy0 >= cy1:
        raise InputError(f"crop box {box} lies entirely outside the {w}x{h} frame")
    part = frame[cy0:cy1, cx0:cx1]
    pads = (cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1)
    if any(pads):
        part = cv2.copyMakeBorder(part, *pads, borderType=cv2.BORDER_REPLICATE)
    return part


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a square image to ``size`` x ``size``: INTER_AREA down, INTER_CUBIC up."""
    if img.shape[0] == size and img.shape[1] == size:
        return np.ascontiguousarray(img)
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(img, (size, size), interpolation=interp)


def crop_and_resize(frame: np.ndarray, box: CropBox | None, size: int) -> np.ndarray:
    """Crop ``box`` (None: the centred square of the frame) and resize to (size, size) RGB."""
    if size < 1:
        raise InputError(f"crop size must be positive, got {size}")
    rgb = to_rgb_frame(frame)
    if box is None:
        box = _square_center(*rgb.shape[:2])
    if box.size < 1:
        raise InputError(f"crop box {box} has no area")
    return resize_square(crop_square(rgb, box), size)


# ---------------------------------------------------------------------------------------------
# face box

# (cx, cy, side) of a face box in source pixels
_Box = tuple[float, float, float]


def _largest_face(detector: object, rgb: np.ndarray) -> _Box | None:
    """Centre and side of the biggest face the detector finds, in ``rgb`` pixels."""
    result = detector.process(np.ascontiguousarray(rgb))  # type: ignore[attr-defined]
    if not result.detections:
        return None
    h, w = rgb.shape[:2]
    boxes = [d.location_data.relative_bounding_box for d in result.detections]
    b = max(boxes, key=lambda b: b.width * b.height)
    bw, bh = b.width * w, b.height * h
    if bw <= 1 or bh <= 1:
        return None
    return b.xmin * w + bw / 2, b.ymin * h + bh / 2, max(bw, bh)


def _median_box(boxes: Sequence[_Box]) -> _Box:
    cx, cy, s = np.median(np.asarray(boxes, dtype=np.float64), axis=0)
    return float(cx), float(cy), float(s)


def _evenly(n: int, k: int) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, num=min(n, k)).round().astype(int).tolist()))


def _coarse_boxes(mp: ModuleType, frames: Sequence[np.ndarray]) -> list[_Box]:
    """Whole-frame detection: the full-range model first (small faces in body shots), then
    the short-range one (some close-ups only it finds)."""
    picks = [frames[i] for i in _evenly(len(frames), COARSE_FRAMES)]
    for model in (1, 0):
        with mp.solutions.face_detection.FaceDetection(
            model_selection=model, min_detection_confidence=0.5
        ) as det:
            found = [b for b in (_largest_face(det, f) for f in picks) if b is not None]
        if found:
            return found
    return []


def _refined_boxes(mp: ModuleType, frames: Sequence[np.ndarray], coarse: _Box) -> list[_Box]:
    """Short-range detection in a window around the coarse face, so the box definition (and
    thus the framing) does not depend on how big the face is in the source."""
    cx, cy, s = coarse
    side = max(int(round(REFINE_CONTEXT * s)), 16)
    win = CropBox(int(round(cx - side / 2)), int(round(cy - side / 2)), side)
    k = side / REFINE_SIDE
    out: list[_Box] = []
    with mp.solutions.face_detection.FaceDetection(
        model_selection=0, min_detection_confidence=0.5
    ) as det:
        for frame in frames:
            b = _largest_face(det, resize_square(crop_square(frame, win), REFINE_SIDE))
            if b is not None:
                out.append((win.x + b[0] * k, win.y + b[1] * k, b[2] * k))
    return out


def head_box(face: _Box, scale: float) -> CropBox:
    """Face box -> square head crop: enlarged ``scale`` times, centre moved up for the hair."""
    cx, cy, s = face
    side = max(int(round(s * scale)), 2)
    side += side % 2  # even, so 4:2:0 codecs never see an odd crop at native size
    cy -= HEAD_SHIFT_UP * s
    return CropBox(int(round(cx - side / 2)), int(round(cy - side / 2)), side)


def fit_in_frame(box: CropBox, width: int, height: int) -> CropBox:
    """Move (and if needed shrink) ``box`` to lie inside the picture.

    Edge-replicated padding looks smeared and costs bits, so a box that fits is shifted
    inside, and one larger than the short side becomes the largest square around it.
    """
    side = min(box.size, width, height)
    side -= side % 2 if side > 2 else 0
    cx, cy = box.x + box.size / 2, box.y + box.size / 2
    x = int(round(min(max(cx - side / 2, 0), width - side)))
    y = int(round(min(max(cy - side / 2, 0), height - side)))
    return CropBox(x, y, side)


def find_face_crop(
    frames: Sequence[np.ndarray], scale: float = 1.8, *, source: str | None = None
) -> CropBox:
    """One stable square head crop for a whole clip, from the first frames (~50 is plenty).

    The face is found in every given frame, and the median centre and size are used, so a
    few misses or a moving head do not shake the box. ``scale`` enlarges the detected face
    (eyebrows to chin) so the head and some margin fit, like VoxCeleb / GFVC test framing;
    the box is then kept inside the picture (see :func:`fit_in_frame`), so on a clip that
    is already a face crop it tends to the whole frame. ``source`` names the input in the
    error message.
    """
    if not len(frames):
        raise InputError("find_face_crop needs at least one frame")
    if not scale > 0:
        raise InputError(f"crop scale must be positive, got {scale}")
    rgb = [to_rgb_frame(f) for f in frames]
    mp = _mediapipe()
    coarse = _coarse_boxes(mp, rgb)
    if not coarse:
        name = source or "the input"
        raise NoFaceError(
            f"no face found in {name}'s first {len(rgb)} frames; if the video is already "
            "a face crop, pass --no-crop"
        )
    refined = _refined_boxes(mp, rgb, _median_box(coarse))
    h, w = rgb[0].shape[:2]
    return fit_in_frame(head_box(_median_box(refined or coarse), scale), w, h)


# ---------------------------------------------------------------------------------------------
# landmarks


class FaceLandmarker:
    """478 FaceMesh landmarks (468 + 10 iris) per frame, tracked across calls (video mode).

    Returns (478, 3) float32 in pixels of the given frame (z uses the x scale), or None when
    no face is found. mediapipe's output can differ between machines and versions, so a
    decoder must never recompute what the encoder measured: the codec sends the key frame's
    landmarks in the stream instead.
    """

    def __init__(self, min_confidence: float = 0.5) -> None:
        mp = _mediapipe()
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )

    def __call__(self, frame: np.ndarray) -> np.ndarray | None:
        if self._mesh is None:
            raise InputError("FaceLandmarker is closed")
        rgb = to_rgb_frame(frame)
        result = self._mesh.process(rgb)
        if not result.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        pts = np.array(
            [(p.x, p.y, p.z) for p in result.multi_face_landmarks[0].landmark], dtype=np.float32
        )
        return pts * np.array([w, h, w], dtype=np.float32)

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
