"""Edit head pose and expression on the *decoded* feature stream, then synthesise.

Why here: the features of the default ``landmark`` model (and FV2V's head rotation) have a
meaning, so a receiver can turn the head or open the mouth without touching the bitstream:
the .gfv file is decoded as usual, each decoded feature vector is changed by the edits that
cover its frame, and only then rendered (``Decoder.edit``). The file stays byte for byte
what was sent.

Units: yaw, pitch and roll in degrees; landmark expression components in canonical pixels
(``gfvc/models/faceshape.py``). Allowed ranges are what the model met in training:

* ``landmark``: measured by ``benchmarks/edit_ranges.py`` over the training clips (the 0.5th
  to 99.5th percentile of each component, FaceMesh landmarks analysed with the packaged shape
  model) and shipped in ``gfvc/data/landmark_edit_ranges.json``, keyed by the shape model's
  digest (another checkpoint gets no ranges, so it cannot be edited blindly).
* ``fv2v``: yaw, pitch, roll in the span its head-pose estimator can report (66 bins of
  3 degrees from -99), the pose range the reference network was built for; the rotation
  matrix is decomposed as R = Rx(pitch) Ry(yaw) Rz(roll), the reference's order.

A ``set`` puts the value; an ``add`` adds a delta. Results are clamped into the allowed range
(the frames where that happened are counted), so a head already turned cannot be pushed past
what the model can render.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np

from gfvc.errors import InputError
from gfvc.models import MotionModel
from gfvc.models.faceshape import NAMED, ShapeModel

POSE = ("yaw", "pitch", "roll")
#: What ``landmark`` exposes: head rotation and the ten named expression components.
LANDMARK_EDITABLE: tuple[str, ...] = POSE + NAMED
#: FV2V's head-pose estimator: 66 bins of 3 degrees starting at -99.
FV2V_POSE_RANGE = (-99.0, 96.0)
RANGES_FILE = "landmark_edit_ranges.json"


@dataclass(frozen=True)
class FeatureEdit:
    """One edit of one named component.

    ``op`` "set" puts ``value``; "add" adds it. Frames ``start`` (inclusive) to ``stop``
    (**exclusive**, Python slice convention; None: to the end) of the decoded stream; the
    CLI's ``--from F --to T`` are both inclusive (stop = T + 1).
    """

    name: str
    op: Literal["set", "add"]
    value: float
    start: int | None = None
    stop: int | None = None

    def __post_init__(self) -> None:
        if self.op not in ("set", "add"):
            raise InputError(f"edit operation must be 'set' or 'add', got {self.op!r}")
        if not math.isfinite(self.value):
            raise InputError(f"{self.name}: value must be a finite number, got {self.value}")
        if self.start is not None and self.start < 0:
            raise InputError(f"edit frame range cannot start before frame 0, got {self.start}")
        if self.start is not None and self.stop is not None and self.stop <= self.start:
            raise InputError(
                f"empty edit frame range: from frame {self.start} to before frame {self.stop}"
            )

    def covers(self, index: int) -> bool:
        return (self.start is None or index >= self.start) and (
            self.stop is None or index < self.stop
        )


# ----------------------------------------------------------------------------- components


def shape_digest(shape: ShapeModel) -> str:
    """sha256 of a shape model's mean, basis and names (what the measured ranges depend on)."""
    h = hashlib.sha256()
    for a in (shape.mean, shape.basis):
        h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    h.update("\n".join(shape.names).encode())
    return h.hexdigest()


@lru_cache(maxsize=1)
def _landmark_stats() -> dict:
    path = Path(str(resources.files("gfvc") / "data" / RANGES_FILE))
    return json.loads(path.read_text())


def component_stats(model: MotionModel) -> dict[str, dict[str, float]]:
    """name -> {lo, hi, mean, std} measured in training (landmark only; see module doc)."""
    if model.name != "landmark":
        raise InputError(f"no measured component statistics for the {model.name!r} model")
    stats = _landmark_stats()
    if stats["shape_sha256"] != shape_digest(model.shape):  # type: ignore[attr-defined]
        raise InputError(
            "this landmark checkpoint's shape model differs from the packaged one: its "
            "training ranges are unknown (measure them with benchmarks/edit_ranges.py)"
        )
    return stats["components"]


def editable_components(model: MotionModel) -> dict[str, tuple[float, float]]:
    """Each editable name -> allowed (lo, hi) in user units (degrees for the head pose).

    Raises ``InputError`` for models whose features carry no named pose or expression."""
    if model.name == "landmark":
        return {k: (v["lo"], v["hi"]) for k, v in component_stats(model).items()}
    if model.name == "fv2v":
        return dict.fromkeys(POSE, FV2V_POSE_RANGE)
    raise InputError(
        f"the {model.name!r} model's features have no named head pose or expression to edit; "
        "edit works with: landmark, fv2v"
    )


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def xyz_euler(r: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in degrees of R = Rx(pitch) Ry(yaw) Rz(roll) (FV2V's order)."""
    yaw = math.asin(max(-1.0, min(1.0, r[0, 2])))
    pitch = math.atan2(-r[1, 2], r[2, 2])
    roll = math.atan2(-r[0, 1], r[0, 0])
    return math.degrees(pitch), math.degrees(yaw), math.degrees(roll)


def xyz_rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """Inverse of ``xyz_euler``."""
    p, y, r = (math.radians(v) for v in (pitch, yaw, roll))
    return _rx(p) @ _ry(y) @ _rz(r)


def read_components(model: MotionModel, vector: np.ndarray) -> dict[str, float]:
    """The editable components' values in one feature vector."""
    names = editable_components(model)
    if model.name == "fv2v":
        pitch, yaw, roll = xyz_euler(np.asarray(vector[:9], dtype=np.float64).reshape(3, 3))
        return {"yaw": yaw, "pitch": pitch, "roll": roll}
    order = model.feature_names  # type: ignore[attr-defined]
    return {n: float(vector[order.index(n)]) for n in names}


def write_components(
    model: MotionModel, vector: np.ndarray, values: dict[str, float]
) -> np.ndarray:
    """A copy of ``vector`` with the named components replaced by ``values``."""
    out = np.array(vector, dtype=np.float64, copy=True)
    if model.name == "fv2v":
        v = {**read_components(model, out), **values}
        out[:9] = xyz_rotation(v["pitch"], v["yaw"], v["roll"]).ravel()
        return out
    order = model.feature_names  # type: ignore[attr-defined]
    for n, x in values.items():
        out[order.index(n)] = x
    return out


# ----------------------------------------------------------------------------- edits


def parse_edit(
    text: str, op: Literal["set", "add"], start: int | None = None, stop: int | None = None
) -> FeatureEdit:
    """``NAME=VALUE`` (``--set``/``--add``) -> FeatureEdit; names are checked later against
    the model (``check_edits``)."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise InputError(f"--{op} expects NAME=VALUE (e.g. jaw_open=5), got {text!r}")
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"--{op} {name}: {value.strip()!r} is not a number") from None
    return FeatureEdit(name, op, number, start, stop)


def check_edits(model: MotionModel, edits: Sequence[FeatureEdit]) -> None:
    """InputError (one line: what is allowed) for an unknown name or a value outside the
    training range (``set``: the value itself; ``add``: a delta wider than the range)."""
    allowed = editable_components(model)
    for e in edits:
        if e.name not in allowed:
            raise InputError(
                f"unknown component {e.name!r} for the {model.name} model; editable: "
                + ", ".join(allowed)
            )
        lo, hi = allowed[e.name]
        ok = lo <= e.value <= hi if e.op == "set" else abs(e.value) <= hi - lo
        if not ok:
            span = f"{lo:g} .. {hi:g}" if e.op == "set" else f"{lo - hi:g} .. {hi - lo:g}"
            unit = " degrees" if e.name in POSE else ""
            raise InputError(
                f"{e.op} {e.name}={e.value:g} is outside what the {model.name} model was "
                f"trained on: allowed {span}{unit}"
            )


def apply_edits_clamped(
    model: MotionModel, vector: np.ndarray, edits: Sequence[FeatureEdit], index: int
) -> tuple[np.ndarray, bool]:
    """``apply_edits`` and whether a result had to be clamped into its allowed range."""
    active = [e for e in edits if e.covers(index)]
    if not active:
        return np.array(vector, dtype=np.float64, copy=True), False
    check_edits(model, active)
    allowed = editable_components(model)
    values = read_components(model, vector)
    changed, clamped = {}, False
    for e in active:  # in order: a later edit of the same name sees the earlier one
        x = e.value if e.op == "set" else changed.get(e.name, values[e.name]) + e.value
        lo, hi = allowed[e.name]
        clamped |= not lo <= x <= hi
        changed[e.name] = min(max(x, lo), hi)
    return write_components(model, vector, changed), clamped


def apply_edits(
    model: MotionModel, vector: np.ndarray, edits: Sequence[FeatureEdit], index: int
) -> np.ndarray:
    """One frame's decoded feature vector with the edits covering frame ``index`` applied
    (an edited copy; results clamped into the training range)."""
    return apply_edits_clamped(model, vector, edits, index)[0]


# ----------------------------------------------------------------------------- streams


@dataclass
class EditReport:
    frames: int = 0
    edited: int = 0  # frames some edit covered
    clamped: int = 0  # frames where a result was clamped into the training range


def edit_frames(
    data: bytes,
    edits: Sequence[FeatureEdit],
    *,
    model: MotionModel | None = None,
    report: EditReport | None = None,
    **model_options,
) -> Iterator[np.ndarray]:
    """Decode the bytes of a .gfv file with ``edits`` applied to its decoded features,
    frame by frame (the bytes are not changed). ``report`` (when given) is filled in."""
    from gfvc.bitstream import parse_stream
    from gfvc.codec import Decoder

    rep = report if report is not None else EditReport()
    parsed = parse_stream(data)
    with Decoder(parsed.header, model, **model_options) as dec:
        check_edits(dec.model, edits)
        if parsed.frames and any(e.start is not None and e.start >= parsed.frames for e in edits):
            raise InputError(
                f"an edit starts at or after the stream's end ({parsed.frames} frames, 0.."
                f"{parsed.frames - 1})"
            )
        dec.edit = _counting_hook(dec.model, edits, rep)
        for unit in parsed.units:
            yield dec.decode_unit(unit)
            rep.frames += 1


def _counting_hook(
    model: MotionModel, edits: Sequence[FeatureEdit], rep: EditReport
) -> Callable[[int, np.ndarray], np.ndarray]:
    def hook(index: int, feature: np.ndarray) -> np.ndarray:
        out, clamped = apply_edits_clamped(model, feature, edits, index)
        rep.edited += any(e.covers(index) for e in edits)
        rep.clamped += clamped
        return out

    return hook


def edit_file(
    src: str | Path | bytes,
    dst: str | Path,
    edits: Sequence[FeatureEdit],
    *,
    checkpoint: str | None = None,
    config: str | None = None,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
    audio_from: str | Path | None = None,
) -> EditReport:
    """Decode a .gfv file (path or bytes) with ``edits`` into a video (written atomically)."""
    from gfvc.bitstream import parse_stream
    from gfvc.codec import check_device, read_stream
    from gfvc.io import VideoWriter

    check_device(device)
    data = src if isinstance(src, bytes) else read_stream(src)
    h = parse_stream(data).header  # verified whole before anything is written
    rep = EditReport()
    opts = {"checkpoint": checkpoint, "config": config, "device": device}
    frames = edit_frames(data, edits, report=rep, **opts)
    with VideoWriter(dst, fps=h.fps, width=h.width, height=h.height, audio_from=audio_from) as out:
        for frame in frames:
            out.write(frame)
            if progress:
                progress(1)
    return rep


__all__ = [
    "EditReport",
    "FeatureEdit",
    "apply_edits",
    "check_edits",
    "edit_file",
    "edit_frames",
    "editable_components",
    "parse_edit",
]
