"""Motion transfer: another person's (or a painting's, an avatar's) picture as the key frame,
driven by the features of a driving video, through the ordinary encoder and decoder.

Why through the codec: what comes out is exactly what a receiver of that stream would show,
and the stream itself (``save_gfv``) is an ordinary .gfv file that ``gfvc decode`` plays.

Relative motion (the default) applies the driving video's *change* from its own first frame
to the source's pose and expression, so a different face shape or a different starting
pose does not distort the source::

    rotation      R = R_d R_d0^T R_s            (landmark pose, FV2V rotation)
    translation   t = t_s + (t_d - t_d0) s_s / s_d0    (landmark, in the source's scale)
    log scale     l = l_s + l_d - l_d0
    the rest      x = x_s + (x_d - x_d0)        (expressions, keypoints)
    Jacobians     J = J_d J_d0^-1 J_s           (FOMM)

CFTE's compact features are learned maps without geometry, so only absolute transfer
(``absolute=True``: the driving features as they are) is offered for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gfvc import DEFAULT_MODEL
from gfvc.errors import InputError
from gfvc.models import MotionModel
from gfvc.models.faceshape import euler_from_rotation, rotation_from_euler

#: Field name -> how relative motion composes it (see the module docstring).
RELATIVE_FIELDS = {
    "pose": "landmark_pose",
    "rotation": "rotation",
    "jacobians": "jacobian",
    "keypoints": "add",
    "translation": "add",
    "expression": "add",
}


def supports_relative(model: MotionModel) -> bool:
    return all(f.name in RELATIVE_FIELDS for f in model.fields)


def _landmark_pose(s: np.ndarray, d: np.ndarray, d0: np.ndarray) -> np.ndarray:
    """Compose a landmark pose (yaw, pitch, roll, tx, ty, 100 ln scale)."""
    r = rotation_from_euler(*d[:3]) @ rotation_from_euler(*d0[:3]).T @ rotation_from_euler(*s[:3])
    ratio = np.exp((s[5] - d0[5]) / 100)  # driving pixels -> source pixels
    t = s[3:5] + (d[3:5] - d0[3:5]) * ratio
    return np.array([*euler_from_rotation(r), *t, s[5] + d[5] - d0[5]])


def _rotation(s: np.ndarray, d: np.ndarray, d0: np.ndarray) -> np.ndarray:
    return d @ np.swapaxes(d0, -1, -2) @ s


def _jacobian(s: np.ndarray, d: np.ndarray, d0: np.ndarray) -> np.ndarray:
    try:
        return d @ np.linalg.inv(d0) @ s
    except np.linalg.LinAlgError:
        raise InputError(
            "the driving video's first frame has a singular Jacobian: use --absolute"
        ) from None


_COMPOSE: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "landmark_pose": _landmark_pose,
    "rotation": _rotation,
    "jacobian": _jacobian,
    "add": lambda s, d, d0: s + (d - d0),
}


def relative_feature(
    model: MotionModel, source: np.ndarray, driving: np.ndarray, driving_first: np.ndarray
) -> np.ndarray:
    """The source's feature moved by the driving video's change since its first frame."""
    if not supports_relative(model):
        raise InputError(
            f"the {model.name} model's features have no geometry to transfer relatively: "
            "use --absolute"
        )
    s, d, d0 = (
        model.split_vector(np.asarray(v, dtype=np.float64))
        for v in (source, driving, driving_first)
    )
    parts = [
        _COMPOSE[RELATIVE_FIELDS[f.name]](s[f.name], d[f.name], d0[f.name]).ravel()
        for f in model.fields
    ]
    return np.concatenate(parts)


# ----------------------------------------------------------------------------- files


@dataclass
class AnimateReport:
    frames: int
    kbps: float
    stream_bytes: int


def source_frame(path: str | Path, size: int, crop: bool = True) -> np.ndarray:
    """The key frame: a still image, or a video's first frame, face-cropped to ``size``."""
    from gfvc.io import crop_and_resize, find_face_crop, read_frames

    frames = list(read_frames(path, 1))
    if not frames:
        raise InputError(f"{path} has no frames")
    box = find_face_crop(frames, source=str(path)) if crop else None
    return crop_and_resize(frames[0], box, size)


def driven_units(
    model: MotionModel,
    source: np.ndarray,
    driving: Iterator[np.ndarray],
    absolute: bool,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(frame, feature) pairs for ``codec.stream_chunks``: the source as the key frame (its
    feature the encoder's own analysis), then one transferred feature per driving frame."""
    if not absolute and not supports_relative(model):
        relative_feature(model, source, source, source)  # raises the one-line error
    model.reset()
    src_feature = model.analyse(source)
    yield source, None  # the encoder analyses it again as its key frame
    model.reset()  # the driving person starts a new track: no smoothing across people
    first = None
    for frame in driving:
        d = model.analyse(frame)
        first = d if first is None else first
        yield frame, d if absolute else relative_feature(model, src_feature, d, first)


def animate_file(
    source: str | Path,
    driving: str | Path,
    dst: str | Path,
    *,
    model: str = DEFAULT_MODEL,
    checkpoint: str | None = None,
    config: str | None = None,
    device: str = "cpu",
    absolute: bool = False,
    frames: int | None = None,
    qp: int | None = None,
    crop: bool = True,
    save_gfv: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> AnimateReport:
    """Animate ``source`` with ``driving``'s motion into the video ``dst`` (and the stream
    into ``save_gfv``), both written atomically. Key frame: the source; every later unit a
    transferred feature; no further key frames (they would show the driving person).
    ``frames`` limits the driving frames used; the output has one more (the source first)."""
    from gfvc.codec import (
        EncodeSettings,
        FramePreparer,
        build_model,
        decode_file,
        make_encoder,
        stream_chunks,
        stream_report,
    )
    from gfvc.io.atomic import AtomicFile

    s = EncodeSettings(
        model=model,
        checkpoint=checkpoint,
        config=config,
        device=device,
        qp=qp,
        frames=frames,
        crop=crop,
        watch=False,
    )
    m = build_model(model, checkpoint=checkpoint, config=config, device=device, size=s.size)
    src = source_frame(source, m.size, crop)
    prep = FramePreparer(driving, s)
    try:
        enc = make_encoder(s, prep.fps, m)
        units = driven_units(m, src, iter(prep), absolute)
        data = b"".join(stream_chunks(enc, units, progress))
    finally:
        prep.close()
    if save_gfv is not None:
        with AtomicFile(save_gfv) as out:
            out.write(data)
    n = decode_file(data, dst, checkpoint=checkpoint, config=config, device=device)
    return AnimateReport(n, stream_report(data).kbps, len(data))
