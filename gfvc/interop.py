"""Standard interop: a .gfv file <-> an HEVC/VVC Annex-B stream carrying GFV/GFVE SEI messages.

``export_stream`` writes, for every key unit of a .gfv file, its key picture (the HEVC or
VVC picture as coded; re-encoded with x265 when the key frame is in another format) and
then one suffix SEI with one GFV message per frame of that key unit's segment, ``gfv_cnt``
0..N-1, the first being the base-picture message (the key frame's own features). Any
HEVC decoder plays the key frame; ``import_stream`` turns the stream back into a .gfv file
with the same integer features (and, when the key frame was HEVC, the identical file).

The mapping between the .gfv integers and the SEI integers (docs/sei.md has the long form):
feature scalar j of frame t is ``acc[t, j] / qstep`` in model units (``Decoder.trace``).
Coordinates are carried in SEI units ``u = x * s + o`` (mesh: pixels normalised to
[-1, 1], s = 2/size, o = -1; other models: s = 1, o = 0) on the 2^-P grid, matrix elements
on the 2^-Q grid. P (and Q) is the smallest precision for which one .gfv step is a whole
number ``a = s * 2^P / qstep`` of SEI steps and the offset ``o * 2^P`` is whole, so the
SEI integer is ``acc * a + o * 2^P`` exactly and import divides back. When no such P <= 32
exists (qstep not a power of two) P is the smallest with a >= 2: the SEI then carries the
nearest grid point and import rounds back, still exactly.

Everything the .gfv header needs and the SEI syntax cannot hold (model id and hash, qstep,
coder, frame rate, field layout) travels in the base message's NN URI (gfv_nn_mode_idc 1),
which is what the URI is for: naming the network that animates the base picture.
"""

from __future__ import annotations

import math
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, quote, urlencode

import numpy as np

from gfvc.bitstream import StreamHeader, parse_stream, unpack_key_payload
from gfvc.bitstream.format import FEATURE, KEY, SegmentPacker, pack_key_payload
from gfvc.bitstream.nal import (
    Codec,
    SeiMessage,
    detect_codec,
    is_annexb,
    parse_sei_rbsp,
    sei_nal_unit,
    split_nal_units,
)
from gfvc.bitstream.sei import (
    APPLICATION_MATRIX_TYPE,
    PAYLOAD_GFV,
    PAYLOAD_GFVE,
    Form,
    GfveMessage,
    GfvePupilGridEncoder,
    GfveValues,
    GfvGridEncoder,
    GfvMessage,
    GfvValues,
    NeuralNetworkInfo,
    ReservedIdError,
    SeiReader,
    SeiWriter,
    matrix_size,
)
from gfvc.errors import BitstreamError, GfvcError, InputError
from gfvc.io.atomic import write_atomic
from gfvc.models.base import FeatureField, MotionModel

NN_TAG_URI = "tag:gfvc,2025:gfv-features"
#: user_data_unregistered (payloadType 5) UUID of the model side information of a key unit
#: (``MotionModel.key_side_info``), which has no place in the GFV syntax.
USER_DATA_UNREGISTERED = 5
SIDE_INFO_UUID = uuid.uuid5(uuid.NAMESPACE_URL, "https://gfvc/sei/key-side-info").bytes
NN_URI_PREFIX = "urn:gfvc:gfv:1?"
URI_VERSION = 1

#: Codec ids of the .gfv header (docs/bitstream.md) for the two SEI-capable codecs.
KEYFRAME_CODEC_IDS: dict[str, int] = {"hevc": 1, "vvc": 3}
_LOSSLESS_ID = 4

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


# ----------------------------------------------------------------------------- layout


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


# ----------------------------------------------------------------------------- integer grids


def _choose_precision(
    scale: Fraction, offset: Fraction, qstep: Fraction, exact_ok: bool
) -> tuple[int, bool]:
    """Smallest P whose grid holds every .gfv step exactly, else the smallest with a >= 2."""
    if exact_ok:
        for p in range(1, 33):
            a = scale * (1 << p) / qstep
            if a.denominator == 1 and (offset * (1 << p)).denominator == 1:
                return p, True
    for p in range(1, 33):
        if scale * (1 << p) / qstep >= 2:
            return p, False
    raise InputError(
        f"qstep {float(qstep)} is too fine for the SEI precision factors (at most 2^-32)"
    )


def _round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


@dataclass
class GridMap:
    """acc (the .gfv integers) <-> SEI integers for one layout, qstep and anchor."""

    layout: SeiLayout
    qstep: Fraction
    coord_precision: int
    matrix_precision: int
    exact: bool
    base: np.ndarray | None = None  # per-scalar anchor (absolute mode), model units

    def __post_init__(self) -> None:
        self._index = self.layout.index_map()

    @classmethod
    def create(
        cls,
        layout: SeiLayout,
        qstep: float,
        base: np.ndarray | None = None,
        coord_precision: int | None = None,
        matrix_precision: int | None = None,
    ) -> GridMap:
        q = Fraction(qstep)
        exact_ok = base is None
        p = (
            coord_precision
            or _choose_precision(layout.coord_scale, layout.coord_offset, q, exact_ok)[0]
        )
        qm = matrix_precision or _choose_precision(Fraction(1), Fraction(0), q, exact_ok)[0]

        def whole(scale: Fraction, offset: Fraction, prec: int) -> bool:
            a = scale * (1 << prec) / q
            return a.denominator == 1 and (offset * (1 << prec)).denominator == 1

        exact = exact_ok
        if layout.coord_field is not None or layout.pupils is not None:
            exact = exact and whole(layout.coord_scale, layout.coord_offset, p)
        if layout.matrices:
            exact = exact and whole(Fraction(1), Fraction(0), qm)
        return cls(
            layout, q, p, qm, exact, None if base is None else np.asarray(base, dtype=np.float64)
        )

    def _to_grid(
        self, acc: np.ndarray, idx: np.ndarray, scale: Fraction, offset: Fraction, p: int
    ) -> np.ndarray:
        a = scale * (1 << p) / self.qstep
        b = offset * (1 << p)
        if self.base is None and a.denominator == 1 and b.denominator == 1:
            return acc[idx] * int(a) + int(b)
        out = np.empty(idx.shape, dtype=object)
        for pos, j in np.ndenumerate(idx):
            x = Fraction(int(acc[j])) / self.qstep
            if self.base is not None:
                x += Fraction(float(self.base[j]))
            out[pos] = _round_half_up((x * scale + offset) * (1 << p))
        return out.astype(np.int64)

    def grids(
        self, acc: np.ndarray
    ) -> tuple[np.ndarray | None, list[tuple[int, np.ndarray]], np.ndarray | None]:
        """SEI integers of one frame: coordinates (K, d), [(type, (N, H, W))], pupils (2, 2)."""
        lay = self.layout
        ci, mi, pi = self._index
        coords = None
        if lay.coord_field is not None:
            coords = self._to_grid(acc, ci, lay.coord_scale, lay.coord_offset, self.coord_precision)
        mats = [
            (s.type_idx, self._to_grid(acc, ix, Fraction(1), Fraction(0), self.matrix_precision))
            for s, ix in zip(lay.matrices, mi, strict=True)
        ]
        pupils = None
        if lay.pupils is not None:
            pupils = self._to_grid(acc, pi, lay.coord_scale, lay.coord_offset, self.coord_precision)
        return coords, mats, pupils

    def acc_from_values(
        self,
        coords: Sequence[Sequence[Fraction]] | None,
        mats: Sequence[Sequence[Fraction]] | None,
        pupils: Sequence[Sequence[Fraction]] | None,
        strict: bool,
    ) -> np.ndarray:
        """Invert: reconstructed SEI values -> the .gfv integers of one frame.

        ``strict``: every value must land exactly on the .gfv grid (our own streams in exact
        mode); otherwise the nearest integer is taken.
        """
        lay = self.layout
        ci, mi, pi = self._index
        acc = np.zeros(lay.dim, dtype=np.int64)
        filled = np.zeros(lay.dim, dtype=bool)

        def put(
            idx: np.ndarray,
            values: Sequence[Sequence[Fraction]] | Sequence[Fraction],
            scale: Fraction,
            offset: Fraction,
        ) -> None:
            flat = [v for row in values for v in (row if isinstance(row, tuple | list) else [row])]
            if len(flat) != idx.size:
                raise BitstreamError(
                    f"SEI message carries {len(flat)} values where the layout expects {idx.size}"
                )
            for j, u in zip(idx.ravel(), flat, strict=True):
                x = (Fraction(u) - offset) / scale
                if self.base is not None:
                    x -= Fraction(float(self.base[j]))
                a = x * self.qstep
                if a.denominator != 1:
                    if strict:
                        raise BitstreamError(
                            f"SEI value {float(u)} is not on the .gfv quantisation grid "
                            f"(qstep {float(self.qstep)})"
                        )
                    a = Fraction(_round_half_up(a))
                acc[j] = int(a)
                filled[j] = True

        if lay.coord_field is not None:
            if coords is None:
                raise BitstreamError(
                    "GFV message has no keypoint coordinates; the layout needs them"
                )
            put(ci, coords, lay.coord_scale, lay.coord_offset)
        if lay.matrices:
            if mats is None or len(mats) != len(lay.matrices):
                raise BitstreamError("GFV message's matrix types do not match the layout")
            for ix, vals in zip(mi, mats, strict=True):
                put(ix, vals, Fraction(1), Fraction(0))
        if lay.pupils is not None:
            if pupils is None:
                raise BitstreamError(
                    "no GFVE pupil coordinates for a layout that carries pupils there"
                )
            put(pi, pupils, lay.coord_scale, lay.coord_offset)
        if not filled.all():
            raise BitstreamError("the SEI messages leave some feature values undefined")
        return acc


# ----------------------------------------------------------------------------- metadata URI


def _fields_text(fields: Sequence[FeatureField]) -> str:
    kinds = {"coordinates": "c", "matrix": "m", "vector": "v"}
    return ",".join(f"{f.name}:{kinds[f.kind]}:{'x'.join(map(str, f.shape))}" for f in fields)


def _parse_fields(text: str) -> tuple[FeatureField, ...]:
    kinds = {"c": "coordinates", "m": "matrix", "v": "vector"}
    out = []
    try:
        for part in text.split(","):
            name, kind, shape = part.split(":")
            out.append(FeatureField(name, kinds[kind], tuple(int(s) for s in shape.split("x"))))  # type: ignore[arg-type]
    except (ValueError, KeyError):
        raise BitstreamError(f"gfvc NN URI has an invalid field list {text!r}") from None
    return tuple(out)


def build_uri(
    header: StreamHeader, layout: SeiLayout, model_name: str, anchor: str, form: str
) -> str:
    """The gfv_nn_uri gfvc writes: everything needed to rebuild the .gfv header."""
    q = {
        "model": model_name,
        "id": header.model_id,
        "hash": header.model_hash.hex(),
        "size": f"{header.width}x{header.height}",
        "fps": f"{header.fps.numerator}/{header.fps.denominator}",
        "qstep": repr(float(header.qstep)),
        "coder": header.coder_id,
        "kf": header.keyframe_codec_id,
        "kfmt": header.keyframe_format,
        "kqp": header.keyframe_qp,
        "key": int(header.key_feature_sent),
        "seg": header.segment_units,
        "anchor": anchor,
        "form": form,
        "fields": _fields_text(layout.fields),
        "cs": str(layout.coord_scale),
        "co": str(layout.coord_offset),
        "pupils": "" if layout.pupils is None else f"{layout.pupils[1]},{layout.pupils[2]}",
    }
    if header.extension:
        q["ext"] = header.extension.hex()
    return NN_URI_PREFIX + urlencode(q, quote_via=quote, safe=":,/x")


@dataclass
class UriInfo:
    header: StreamHeader
    model_name: str
    anchor: str
    form: str
    fields: tuple[FeatureField, ...]
    coord_scale: Fraction
    coord_offset: Fraction
    pupils: tuple[int, int] | None


def parse_uri(uri: str) -> UriInfo | None:
    """The metadata of a gfvc-written stream, or None for a URI gfvc did not write."""
    if not uri.startswith(NN_URI_PREFIX):
        return None
    q = dict(parse_qsl(uri[len(NN_URI_PREFIX) :], keep_blank_values=True))
    try:
        w, h = (int(v) for v in q["size"].split("x"))
        fields = _parse_fields(q["fields"])
        header = StreamHeader(
            model_id=int(q["id"]),
            model_hash=bytes.fromhex(q["hash"]),
            width=w,
            height=h,
            fps=Fraction(q["fps"]),
            qstep=float(q["qstep"]),
            coder_id=int(q["coder"]),
            keyframe_codec_id=int(q["kf"]),
            keyframe_format=q["kfmt"],
            keyframe_qp=int(q["kqp"]),
            key_feature_sent=q["key"] == "1",
            feature_dim=sum(f.size for f in fields),
            segment_units=int(q["seg"]),
            extension=bytes.fromhex(q.get("ext", "")),
        )
        pupils = tuple(int(v) for v in q["pupils"].split(",")) if q.get("pupils") else None
        info = UriInfo(
            header=header,
            model_name=q["model"],
            anchor=q["anchor"],
            form=q.get("form", "vtm"),
            fields=fields,
            coord_scale=Fraction(q["cs"]),
            coord_offset=Fraction(q["co"]),
            pupils=pupils,  # type: ignore[arg-type]
        )
        # the header must survive its own serialisation (field ranges, formats ...)
        StreamHeader.parse(header.to_bytes())
    except (KeyError, ValueError, ZeroDivisionError, OverflowError, struct.error) as exc:
        raise BitstreamError(f"gfvc NN URI in the base GFV message is invalid ({exc})") from None
    if not 0 < header.feature_dim <= 65535 or any(v < 1 for f in fields for v in f.shape):
        raise BitstreamError("gfvc NN URI in the base GFV message has an invalid field layout")
    if info.anchor not in ("key", "absolute") or info.form not in ("vtm", "hm"):
        raise BitstreamError("gfvc NN URI in the base GFV message has an unknown anchor or form")
    if info.coord_scale <= 0 or (pupils is not None and len(pupils) != 2):
        raise BitstreamError("gfvc NN URI in the base GFV message has invalid coordinate units")
    return info


# ----------------------------------------------------------------------------- .gfv -> integers


@dataclass
class KeyGroup:
    """One key unit of a .gfv file and the integer state of each of its frames."""

    picture: bytes
    side: bytes = b""  # model side information of the key unit
    acc: list[np.ndarray] = field(default_factory=list)  # frame 0 = key frame


def gfv_groups(data: bytes) -> tuple[StreamHeader, list[KeyGroup]]:
    """The .gfv integers (``Decoder.trace``) per key unit, without decoding any picture."""
    from gfvc.features.entropy import decode_ints_eg, feature_coder_by_id

    parsed = parse_stream(data)
    h = parsed.header
    coder = feature_coder_by_id(h.coder_id, h.feature_dim)
    groups: list[KeyGroup] = []
    acc = None
    for unit in parsed.units:
        if unit[0] == KEY:
            picture, feature, side = unpack_key_payload(unit[1:])
            if h.key_feature_sent:
                acc = decode_ints_eg(feature, h.feature_dim, "key-frame feature")
            else:
                if feature:
                    raise BitstreamError("key-frame unit carries an unexpected key feature")
                acc = np.zeros(h.feature_dim, dtype=np.int64)
            groups.append(KeyGroup(picture, side))
        else:
            if acc is None:
                raise BitstreamError("feature unit before any key-frame unit")
            acc = acc + coder.decode(unit[1:])
        groups[-1].acc.append(np.asarray(acc, dtype=np.int64).copy())
    return h, groups


# ----------------------------------------------------------------------------- export


@dataclass
class ExportReport:
    """Where the bits of an exported stream go, against the .gfv it came from."""

    frames: int
    key_pictures: int
    codec: str
    form: str
    anchor: str
    reencoded: bool
    coordinate_precision: int
    matrix_precision: int
    exact: bool
    pupils_in_gfve: bool
    picture_bits: int
    sei_bits: int  # SEI NAL units, start codes included
    sei_payload_bits: int  # GFV + GFVE payloads only
    metadata_bits: int  # the NN tag URI and URI strings (once per key picture)
    native_feature_bits: int  # the .gfv's feature bits (key features included)
    native_overhead_bits: int  # .gfv header, segment tables, CRCs, end marker

    @property
    def sei_bits_per_frame(self) -> float:
        return self.sei_bits / self.frames

    @property
    def sei_bits_per_frame_without_metadata(self) -> float:
        return (self.sei_bits - self.metadata_bits) / self.frames

    @property
    def native_feature_bits_per_frame(self) -> float:
        return self.native_feature_bits / self.frames

    @property
    def native_bits_per_frame(self) -> float:
        """Feature plus container bits of the .gfv, per frame (what the SEI replaces)."""
        return (self.native_feature_bits + self.native_overhead_bits) / self.frames


def _reencode_key(header: StreamHeader, picture: bytes, codec: Codec) -> tuple[bytes, str, int]:
    """Decode a key picture of another format and code it as HEVC (x265) or VVC."""
    from gfvc.keyframe import keyframe_codec, keyframe_codec_class_by_id

    src = keyframe_codec_class_by_id(header.keyframe_codec_id)
    qp = header.keyframe_qp
    rgb = src(qp=qp if src.qp_range else 32, fmt=header.keyframe_format).decode(
        picture, header.width, header.height
    )
    if codec == "hevc":
        if header.keyframe_codec_id == _LOSSLESS_ID:
            kf = keyframe_codec("x265", qp=0, fmt="rgb444", params="lossless=1")
        else:
            kf = keyframe_codec("x265", qp=min(max(qp, 0), 51), fmt=header.keyframe_format)
    else:
        kf = keyframe_codec("vvc", qp=min(max(qp, 0), 63), fmt="yuv420")
    return kf.encode(rgb), kf.fmt, kf.qp


def _model_name(header: StreamHeader, model: MotionModel | None) -> str:
    if model is not None:
        return model.name
    try:
        from gfvc.models import model_class_by_id

        return model_class_by_id(header.model_id).name
    except Exception:
        return {1: "mesh", **_OFFICIAL_FAMILIES}.get(header.model_id, f"model{header.model_id}")


def gfv_to_annexb(
    data: bytes,
    *,
    form: Form = "vtm",
    codec: Codec | None = None,
    pupils: bool = True,
    one_nal_per_frame: bool = False,
    anchor: Literal["key", "absolute"] = "key",
    model: MotionModel | None = None,
) -> tuple[bytes, ExportReport, list[tuple[list[GfvMessage], list[GfveMessage]]]]:
    """The Annex-B stream for the bytes of a .gfv file; also the messages per key picture.

    ``codec``: "hevc" or "vvc" (default: VVC when the key frames are VVC, else HEVC).
    ``pupils``: carry pupils (mesh) in GFVE messages rather than as GFV keypoints.
    ``anchor`` (models whose key feature is re-derived from the key frame): "key" carries
    each frame's offset from that feature, needs no model and is exact; "absolute" adds the
    feature ``model.analyse_key`` gives for the decoded key picture, so the SEI holds the
    model's actual feature values (import then needs the same model).
    """
    from gfvc.codec import stream_report

    h, groups = gfv_groups(data)
    if codec is None:
        codec = "vvc" if h.keyframe_codec_id == KEYFRAME_CODEC_IDS["vvc"] else "hevc"
    if codec not in KEYFRAME_CODEC_IDS:
        raise InputError(f"cannot export to {codec!r}; choose hevc or vvc")
    if anchor not in ("key", "absolute"):
        raise InputError("anchor must be 'key' or 'absolute'")
    if h.key_feature_sent:
        anchor = "key"  # the integers are already absolute
    elif anchor == "absolute" and model is None:
        raise InputError("exporting absolute features needs the model (its key-frame analysis)")
    reencoded = h.keyframe_codec_id != KEYFRAME_CODEC_IDS[codec]
    out_header = h
    if reencoded:
        pics = []
        for g in groups:
            pic, fmt, qp = _reencode_key(h, g.picture, codec)
            pics.append(pic)
        for g, pic in zip(groups, pics, strict=True):
            g.picture = pic
        out_header = _replace_header(
            h, keyframe_codec_id=KEYFRAME_CODEC_IDS[codec], keyframe_format=fmt, keyframe_qp=qp
        )
    name = _model_name(h, model)
    fields = feature_fields(h, model)
    layout = plan_layout(fields, name, h.width, pupils=pupils)
    bases: list[np.ndarray | None] = [None] * len(groups)
    if anchor == "absolute":
        assert model is not None
        from gfvc.keyframe import keyframe_codec_class_by_id

        kf = keyframe_codec_class_by_id(out_header.keyframe_codec_id)(
            qp=out_header.keyframe_qp, fmt=out_header.keyframe_format
        )
        for i, g in enumerate(groups):
            model.reset()
            bases[i] = model.analyse_key(kf.decode(g.picture, h.width, h.height))
    maps = [GridMap.create(layout, h.qstep, b) for b in bases]
    if layout.pupils is not None and not _pupils_fit(maps, groups):
        layout = plan_layout(fields, name, h.width, pupils=False)
        maps = [GridMap.create(layout, h.qstep, b) for b in bases]
    p, q = maps[0].coord_precision, maps[0].matrix_precision
    uri = build_uri(out_header, layout, name, anchor, form)
    nn = NeuralNetworkInfo(mode_idc=1, tag_uri=NN_TAG_URI, uri=uri)
    writer = SeiWriter(form)
    gfv_enc = GfvGridEncoder(0)
    out = bytearray()
    sei_bits = payload_bits = picture_bits = 0
    all_msgs: list[tuple[list[GfvMessage], list[GfveMessage]]] = []
    for g, gm in zip(groups, maps, strict=True):
        out += g.picture
        picture_bits += 8 * len(g.picture)
        frames = [gm.grids(a) for a in g.acc]
        z_max = 1
        if layout.coord_dims == 3:  # the largest |z| in SEI units, rounded up (informative)
            top = max(int(np.abs(c[:, 2]).max()) for c, _, _ in frames if c is not None)
            z_max = max(1, min(65535, -(-top >> p)))
        pupil_enc = GfvePupilGridEncoder(0, 0, p) if layout.pupils is not None else None
        gfv_msgs, gfve_msgs = [], []
        sei_msgs: list[SeiMessage] = []
        nal_msgs: list[list[SeiMessage]] = []
        if g.side:
            sei_msgs.append(SeiMessage(USER_DATA_UNREGISTERED, SIDE_INFO_UUID + g.side))
        for t, (coords, mats, pup) in enumerate(frames):
            m = gfv_enc.message(
                t,
                base=t == 0,
                coordinates=coords,
                precision=p,
                z_max=z_max,
                matrices=mats or None,
                matrix_precision=q,
                nn=nn if t == 0 else None,
            )
            gfv_msgs.append(m)
            frame_msgs = [SeiMessage(PAYLOAD_GFV, writer.gfv(m))]
            if one_nal_per_frame and t == 0 and sei_msgs:
                frame_msgs = sei_msgs + frame_msgs
                sei_msgs = []
            if pupil_enc is not None:
                assert pup is not None
                e = pupil_enc.message(t, base=t == 0, left=pup[0], right=pup[1])
                gfve_msgs.append(e)
                frame_msgs.append(SeiMessage(PAYLOAD_GFVE, writer.gfve(e)))
            payload_bits += sum(8 * len(x.payload) for x in frame_msgs)
            if one_nal_per_frame:
                nal_msgs.append(frame_msgs)
            else:
                sei_msgs += frame_msgs
        if not one_nal_per_frame:
            nal_msgs = [sei_msgs]
        for msgs in nal_msgs:
            nal = sei_nal_unit(msgs, codec)
            sei_bits += 8 * len(nal)
            out += nal
        all_msgs.append((gfv_msgs, gfve_msgs))
    native = stream_report(data)
    meta = 8 * (len(NN_TAG_URI.encode()) + len(uri.encode()) + 2) * len(groups)
    report = ExportReport(
        frames=sum(len(g.acc) for g in groups),
        key_pictures=len(groups),
        codec=codec,
        form=form,
        anchor=anchor,
        reencoded=reencoded,
        coordinate_precision=p,
        matrix_precision=q,
        exact=all(m.exact for m in maps),
        pupils_in_gfve=layout.pupils is not None,
        picture_bits=picture_bits,
        sei_bits=sei_bits,
        sei_payload_bits=payload_bits,
        metadata_bits=meta,
        native_feature_bits=native.feature_bits,
        native_overhead_bits=native.overhead_bits,
    )
    return bytes(out), report, all_msgs


def _pupils_fit(maps: Sequence[GridMap], groups: Sequence[KeyGroup]) -> bool:
    """GFVE pupil deltas are limited to 2^(P+1); check every frame before choosing GFVE."""
    for gm, g in zip(maps, groups, strict=True):
        limit = 1 << (gm.coord_precision + 1)
        prev = None
        for a in g.acc:
            pup = gm.grids(a)[2]
            assert pup is not None
            left, right = pup[0], pup[1]
            if prev is None:
                deltas = [left, right - left]
            else:
                deltas = [left - prev[0], right - prev[1]]
            if max(int(np.abs(d).max()) for d in deltas) > limit:
                return False
            prev = (left, right)
    return True


def _replace_header(h: StreamHeader, **changes) -> StreamHeader:
    from dataclasses import replace

    return replace(h, **changes)


def export_stream(
    gfv_path: str | Path,
    out_path: str | Path,
    form: Form = "vtm",
    cfg_path: str | Path | None = None,
    *,
    codec: Codec | None = None,
    pupils: bool = True,
    one_nal_per_frame: bool = False,
    anchor: Literal["key", "absolute"] = "key",
    model: MotionModel | None = None,
) -> ExportReport:
    """``gfvc export``: a .gfv file -> an HEVC (.265) or VVC (.266) Annex-B stream.

    The codec follows ``codec``, else the output suffix (.266/.vvc: VVC), else HEVC.
    ``cfg_path`` also writes the equivalent VTM/HM configuration (see ``vtm_cfg``).
    """
    from gfvc.codec import read_stream

    data = read_stream(gfv_path)
    if codec is None:
        codec = "vvc" if Path(out_path).suffix.lower() in (".266", ".vvc", ".h266") else "hevc"
    stream, report, msgs = gfv_to_annexb(
        data,
        form=form,
        codec=codec,
        pupils=pupils,
        one_nal_per_frame=one_nal_per_frame,
        anchor=anchor,
        model=model,
    )
    write_atomic(out_path, stream)
    if cfg_path is not None:
        gfv_msgs, gfve_msgs = msgs[0]
        write_atomic(
            cfg_path, vtm_cfg(gfv_msgs, gfve_msgs, form=form, extra_pictures=len(msgs) - 1).encode()
        )
    return report


# ----------------------------------------------------------------------------- import


@dataclass
class PictureGroup:
    """One key picture of an Annex-B stream and the GFV/GFVE values that follow it."""

    picture: bytes
    side: bytes = b""  # gfvc key-unit side information (user_data_unregistered)
    gfv: list[GfvValues] = field(default_factory=list)
    gfve: dict[int, GfveValues] = field(default_factory=dict)  # by gfve_gfv_cnt


@dataclass
class ImportReport:
    frames: int
    key_pictures: int
    codec: str
    form: str
    foreign: bool  # written by something other than gfvc (no gfvc NN URI)
    ignored_messages: int  # reserved-id messages, ignored as the semantics require
    dropped_nal_units: int  # NAL units after the last GFV group (extra pictures, EOS)


def read_annexb(
    data: bytes, form: Form = "vtm", hint: str | None = None
) -> tuple[Codec, list[PictureGroup], int, int]:
    """Split an Annex-B stream into key pictures and their parsed GFV/GFVE messages.

    Returns (codec, groups, ignored reserved-id messages, dropped trailing NAL units).
    Other SEI messages sharing a NAL unit with GFV messages stay with the picture.
    """
    codec = detect_codec(data, hint)
    nals = split_nal_units(data, codec)
    reader = SeiReader(form)
    groups: list[PictureGroup] = []
    pic = bytearray()
    current: PictureGroup | None = None
    ignored = 0
    pending_nals = 0
    for nal in nals:
        raw = nal.raw(data)
        msgs: list[SeiMessage] = []
        if nal.is_suffix_sei or nal.is_prefix_sei:
            msgs = parse_sei_rbsp(nal.rbsp(data), f"SEI NAL unit at byte {nal.start}")
        ours = [m for m in msgs if _is_ours(m)]
        if not ours and current is not None and nal.is_suffix_sei:
            current.picture += raw  # another suffix SEI of the same access unit
            continue
        if not ours:
            if current is not None:  # the next access unit begins
                groups.append(current)
                current = None
                pic = bytearray()
                pending_nals = 0
            pic += raw
            pending_nals += 1
            continue
        if nal.is_prefix_sei:
            raise BitstreamError(
                f"GFV/GFVE messages in a prefix SEI NAL unit at byte {nal.start}; they are suffix SEI"
            )
        if current is None:
            if not pic:
                raise BitstreamError("GFV SEI before any coded picture")
            current = PictureGroup(bytes(pic))
        others = [m for m in msgs if not _is_ours(m)]
        if others:  # keep the other messages with the picture
            current.picture += sei_nal_unit(
                others, codec, suffix=True, layer_id=nal.layer_id, temporal_id=nal.temporal_id
            )
        for m in ours:
            if m.payload_type == USER_DATA_UNREGISTERED:
                if current.gfv:
                    raise BitstreamError(
                        "gfvc key side information after the picture's GFV messages"
                    )
                current.side += m.payload[16:]
                continue
            try:
                if m.payload_type == PAYLOAD_GFV:
                    current.gfv.append(reader.gfv(m.payload))
                else:
                    v = reader.gfve(m.payload)
                    current.gfve[v.message.gfv_cnt] = v
            except ReservedIdError:
                ignored += 1
    if current is not None:
        groups.append(current)
        pending_nals = 0
    if not groups:
        raise BitstreamError("no GFV SEI messages in this stream: nothing to animate")
    return codec, groups, ignored, pending_nals


def _is_ours(m: SeiMessage) -> bool:
    if m.payload_type == USER_DATA_UNREGISTERED:
        return m.payload[:16] == SIDE_INFO_UUID
    return m.payload_type in (PAYLOAD_GFV, PAYLOAD_GFVE)


def annexb_to_gfv(
    data: bytes,
    *,
    form: Form | None = None,
    hint: str | None = None,
    model: MotionModel | str | None = None,
    qstep: float | None = None,
    coder: str = "range",
    fps: Fraction | None = None,
) -> tuple[bytes, ImportReport]:
    """The bytes of a .gfv file for an Annex-B stream with GFV SEI messages.

    Streams gfvc wrote describe themselves (NN URI). For other streams (VTM/HM output)
    give ``model``; ``qstep`` defaults to the one that keeps every SEI value exact.
    ``form`` None tries VTM then HM syntax.
    """
    if not is_annexb(data):
        raise InputError("not an Annex-B HEVC/VVC stream")
    f, (codec, groups, ignored, dropped) = _read_any_form(data, form, hint)
    info = _stream_uri(groups)
    if info is not None:
        header, layout, grid_for = _own_stream(info, groups, model)
        foreign = False
    else:
        header, layout, grid_for = _foreign_stream(groups, codec, model, qstep, coder, fps)
        foreign = True
    packer = SegmentPacker(header.segment_units)
    from gfvc.features.entropy import encode_ints_eg, feature_coder_by_id

    fcoder = feature_coder_by_id(header.coder_id, header.feature_dim)
    chunks = [header.to_bytes()]
    frames = 0
    for gi, g in enumerate(groups):
        if not g.gfv:
            raise BitstreamError(f"key picture {gi} is followed by no GFV messages")
        if not g.gfv[0].message.base_picture:
            raise BitstreamError(
                f"the first GFV message after key picture {gi} is not a base-picture message"
            )
        try:
            gm = grid_for(gi, g)
        except (IndexError, ValueError) as exc:
            if isinstance(exc, GfvcError):
                raise
            raise BitstreamError(
                f"the SEI messages do not fit the feature layout ({exc})"
            ) from None
        accs = _group_accs(g, gm, strict=not foreign and gm.exact)
        feature = encode_ints_eg(accs[0]) if header.key_feature_sent else b""
        if not header.key_feature_sent and not foreign and np.any(accs[0]):
            raise BitstreamError("the base message of a key-relative stream must carry zeros")
        chunks.append(packer.add(bytes([KEY]) + pack_key_payload(g.picture, feature, g.side)))
        for prev, cur in zip(accs, accs[1:], strict=False):
            chunks.append(packer.add(bytes([FEATURE]) + fcoder.encode(cur - prev)))
        frames += len(accs)
    if frames < 2:
        raise BitstreamError("the stream carries a single frame; a .gfv needs at least 2")
    chunks.append(packer.finish())
    report = ImportReport(
        frames=frames,
        key_pictures=len(groups),
        codec=codec,
        form=f,
        foreign=foreign,
        ignored_messages=ignored,
        dropped_nal_units=dropped,
    )
    return b"".join(chunks), report


def _read_any_form(data: bytes, form: Form | None, hint: str | None):
    """Parse with ``form``; or VTM, then HM when VTM fails or the gfvc URI says HM."""
    if form is not None:
        return form, read_annexb(data, form, hint)
    try:
        res = read_annexb(data, "vtm", hint)
    except BitstreamError as exc:
        try:
            return "hm", read_annexb(data, "hm", hint)
        except BitstreamError:
            raise exc from None
    info = _stream_uri(res[1])
    if info is not None and info.form == "hm":
        return "hm", read_annexb(data, "hm", hint)
    return "vtm", res


def _stream_uri(groups: Sequence[PictureGroup]) -> UriInfo | None:
    g = groups[0]
    if not g.gfv or not g.gfv[0].message.base_picture:
        raise BitstreamError(
            "the first GFV message of a picture must be a base-picture message (gfv_cnt 0)"
        )
    nn = g.gfv[0].message.nn
    return parse_uri(nn.uri) if nn is not None and nn.mode_idc == 1 else None


def _group_accs(g: PictureGroup, gm: GridMap, strict: bool) -> list[np.ndarray]:
    accs = []
    pupils = None
    for t, v in enumerate(g.gfv):
        if v.message.cnt != t:
            raise BitstreamError(
                f"GFV messages after a picture must have gfv_cnt 0, 1, 2, ...; found {v.message.cnt} at position {t}"
            )
        if gm.layout.pupils is not None:
            e = g.gfve.get(t)
            if e is not None and e.pupils is not None:
                pupils = e.pupils
            elif t == 0:
                raise BitstreamError("no GFVE pupil coordinates for the base picture (gfv_cnt 0)")
            # a frame without a GFVE message keeps the previous pupils
        accs.append(gm.acc_from_values(v.coordinates, v.matrices, pupils, strict))
    return accs


def _own_stream(info: UriInfo, groups: Sequence[PictureGroup], model: MotionModel | str | None):
    """Header and layout of a gfvc-written stream, from its NN URI."""
    h = info.header
    try:
        layout = plan_layout(info.fields, info.model_name, h.width, pupils=info.pupils is not None)
    except InputError as exc:
        raise BitstreamError(f"gfvc NN URI describes an impossible layout ({exc})") from None
    layout = _replace_layout(layout, coord_scale=info.coord_scale, coord_offset=info.coord_offset)
    if (layout.pupils is None) != (info.pupils is None) or (
        layout.pupils is not None and (layout.pupils[1], layout.pupils[2]) != info.pupils
    ):
        raise BitstreamError("the pupil rows in the gfvc NN URI do not match the model's layout")
    absolute = info.anchor == "absolute"
    mdl = None
    if absolute:
        mdl = _resolve_model(model, h.width)
        if mdl is None:
            raise InputError(
                "this stream carries absolute features of a model that re-derives its key "
                "feature; pass the same model to import it"
            )

    def grid_for(gi: int, g: PictureGroup) -> GridMap:
        p, q = _precisions(g)
        base = None
        if absolute:
            assert mdl is not None
            mdl.reset()
            base = mdl.analyse_key(_decode_key(h, g.picture))
        return GridMap.create(layout, h.qstep, base, p, q)

    return h, layout, grid_for


def _precisions(g: PictureGroup) -> tuple[int | None, int | None]:
    m = g.gfv[0].message
    p = m.coordinates.precision if m.coordinates is not None else None
    q = m.matrices.precision if m.matrices is not None else None
    return p, q


def _replace_layout(layout: SeiLayout, **changes) -> SeiLayout:
    from dataclasses import replace

    return replace(layout, **changes)


def _resolve_model(model: MotionModel | str | None, size: int) -> MotionModel | None:
    if model is None or isinstance(model, MotionModel):
        return model
    from gfvc.models import model_class

    return model_class(model).create(size=size)


def _decode_key(h: StreamHeader, picture: bytes) -> np.ndarray:
    from gfvc.keyframe import keyframe_codec_class_by_id

    cls = keyframe_codec_class_by_id(h.keyframe_codec_id)
    return cls(qp=h.keyframe_qp, fmt=h.keyframe_format).decode(picture, h.width, h.height)


def _foreign_stream(
    groups: Sequence[PictureGroup],
    codec: Codec,
    model: MotionModel | str | None,
    qstep: float | None,
    coder: str,
    fps: Fraction | None,
):
    """Header and layout for a stream another encoder wrote (VTM/HM): the model is given."""
    from gfvc.features.entropy import feature_coder
    from gfvc.keyframe._av import decode_picture

    if model is None:
        raise InputError(
            "this stream was not written by gfvc (no gfvc NN URI): pass the model its "
            "features belong to (e.g. --model mesh)"
        )
    frame = decode_picture(codec, groups[0].picture)
    size = frame.width
    if frame.width != frame.height:
        raise InputError(
            f"key picture is {frame.width}x{frame.height}; gfvc models need square frames"
        )
    mdl = _resolve_model(model, size)
    assert mdl is not None
    fmt = "rgb444" if frame.format.name in ("gbrp", "yuv444p") else "yuv420"
    first = groups[0].gfv[0].message
    pupils_present = 0 in groups[0].gfve and groups[0].gfve[0].pupils is not None
    layout = plan_layout(mdl.fields, mdl.name, size, pupils=pupils_present)
    if (first.coordinates is None) != (layout.coord_field is None):
        raise BitstreamError(f"the stream's keypoints do not fit the {mdl.name!r} model's features")
    p, q = _precisions(groups[0])
    if qstep is None:  # the finest grid any SEI value needs, so nothing is rounded
        cands = []
        if p is not None and layout.coord_field is not None:
            cands.append(layout.coord_scale * (1 << p))
        if q is not None and layout.matrices:
            cands.append(Fraction(1 << q))
        qstep = float(max(cands)) if cands else float(mdl.default_qstep)
    header = StreamHeader(
        model_id=mdl.model_id,
        model_hash=mdl.config_hash(),
        width=size,
        height=size,
        fps=Fraction(fps or 25),
        qstep=float(np.float32(qstep)),
        coder_id=feature_coder(coder, mdl.dim).coder_id,
        keyframe_codec_id=KEYFRAME_CODEC_IDS[codec],
        keyframe_format=fmt,
        keyframe_qp=32,
        key_feature_sent=mdl.send_key_feature,
        feature_dim=mdl.dim,
    )

    def grid_for(gi: int, g: PictureGroup) -> GridMap:
        gp, gq = _precisions(g)
        base = None
        if not mdl.send_key_feature:
            mdl.reset()
            base = mdl.analyse_key(_decode_key(header, g.picture))
        return GridMap.create(layout, header.qstep, base, gp, gq)

    return header, layout, grid_for


def import_stream(
    path: str | Path,
    out_gfv_path: str | Path,
    *,
    model: MotionModel | str | None = None,
    qstep: float | None = None,
    coder: str = "range",
    fps: Fraction | None = None,
    form: Form | None = None,
) -> ImportReport:
    """``gfvc import``: an HEVC/VVC Annex-B stream with GFV SEI -> a .gfv file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p} does not exist or is not a file")
    data = p.read_bytes()
    gfv, report = annexb_to_gfv(
        data, form=form, hint=p.suffix, model=model, qstep=qstep, coder=coder, fps=fps
    )
    write_atomic(out_gfv_path, gfv)
    return report


def read_any(path: str | Path, **import_options) -> bytes:
    """The bytes of a .gfv file for ``path``: the file itself, or an imported .265/.266.

    For ``gfvc decode`` reading either kind of input.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p} does not exist or is not a file")
    data = p.read_bytes()
    if is_annexb(data):
        return annexb_to_gfv(data, hint=p.suffix, **import_options)[0]
    return data


# ----------------------------------------------------------------------------- VTM/HM configuration


def _fmt(x: Fraction) -> str:
    """A double that parses back to exactly ``x`` (x is a dyadic rational)."""
    return repr(float(x))


def vtm_cfg(
    gfv_messages: Sequence[GfvMessage],
    gfve_messages: Sequence[GfveMessage] = (),
    *,
    form: Form = "vtm",
    extra_pictures: int = 0,
) -> str:
    """The ``SEIGenerativeFaceVideo*`` options that make VTM (or HM) write these messages.

    The reference encoder builds all messages into the first picture's access unit and
    quantises coordinates with (int)(x * 2^P + 0.5), which truncates toward zero below 0;
    a coordinate whose quantised quantity (value, or difference from its reference) is
    negative is therefore written half a grid step lower, so that the encoder lands on
    exactly the integer gfvc codes. Matrix elements and pupils are written as they are.
    """
    if not gfv_messages:
        raise ValueError("no GFV messages to describe")
    writer, reader = SeiWriter(form), SeiReader(form)
    values = [reader.gfv(writer.gfv(m)) for m in gfv_messages]
    gfve_values = [reader.gfve(writer.gfve(m)) for m in gfve_messages]
    base = gfv_messages[0]
    n = len(gfv_messages)
    lines = [
        "# Generative face video SEI (payloadType 223) options written by gfvc.",
        f"# Syntax form: {form.upper()}. Values reproduce gfvc's coded integers bit for bit.",
    ]
    if extra_pictures:
        lines.append(
            f"# The reference encoder carries one picture's messages; {extra_pictures} later "
            "key picture(s) of the stream are not described here."
        )

    def opt(name: str, value: object) -> None:
        if isinstance(value, list | tuple):
            value = " ".join(str(v) for v in value)
        lines.append(f"{'SEIGenerativeFaceVideo' + name + ':':<57} {value}".rstrip())

    nn = base.nn
    opt("Enabled", 1)
    opt("Number", n)
    opt("BasePicFlag", int(base.base_picture))
    opt("NNPresentFlag", int(nn is not None))
    if nn is not None:
        opt("NNModeIdc", nn.mode_idc)
        if nn.mode_idc == 1:
            opt("NNTagURI", nn.tag_uri)
            opt("NNURI", nn.uri)
    ck = base.chroma_key
    opt("ChromaKeyInfoPresentFlag", int(ck is not None))
    opt("Id", [m.gfv_id for m in gfv_messages])
    opt("Cnt", [m.cnt for m in gfv_messages])
    opt(
        "DrivePicFusionFlag" if form == "hm" else "FusionPicFlag",
        [int(m.fusion) for m in gfv_messages],
    )
    opt("LowConfidenceFaceParameterFlag", [int(m.low_confidence) for m in gfv_messages])
    opt("CoordinatePresentFlag", [int(m.coordinates is not None) for m in gfv_messages])
    coords = [
        (m, v) for m, v in zip(gfv_messages, values, strict=True) if m.coordinates is not None
    ]
    if coords:
        opt(
            "CoordinatePredFlag",
            [int(m.coordinates.pred) if m.coordinates else 0 for m in gfv_messages],
        )
        opt(
            "CoordinateQuantizationFactor",
            [m.coordinates.precision if m.coordinates else 0 for m in gfv_messages],
        )
        opt(
            "3DCoordinateFlag",
            [int(m.coordinates.z_present) if m.coordinates else 0 for m in gfv_messages],
        )
        opt(
            "CoordinatePointNum",
            [m.coordinates.num_kps if m.coordinates else 0 for m in gfv_messages],
        )
        opt(
            "ZCoordinateMaxValue",
            [m.coordinates.z_max if m.coordinates else 0 for m in gfv_messages],
        )
        axes: list[list[str]] = [[], [], []]
        for m, v in coords:
            c = m.coordinates
            assert c is not None and v.coordinates is not None
            step = Fraction(1, 1 << c.precision)
            for kp_code, kp_val in zip(c.values, v.coordinates, strict=True):
                for a, (code, val) in enumerate(zip(kp_code, kp_val, strict=True)):
                    # code is the quantised quantity (value or delta); below zero the
                    # encoder's truncation needs the value half a step lower
                    axes[a].append(_fmt(val - step / 2 if code < 0 else val))
        opt("XCoordinate", axes[0])
        opt("YCoordinate", axes[1])
        if axes[2]:
            opt("ZCoordinate", axes[2])
    opt("MatrixPresentFlag", [int(m.matrices is not None) for m in gfv_messages])
    if any(m.matrices is not None for m in gfv_messages):
        per_type: dict[str, list[int]] = {k: [] for k in (
            "MatrixTypeIdx", "Matrix3DSpaceFlag", "NumMatrices", "MatrixWidth", "MatrixHeight",
            "NumMatricestoNumKpsFlag", "NumMatricesInfo")}  # fmt: skip
        elems: list[str] = []
        for m, v in zip(gfv_messages, values, strict=True):
            specs = m.matrices.specs if m.matrices is not None else []
            nk = m.coordinates.num_kps if m.coordinates is not None else 0
            for s in specs or [None]:  # type: ignore[list-item]
                if s is None:
                    for k in per_type:
                        per_type[k].append(0)
                    continue
                per_type["MatrixTypeIdx"].append(s.type_idx)
                per_type["Matrix3DSpaceFlag"].append(int(s.three_d))
                per_type["NumMatrices"].append(s.num_matrices)
                per_type["MatrixWidth"].append(s.width)
                per_type["MatrixHeight"].append(s.height)
                eq = int(s.type_idx in (0, 1) and s.num_matrices == nk)
                per_type["NumMatricestoNumKpsFlag"].append(eq)
                info = (
                    0
                    if eq or s.type_idx not in (0, 1)
                    else (s.num_matrices - 1 if s.num_matrices < nk else s.num_matrices - 2)
                )
                per_type["NumMatricesInfo"].append(info)
            if v.matrices is not None:
                elems += [_fmt(x) for vals in v.matrices for x in vals]
        opt("MatrixPredFlag", [int(m.matrices.pred) if m.matrices else 0 for m in gfv_messages])
        opt(
            "MatrixElementPrecisionFactor",
            [m.matrices.precision if m.matrices else 0 for m in gfv_messages],
        )
        opt("NumMatrixType", [len(m.matrices.specs) if m.matrices else 0 for m in gfv_messages])
        for k, vals in per_type.items():
            opt(k, vals)
        opt("MatrixElement", elems)
    if gfve_messages:
        lines.append("")
        lines.append("# Generative face video enhancement SEI (payloadType 224).")

        def eopt(name: str, value: object) -> None:
            if isinstance(value, list | tuple):
                value = " ".join(str(v) for v in value)
            lines.append(f"{'SEIGenerativeFaceVideoEnhancement' + name + ':':<57} {value}".rstrip())

        eb = gfve_messages[0]
        eopt("Enabled", 1)
        eopt("Number", len(gfve_messages))
        eopt("BasePicFlag", int(eb.base_picture))
        eopt("NNPresentFlag", int(eb.nn is not None))
        eopt("Id", [m.gfve_id for m in gfve_messages])
        eopt("GFVId", [m.gfv_id for m in gfve_messages])
        eopt("GFVCnt", [m.gfv_cnt for m in gfve_messages])
        eopt("MatrixPresentFlag", [int(m.matrices is not None) for m in gfve_messages])
        eopt("MatrixPredFlag", [int(m.matrices.pred) if m.matrices else 0 for m in gfve_messages])
        eopt(
            "MatrixElementPrecisionFactor",
            [m.matrices.precision if m.matrices else 0 for m in gfve_messages],
        )
        eopt("NumMatrices", [len(m.matrices.sizes) if m.matrices else 0 for m in gfve_messages])
        eopt("MatrixWidth", [w for m in gfve_messages if m.matrices for _, w in m.matrices.sizes])
        eopt("MatrixHeight", [h for m in gfve_messages if m.matrices for h, _ in m.matrices.sizes])
        eopt(
            "MatrixElement",
            [_fmt(x) for v in gfve_values if v.matrices for vals in v.matrices for x in vals],
        )
        eopt("PupilPresentIdx", [m.pupils.present_idx for m in gfve_messages])
        eopt("PupilCoordinatePrecisionFactor", [m.pupils.precision for m in gfve_messages])
        pts = [v.pupils for v in gfve_values]
        zero = (Fraction(0), Fraction(0))
        eopt("PupilLeftEyeCoordinateX", [_fmt((p or (zero, zero))[0][0]) for p in pts])
        eopt("PupilLeftEyeCoordinateY", [_fmt((p or (zero, zero))[0][1]) for p in pts])
        eopt("PupilRightEyeCoordinateX", [_fmt((p or (zero, zero))[1][0]) for p in pts])
        eopt("PupilRightEyeCoordinateY", [_fmt((p or (zero, zero))[1][1]) for p in pts])
    return "\n".join(lines) + "\n"


__all__ = [
    "ExportReport",
    "GridMap",
    "ImportReport",
    "MatrixSlot",
    "PictureGroup",
    "SeiLayout",
    "annexb_to_gfv",
    "export_stream",
    "feature_fields",
    "gfv_groups",
    "gfv_to_annexb",
    "import_stream",
    "is_annexb",
    "parse_uri",
    "plan_layout",
    "read_annexb",
    "read_any",
    "vtm_cfg",
]
