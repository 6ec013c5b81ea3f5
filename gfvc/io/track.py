"""Follow one face through a whole video: a stabilised crop path, jumps, and spans without it.

One pass over the frames (streamed, nothing but a few numbers per frame kept) detects every
face; the *subject* is chosen once (the largest face where faces first appear, or the N-th
largest with ``face=N``) and then followed by position, and by identity (dlib embeddings)
when position is not enough: after it was lost, or when another face is near. The raw
positions are then cut into *shots* wherever the crop has to jump (a large move between
frames, a change of size, the face lost and found) and smoothed within each shot by a
zero-phase Gaussian, so the crop glides instead of shaking; it is only pulled along where
smoothing would let the face leave its centre region. Each shot has one crop size.

Frames where the subject is not seen for a while (turned away, hand over the face, out of
the picture) form *lost spans*: the crop stays where the face was last seen, so the picture
shows what the camera saw there. The encoder makes a key frame at the start of every shot
and lost span, and every ``LOST_REFRESH_S`` seconds within a lost span.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from gfvc.errors import InputError, NoFaceError
from gfvc.io.face import (
    HEAD_SHIFT_UP,
    CropBox,
    _mediapipe,
    crop_and_resize,
    fit_in_frame,
    head_box,
)
from gfvc.io.video import to_rgb_frame

DETECT_SIDE = 640  # frames are scaled so their long side is at most this for detection
GATE = 0.6  # a detection within GATE face sizes of the last position is the same face
JUMP = 0.45  # a move of more than JUMP face sizes from one frame to the next is a jump
SIZE_JUMP = 1.35  # a face this much bigger or smaller than the shot's size is a new shot
LOST_MIN_S = 0.3  # a gap this long is a lost span (shorter gaps are bridged)
LOST_REFRESH_S = 0.5  # key frames this often while the face is lost
REKEY = 0.15  # a key frame is renewed when the face moved this much (crop sides) in the crop
REKEY_MIN_S = 0.2  # ... but not more often than this
SMOOTH_S = 0.35  # standard deviation of the path smoothing, seconds
LAZY = 0.06  # the crop moves only when the face is further than this (crop sides) from its aim
KEEP_IN = 0.12  # the face centre stays within this fraction of the crop side of its middle
STILL = 0.05  # a path that stays within this fraction of the crop side is held still
SAME_PERSON = 0.55  # dlib embedding distance under which two faces are one person
#: The subject away this long while someone else is in view: the crop follows them from the
#: frame they appeared (a cut to another person), instead of coding a lost span.
ADOPT_S = 0.4

_Box = tuple[float, float, float]  # (cx, cy, side) in source pixels


@dataclass
class FaceTrack:
    """Where to crop every frame of a video, and where the crop must restart."""

    width: int
    height: int
    fps: float
    boxes: list[CropBox]
    shots: list[tuple[int, int]]  # [start, end) frame ranges with the face in view
    lost: list[tuple[int, int]]  # [start, end) frame ranges without it
    refresh: list[int] = field(default_factory=list)  # frames that must be key frames
    #: why: "cut" (the crop jumps within the face's presence), "face-found", "request" (lost)
    refresh_reasons: dict[int, str] = field(default_factory=dict)
    first_face_crop: np.ndarray | None = None  # the subject where first seen (model priming)
    faces_at_start: int = 0

    @property
    def frames(self) -> int:
        return len(self.boxes)


# ----------------------------------------------------------------------------- detection


def all_faces(detector: object, rgb: np.ndarray) -> list[_Box]:
    """Centre and side of every face the detector finds, largest first, in ``rgb`` pixels."""
    result = detector.process(np.ascontiguousarray(rgb))  # type: ignore[attr-defined]
    if not result.detections:
        return []
    h, w = rgb.shape[:2]
    out = []
    for d in result.detections:
        b = d.location_data.relative_bounding_box
        bw, bh = b.width * w, b.height * h
        if bw > 1 and bh > 1:
            out.append((b.xmin * w + bw / 2, b.ymin * h + bh / 2, max(bw, bh)))
    return sorted(out, key=lambda x: -x[2])


class _Detector:
    """Full-range detection on a scaled-down frame, the short-range model when it finds
    nothing (close-ups); boxes in source pixels."""

    def __init__(self) -> None:
        mp = _mediapipe()
        fd = mp.solutions.face_detection
        self.models = [
            fd.FaceDetection(model_selection=m, min_detection_confidence=0.5) for m in (1, 0)
        ]

    def __call__(self, rgb: np.ndarray) -> list[_Box]:
        import cv2

        h, w = rgb.shape[:2]
        k = min(1.0, DETECT_SIDE / max(h, w))
        small = rgb if k == 1 else cv2.resize(rgb, (round(w * k), round(h * k)), cv2.INTER_AREA)
        for m in self.models:
            faces = all_faces(m, small)
            if faces:
                return [(x / k, y / k, s / k) for x, y, s in faces]
        return []

    def close(self) -> None:
        for m in self.models:
            m.close()


class _Identity:
    """dlib embeddings of face crops; disabled (None) when dlib is not usable."""

    def __init__(self) -> None:
        try:
            from gfvc.eval.face import face_embedding

            self._embed = face_embedding
        except Exception:  # noqa: BLE001 - identity is a refinement; position still works
            self._embed = None

    def __call__(self, rgb: np.ndarray, box: _Box) -> np.ndarray | None:
        if self._embed is None:
            return None
        crop = crop_and_resize(rgb, fit_in_frame(head_box(box, 1.6), *rgb.shape[1::-1]), 256)
        try:
            return self._embed(crop)
        except Exception:  # noqa: BLE001 - no embedding for this crop
            return None


def _dist(a: _Box, b: _Box) -> float:
    return float(np.hypot(a[0] - b[0], a[1] - b[1]))


# ----------------------------------------------------------------------------- tracking


def track_face(
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    face: int = 0,
    scale: float = 1.8,
    size: int = 256,
    source: str = "the input",
) -> FaceTrack:
    """Follow the subject through ``frames`` (one pass, streamed) and plan the crops."""
    if face < 0:
        raise InputError(f"--face must be 0 (the largest face) or more, got {face}")
    det = _Detector()
    ident = _Identity()
    raw: list[_Box | None] = []
    subject: _Box | None = None  # last seen position
    seen_at = -1
    ref_emb: np.ndarray | None = None
    first_crop = None
    most_faces = 0
    width = height = 0
    away: list[list[_Box]] = []  # the faces of each frame since the subject was last seen
    try:
        for i, frame in enumerate(frames):
            rgb = to_rgb_frame(frame)
            height, width = rgb.shape[:2]
            faces = det(rgb)
            most_faces = max(most_faces, len(faces))
            pick: _Box | None = None
            if subject is not None and faces and i - seen_at > max(1, round(ADOPT_S * fps)):
                # the subject is gone and someone else is here: follow the one in view
                pick = faces[0]
                ref_emb = ident(rgb, pick)
                _back_fill(raw, away, pick)
            elif subject is None:
                if len(faces) > face:
                    pick = faces[face]
                    ref_emb = ident(rgb, pick)
                    box = fit_in_frame(head_box(pick, scale), width, height)
                    first_crop = crop_and_resize(rgb, box, size)
            elif faces:
                # while the subject is away, ask who a face is only every fifth frame
                ask = i - seen_at <= 2 or i % 5 == 0
                pick = _follow(faces, subject, i - seen_at, rgb, ident, ref_emb if ask else None)
                if pick is not None and not ask and i - seen_at > 2 and ref_emb is not None:
                    pick = None  # someone else may have come into view: wait for the check
            if pick is not None or not faces:
                away.clear()  # a frame without faces stops the back fill: forget before it
            if pick is not None:
                subject, seen_at = pick, i
            elif faces:
                away.append(faces)
            raw.append(pick)
    finally:
        det.close()
    if not raw:
        raise InputError(f"{source} has no frames")
    if subject is None:
        if face and most_faces:
            raise NoFaceError(
                f"--face {face}: {source} shows at most {most_faces} face(s) at once "
                f"(faces are numbered from 0, the largest)"
            )
        raise NoFaceError(
            f"no face found in {source}; if the video is already a face crop, pass --no-crop"
        )
    track = plan_crops(raw, width, height, fps, scale)
    track.first_face_crop = first_crop
    track.faces_at_start = most_faces
    return track


def _back_fill(raw: list[_Box | None], away: list[list[_Box]], pick: _Box) -> None:
    """Follow the newly adopted face back through the frames the subject was away (``away``
    holds their detections, the last ``len(away)`` entries of ``raw``), so that its shot
    starts where it appeared, not when it was adopted."""
    last = pick
    for j in range(len(away) - 1, -1, -1):
        near = [
            f
            for f in away[j]
            if _dist(f, last) <= GATE * last[2] and 1 / SIZE_JUMP <= f[2] / last[2] <= SIZE_JUMP
        ]
        if not near:
            return
        last = min(near, key=lambda f: _dist(f, last))
        raw[len(raw) - len(away) + j] = last


def _follow(
    faces: list[_Box],
    last: _Box,
    frames_since: int,
    rgb: np.ndarray,
    ident: _Identity,
    ref_emb: np.ndarray | None,
) -> _Box | None:
    """The detection that continues the subject, or None (it is not in this frame)."""
    reach = GATE * last[2] * (1 + 0.25 * min(frames_since - 1, 8))
    near = [
        f
        for f in faces
        if _dist(f, last) <= reach and 1 / SIZE_JUMP**2 <= f[2] / last[2] <= SIZE_JUMP**2
    ]
    if len(near) == 1 and (len(faces) == 1 or ref_emb is None or frames_since <= 2):
        return near[0]
    if ref_emb is not None:  # several candidates, or the subject reappears: ask who it is
        best, best_d = None, SAME_PERSON
        for f in near or faces:
            e = ident(rgb, f)
            if e is not None and (d := float(np.linalg.norm(e - ref_emb))) < best_d:
                best, best_d = f, d
        if best is not None or near:
            return best if best is not None else min(near, key=lambda f: _dist(f, last))
        return None
    if near:
        return min(near, key=lambda f: _dist(f, last))
    return faces[0] if len(faces) == 1 else None


def plan_crops(
    raw: list[_Box | None], width: int, height: int, fps: float, scale: float
) -> FaceTrack:
    """Shots, lost spans, smoothed crops and refresh points from per-frame subject boxes."""
    n = len(raw)
    lost_min = max(1, int(round(LOST_MIN_S * fps)))
    shots: list[list[int]] = []  # frame indices with a detection, per shot
    lost: list[tuple[int, int]] = []
    cur: list[int] = []
    prev: int | None = None
    for i, b in enumerate(raw):
        if b is None:
            continue
        gap = i - (prev if prev is not None else -1) - 1
        new_shot = prev is None or gap >= lost_min
        if not new_shot and prev is not None:
            p = raw[prev]
            assert p is not None
            ref = float(np.median([raw[j][2] for j in cur[-int(fps) :]]))  # type: ignore[index]
            moved = _dist(b, p) > JUMP * p[2] * (gap + 1)
            resized = not 1 / SIZE_JUMP <= b[2] / ref <= SIZE_JUMP
            new_shot = moved or resized
        if new_shot and cur:
            shots.append(cur)
            cur = []
        cur.append(i)
        prev = i
    if cur:
        shots.append(cur)
    ranges: list[tuple[int, int]] = []
    for k, s in enumerate(shots):
        start = s[0]
        end = s[-1] + 1
        nxt = shots[k + 1][0] if k + 1 < len(shots) else n
        # a short miss at the end of a shot still belongs to it; a long one is a lost span
        end = nxt if nxt - end < lost_min else end
        ranges.append((start, end))
    if ranges and ranges[0][0] > 0:
        lost.append((0, ranges[0][0]))
    for (_, e), (s2, _) in zip(ranges, ranges[1:], strict=False):
        if s2 > e:
            lost.append((e, s2))
    if ranges and ranges[-1][1] < n:
        lost.append((ranges[-1][1], n))
    boxes: list[CropBox | None] = [None] * n
    for (start, end), idx in zip(ranges, shots, strict=True):
        for i, box in zip(
            range(start, end), _shot_boxes(raw, idx, start, end, fps, scale), strict=True
        ):
            boxes[i] = fit_in_frame(box, width, height)
    for start, end in lost:  # hold the crop where the face was last (or is first) seen
        before = boxes[start - 1] if start > 0 else None
        hold = (before or boxes[end]) if end < n else before
        if hold is None:
            hold = fit_in_frame(CropBox(0, 0, min(width, height)), width, height)
        for i in range(start, end):
            boxes[i] = hold
    rekey = _rekeys(raw, boxes, ranges, width, height, fps)  # type: ignore[arg-type]
    refresh = sorted(
        set(rekey)
        | {s for s, _ in ranges if s > 0}
        | {s for s, _ in lost if s > 0}
        | {
            i
            for s, e in lost
            for i in range(s, e, max(1, int(round(LOST_REFRESH_S * fps))))
            if i > 0
        }
    )
    lost_starts = {s for s, _ in lost}
    lost_ends = {e for _, e in lost}
    reasons = {
        i: "face-found"
        if i in lost_ends
        else "request"
        if i in lost_starts or _in(i, lost)
        else "cut"
        for i in refresh
    }
    return FaceTrack(width, height, fps, boxes, ranges, lost, refresh, reasons)  # type: ignore[arg-type]


def _in(i: int, spans: list[tuple[int, int]]) -> bool:
    return any(s <= i < e for s, e in spans)


def _rekeys(
    raw: list[_Box | None],
    boxes: list[CropBox],
    ranges: list[tuple[int, int]],
    width: int,
    height: int,
    fps: float,
) -> list[int]:
    """Frames inside shots where the key frame no longer serves: the face has moved in the
    crop by more than REKEY of its side since the key (the crop is held by the picture's
    border), or the key showed the face cut by the border and now it is whole."""
    out = []
    gap = max(1, int(round(REKEY_MIN_S * fps)))

    def state(i: int, b: _Box) -> tuple[float, float, bool]:
        c = boxes[i]
        cut = min(
            b[0] - b[2] / 2, b[1] - b[2] / 2, width - b[0] - b[2] / 2, height - b[1] - b[2] / 2
        )
        return (b[0] - c.x) / c.size, (b[1] - c.y) / c.size, cut < -0.1 * b[2]

    for start, end in ranges:
        key: tuple[float, float, bool] | None = None
        last = start
        for i in range(start, end):
            b = raw[i]
            if b is None:
                continue
            x, y, cut = state(i, b)
            if key is None:
                key = (x, y, cut)
                continue
            moved = np.hypot(x - key[0], y - key[1]) > REKEY
            # while the key shows a face cut by the border (entering), renew it quickly
            if (moved or (key[2] and not cut)) and i - last >= (2 if key[2] else gap):
                out.append(i)
                key, last = (x, y, cut), i
    return out


def _shot_boxes(
    raw: list[_Box | None], idx: list[int], start: int, end: int, fps: float, scale: float
) -> list[CropBox]:
    """Crops for frames start..end-1 of one shot: one size, a smoothed centre path."""
    t = np.arange(start, end)
    det = np.array([raw[i] for i in idx], dtype=np.float64)
    cx = np.interp(t, idx, det[:, 0])
    cy = np.interp(t, idx, det[:, 1])
    side_face = float(np.median(det[:, 2]))
    cy = cy - HEAD_SHIFT_UP * side_face
    side = max(int(round(side_face * scale)), 2)
    side += side % 2
    lead = max(1, int(fps))  # the camera starts where the face is during the first second
    sx = _smooth(_lazy(cx, LAZY * side, lead), fps)
    sy = _smooth(_lazy(cy, LAZY * side, lead), fps)
    lim = KEEP_IN * side
    sx = np.clip(sx, cx - lim, cx + lim)
    sy = np.clip(sy, cy - lim, cy + lim)
    for v in (sx, sy):  # a face that hardly moves gets a fixed crop: no swimming background
        if np.ptp(v) < STILL * side:
            v[:] = np.median(v)
    return [
        CropBox(int(round(x - side / 2)), int(round(y - side / 2)), side)
        for x, y in zip(sx, sy, strict=True)
    ]


def _lazy(c: np.ndarray, slack: float, lead: int) -> np.ndarray:
    """A camera that stays put while the face moves within ``slack`` of its aim and is
    dragged along (by the face's excess) when it goes further: talking heads get a still
    crop, a walk or a lean a following one."""
    out = np.empty_like(c)
    p = float(np.median(c[:lead]))
    for i, v in enumerate(c):
        p = min(max(p, v - slack), v + slack)
        out[i] = p
    return out


def _smooth(x: np.ndarray, fps: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing (edges reflected), sigma SMOOTH_S seconds."""
    sigma = SMOOTH_S * fps
    r = int(3 * sigma)
    if r < 1 or len(x) < 2:
        return x.copy()
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = (
        np.pad(x, r, mode="reflect", reflect_type="odd")
        if len(x) > r
        else np.pad(x, r, mode="edge")
    )
    return np.convolve(pad, k, mode="valid")


__all__ = ["FaceTrack", "all_faces", "plan_crops", "track_face"]
