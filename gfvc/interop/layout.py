"""Where a model's feature vector goes in the GFV / GFVE SEI syntax.

:func:`plan_layout` maps each feature field onto GFV keypoints, GFV matrix types or GFVE
pupils (:class:`SeiLayout`); :func:`feature_fields` finds a stream's fields without building
its model. Also the fixed identifiers both directions use (side-information UUID, codec ids).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from gfvc.bitstream import StreamHeader
from gfvc.bitstream.sei import APPLICATION_MATRIX_TYPE, matrix_size
from gfvc.errors import InputError
from gfvc.models.base import FeatureField, MotionModel

#: user_data_unregistered (payloadType 5) UUID of the model side information of a key unit
#: (``MotionModel.key_side_info``), which has no place in the GFV syntax.
USER_DATA_UNREGISTERED = 5
SIDE_INFO_UUID = uuid.uuid5(uuid.NAMESPACE_URL, "https://gfvc/sei/key-side-info").bytes
#: ... and of a .gfv version-2 key unit's own two bytes (why it was sent, its QP).
KEY_INFO_UUID = uuid.uuid5(uuid.NAMESPACE_URL, "https://gfvc/sei/key-info").bytes

#: Codec ids of the .gfv header (docs/bitstream.md) for the two SEI-capable codecs.
KEYFRAME_CODEC_IDS: dict[str, int] = {"hevc": 1, "vvc": 3}

#: Model ids fixed in docs/bitstream.md, for layouts derived without building the model.
_OFFICIAL_FAMILIES = {2: "fomm", 3: "cfte", 4: "fv2v", 5: "dac", 6: "hdac", 7: "rdac"}

#: Field name -> GFV matrix type (checked against the type's size rules before use).
FIELD_MATRIX_TYPES: dict[str, int] = {
    "jacobians": 0,
    "jacobian": 0,
    "covariance": 1,
    "mouth": 2,
    "eyes": 3,
    "rotation": 4,
    "translation": 5,
    "location": 6,
    "compact": 7,
}
#: "vector" fields carried as GFV keypoints when the model has no coordinate field
#: (FV2V's 15 3-D expression offsets; the HM example configuration does the same).
VECTOR_AS_COORDINATES = frozenset({"expression"})


def _pupil_rows(model_name: str) -> tuple[str, int, int] | None:
    """(field, left-eye row, right-eye row) for models that track pupils.

    mesh: the iris centres, FaceMesh 473 (the subject's left eye) and 468 (right).
    """
    if model_name == "mesh":
        from gfvc.models.mesh import LANDMARKS

        if 468 in LANDMARKS and 473 in LANDMARKS:
            return "landmarks", LANDMARKS.index(473), LANDMARKS.index(468)
    return None


@dataclass(frozen=True)
class MatrixSlot:
    """One feature field carried as one GFV matrix type."""

    type_idx: int
    field: str
    shape: tuple[int, int, int]  # (N, H, W)


@dataclass(frozen=True)
class SeiLayout:
    """Where each scalar of a model's feature vector goes in the GFV / GFVE syntax."""

    fields: tuple[FeatureField, ...]
    coord_field: str | None = None
    coord_rows: tuple[int, ...] = ()
    coord_dims: int = 2
    coord_scale: Fraction = Fraction(1)  # SEI value = model value * scale + offset
    coord_offset: Fraction = Fraction(0)
    pupils: tuple[str, int, int] | None = None  # field, left row, right row (GFVE)
    matrices: tuple[MatrixSlot, ...] = ()

    @property
    def dim(self) -> int:
        return sum(f.size for f in self.fields)

    def offsets(self) -> dict[str, int]:
        out, at = {}, 0
        for f in self.fields:
            out[f.name] = at
            at += f.size
        return out

    def index_map(self) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """Vector indices of (coordinates (K, d), each matrix (N, H, W), pupils (2, 2))."""
        off = self.offsets()
        fields = {f.name: f for f in self.fields}
        coords = np.zeros((0, self.coord_dims), dtype=np.int64)
        if self.coord_field is not None:
            f = fields[self.coord_field]
            grid = off[f.name] + np.arange(f.size).reshape(f.shape[0], -1)
            coords = grid[list(self.coord_rows)]
        mats = [
            off[s.field] + np.arange(fields[s.field].size).reshape(s.shape) for s in self.matrices
        ]
        pupils = np.zeros((0, 2), dtype=np.int64)
        if self.pupils is not None:
            f = fields[self.pupils[0]]
            grid = off[f.name] + np.arange(f.size).reshape(f.shape[0], -1)
            pupils = grid[[self.pupils[1], self.pupils[2]], :2]
        return coords, mats, pupils


def plan_layout(
    fields: Sequence[FeatureField],
    model_name: str = "",
    size: int = 256,
    *,
    pupils: bool = True,
) -> SeiLayout:
    """Map a model's feature fields onto GFV keypoints, matrix types and GFVE pupils.

    Keypoints: the first ``coordinates`` field (or an ``expression`` vector of (K, 2|3)).
    Matrices: fields named as in ``FIELD_MATRIX_TYPES`` when the type's size rules allow,
    everything else as application-defined type 8 matrices. Pupils (mesh) go to GFVE and
    leave the keypoints, unless ``pupils`` is False.
    """
    fields = tuple(fields)
    coord: FeatureField | None = next(
        (
            f
            for f in fields
            if f.kind == "coordinates" and len(f.shape) == 2 and f.shape[1] in (2, 3)
        ),
        None,
    )
    if coord is None:
        coord = next(
            (
                f
                for f in fields
                if f.kind == "vector"
                and f.name in VECTOR_AS_COORDINATES
                and len(f.shape) == 2
                and f.shape[1] in (2, 3)
            ),
            None,
        )
    rows: tuple[int, ...] = ()
    dims = 2
    pup = None
    scale, offset = Fraction(1), Fraction(0)
    if coord is not None:
        dims = coord.shape[1]
        rows = tuple(range(coord.shape[0]))
        pup = _pupil_rows(model_name) if pupils else None
        if (
            pup is not None
            and pup[0] == coord.name
            and dims == 2
            and max(pup[1], pup[2]) < coord.shape[0]
        ):
            rows = tuple(r for r in rows if r not in (pup[1], pup[2]))
        else:
            pup = None
        if model_name == "mesh":  # pixels -> [-1, 1]
            scale, offset = Fraction(2, size), Fraction(-1)
    z = dims == 3
    k = len(rows)
    slots = []
    for f in fields:
        if coord is not None and f.name == coord.name:
            continue
        slots.append(_matrix_slot(f, coord is not None, z, k))
    return SeiLayout(
        fields=fields,
        coord_field=coord.name if coord is not None else None,
        coord_rows=rows,
        coord_dims=dims,
        coord_scale=scale,
        coord_offset=offset,
        pupils=pup,
        matrices=tuple(slots),
    )


def _matrix_slot(f: FeatureField, coords: bool, z: bool, k: int) -> MatrixSlot:
    shape = f.shape
    if len(shape) == 3:
        nhw = (shape[0], shape[1], shape[2])
    elif len(shape) == 2:
        nhw = (1, shape[0], shape[1])
    else:
        nhw = (1, f.size, 1)
    t = FIELD_MATRIX_TYPES.get(f.name)
    n, h, w = nhw
    ok = False
    if t in (0, 1):
        ok = coords and (h, w) == matrix_size(t, z) and n >= 1 and (n == k or n - 1 <= 1024)
    elif t in (2, 3):
        ok = n == 1
    elif t in (4, 5, 6):
        ok = (
            n == 1
            and h in (2, 3)
            and (h, w) == matrix_size(t, h == 3)
            and (not coords or (h == 3) == z)
        )
    elif t == 7:
        ok = True
    if not ok:
        t = APPLICATION_MATRIX_TYPE
    if not (n <= 1024 and h <= 1024 and w <= 1024):
        raise InputError(f"feature field {f.name!r} {shape} is too large for a GFV matrix")
    return MatrixSlot(t, f.name, nhw)


def feature_fields(
    header: StreamHeader, model: MotionModel | None = None
) -> tuple[FeatureField, ...]:
    """The feature layout of a .gfv stream, preferably without building the model.

    ``model`` wins when given. mesh is built directly (cheap); the official families are
    derived from their packaged configuration; anything else is one plain vector.
    """
    if model is not None:
        fields = tuple(model.fields)
    else:
        fields = _fields_without_model(header)
    if sum(f.size for f in fields) != header.feature_dim:
        fields = (FeatureField("features", "vector", (header.feature_dim,)),)
    return fields


def _fields_without_model(header: StreamHeader) -> tuple[FeatureField, ...]:
    if header.model_id == 1:
        from gfvc.models.mesh import MeshModel

        return MeshModel(size=header.width).fields
    if header.model_id == 8:  # landmark: pose + expression, whatever weights are installed
        return (
            FeatureField("pose", "vector", (6,)),
            FeatureField("expression", "vector", (header.feature_dim - 6,)),
        )
    family = _OFFICIAL_FAMILIES.get(header.model_id)
    if family is not None:
        try:
            return _official_fields(family, header.width)
        except Exception:  # a missing or changed config: fall back to one vector
            pass
    try:
        from gfvc.models import model_class_by_id

        cls = model_class_by_id(header.model_id)
        return tuple(cls.create(size=header.width).fields)
    except Exception:
        return (FeatureField("features", "vector", (header.feature_dim,)),)


def _official_fields(family: str, size: int) -> tuple[FeatureField, ...]:
    """Fields of an official family from its packaged yaml (mirrors the model classes)."""
    from importlib import resources

    import yaml

    text = (
        resources.files("gfvc.models.official").joinpath(f"configs/{family}-256.yaml").read_text()
    )
    params = yaml.safe_load(text)["model_params"]
    kp = int(params["common_params"]["num_kp"])
    if family == "fomm":
        f = [FeatureField("keypoints", "coordinates", (kp, 2))]
        if params["common_params"].get("estimate_jacobian", False):
            f.append(FeatureField("jacobians", "matrix", (kp, 2, 2)))
        return tuple(f)
    if family == "cfte":
        scale = float(params["kp_detector_params"].get("scale_factor", 1))
        s = int(round(size * scale)) // 16
        return (FeatureField("compact", "matrix", (kp, s, s)),)
    if family == "fv2v":
        return (
            FeatureField("rotation", "matrix", (1, 3, 3)),
            FeatureField("translation", "vector", (3,)),
            FeatureField("expression", "vector", (kp, 3)),
        )
    return (FeatureField("keypoints", "coordinates", (kp, 2)),)


def model_name(header: StreamHeader, model: MotionModel | None) -> str:
    """Registry name of the stream's model (without importing torch when avoidable)."""
    if model is not None:
        return model.name
    try:
        from gfvc.models import model_class_by_id

        return model_class_by_id(header.model_id).name
    except Exception:
        return {1: "mesh", **_OFFICIAL_FAMILIES}.get(header.model_id, f"model{header.model_id}")
