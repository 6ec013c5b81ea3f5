"""Generative face video SEI messages: GFV (payloadType 223) and GFVE (224), bit-exact.

The syntax is the one VTM 24 and HM 18 implement (``shared/research/gfv_sei_syntax.md``;
spec summary in ``docs/sei.md``). Layers, each usable alone::

    GfvMessage / GfveMessage        the syntax elements as coded (integers, flags, strings)
      SeiWriter.gfv / .gfve  ->  payload bytes       (stateful: a predicted message inherits
      SeiReader.gfv / .gfve  <-  payload bytes        precision and sizes from the last base one)
    SeiReader also reconstructs the values with the reader formulas, exactly (Fractions).
    GfvGridEncoder / GfvePupilGridEncoder   integers already on the 2^-P / 2^-Q grid ->
                                            messages (exact; picks the cheaper prediction)
    ReferenceGfvEncoder / ReferenceGfveEncoder   floats -> messages the way the reference
                                            encoder quantises them (C truncation, clip)

The two syntax forms differ only in GFV: ``form="vtm"`` (default, VTM 24) has the chroma-key
purpose and a single threshold flag, and codes the fusion flag only when ``!base && cnt == 0``;
``form="hm"`` (HM 18, JM) codes two independent thresholds and the fusion flag in every
non-base message.

Everything that parses untrusted bytes raises ``BitstreamError`` with the element name; loops
are bounded by counts checked against the bits left, so hostile payloads cannot hang.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import numpy as np

from gfvc.bits import BitReader, BitWriter
from gfvc.errors import BitstreamError

PAYLOAD_GFV = 223
PAYLOAD_GFVE = 224
Form = Literal["vtm", "hm"]
FORMS: tuple[str, ...] = ("vtm", "hm")

UE_MAX = (1 << 32) - 2  # every ue(v) element is a uint32 in the reference software
MAX_PRECISION = 32  # P and Q are coded minus 1 in 0..31
MAX_DIM_MINUS1 = 1023  # num_matrices_info, num_matrices_minus1, width/height_minus1
MAX_Z_MAX = (1 << 16) - 1
CHROMA_KEY_DEFAULT_VALUES = (50, 220, 100)
CHROMA_KEY_DEFAULT_THRESHOLDS = (48, 75)

#: Matrix types (gfv_matrix_type_idx). 8..31 are application defined, 32..63 reserved.
MATRIX_TYPES: dict[int, str] = {
    0: "affine (Jacobian)",
    1: "covariance",
    2: "mouth",
    3: "eye open/close",
    4: "head rotation",
    5: "head translation",
    6: "head location",
    7: "compact feature",
}
APPLICATION_MATRIX_TYPE = 8


class ReservedIdError(BitstreamError):
    """A gfv_id / gfve_id in a reserved range: the message must be ignored, not used."""


def is_reserved_id(v: int) -> bool:
    """256..511 and 2^31..2^32-2 are reserved for future use by ITU-T | ISO/IEC."""
    return 256 <= v <= 511 or v >= 1 << 31


def ue_bits(v: int) -> int:
    """Length of ue(v) in bits."""
    return 2 * (v + 1).bit_length() - 1


def _check_form(form: str) -> Form:
    if form not in FORMS:
        raise ValueError(f"unknown SEI syntax form {form!r}; choose 'vtm' or 'hm'")
    return form  # type: ignore[return-value]


# ----------------------------------------------------------------------------- syntax objects


@dataclass
class NeuralNetworkInfo:
    """gfv_nn_* / gfve_nn_*: which network to run (mode 1: URIs) or the network itself
    (mode 0: NNR bytes up to the end of the payload)."""

    mode_idc: int = 1
    tag_uri: str = ""
    uri: str = ""
    payload: bytes = b""


@dataclass
class ChromaKey:
    """gfv_chroma_key_*. ``None`` entries are not coded (the reader then uses its defaults).

    VTM form: both thresholds or neither (upper > lower, coded as a delta); HM form: each
    threshold on its own, as ue(v).
    """

    purpose_idc: int = 0  # VTM only: 0 unspecified, 1 background, 2 face recognition
    values: tuple[int | None, int | None, int | None] = (None, None, None)
    thresholds: tuple[int | None, int | None] = (None, None)


@dataclass
class Coordinates:
    """The keypoint block of one GFV message, as coded.

    ``values[i]`` holds keypoint i's signed integers (x, y[, z]) in units of 2^-P: the
    coordinates themselves, or with ``pred`` their differences from the reference (3d of
    the syntax notes). ``precision``, ``num_kps``, ``z_present`` and ``z_max`` are coded
    in base or unpredicted messages and inherited otherwise; the reader fills them in
    either way.
    """

    pred: bool
    precision: int
    values: list[tuple[int, ...]]
    z_present: bool = False
    z_max: int = 1

    @property
    def num_kps(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class MatrixSpec:
    """One matrix type of a GFV message: its index, how many matrices and their size."""

    type_idx: int
    num_matrices: int
    height: int
    width: int
    three_d: bool = False  # types 4..6: gfv_matrix_3d_space_flag (or z_present)

    @property
    def count(self) -> int:
        return self.num_matrices * self.height * self.width


Element = tuple[int, int, bool]  # (integer part, fractional part x 2^Q, negative)


@dataclass
class Matrices:
    """The matrix block of one GFV message, as coded.

    ``elements[i]`` lists type i's elements in syntax order (matrix j, row k, column m) as
    (int, dec, negative); with ``pred`` they are differences (dec coded ue(v), so it may
    reach 2^Q).
    """

    pred: bool
    precision: int
    specs: list[MatrixSpec]
    elements: list[list[Element]]


@dataclass
class GfvMessage:
    """One generative face video SEI message (payloadType 223)."""

    gfv_id: int = 0
    cnt: int = 0
    base_picture: bool = False
    nn: NeuralNetworkInfo | None = None  # base only
    chroma_key: ChromaKey | None = None  # base only
    fusion: bool = False  # gfv_fusion_pic_flag (VTM) / gfv_drive_picture_fusion_flag (HM)
    low_confidence: bool = False
    coordinates: Coordinates | None = None
    matrices: Matrices | None = None


@dataclass
class GfveMatrices:
    """The enhancement matrices of one GFVE message (sizes as (height, width))."""

    pred: bool
    precision: int
    sizes: list[tuple[int, int]]
    elements: list[list[Element]]


@dataclass
class Pupils:
    """gfve_pupil_*: ``present_idx`` 0 none, 1 left, 2 right, 3 both; deltas in 2^-P units."""

    present_idx: int = 0
    precision: int = 1
    left: tuple[int, int] | None = None
    right: tuple[int, int] | None = None


@dataclass
class GfveMessage:
    """One GFV enhancement SEI message (payloadType 224; GEFV in HM)."""

    gfve_id: int = 0
    gfv_id: int = 0
    gfv_cnt: int = 0
    base_picture: bool = False
    nn: NeuralNetworkInfo | None = None
    matrices: GfveMatrices | None = None
    pupils: Pupils = field(default_factory=Pupils)


# ----------------------------------------------------------------------------- shared state


@dataclass
class _Inherited:
    """What predicted messages take from the last base message (reader and writer alike)."""

    coord: tuple[int, int, bool, int] | None = None  # P, NumKps, z_present, z_max
    matrix: tuple[int, tuple[MatrixSpec, ...]] | None = None  # Q, specs
    gfv_nn_inband: bool = False
    gfve_matrix: tuple[int, tuple[tuple[int, int], ...]] | None = None
    pupil_precision: int | None = None  # set once a base GFVE carried pupils


def matrix_size(type_idx: int, three_d: bool) -> tuple[int, int] | None:
    """(height, width) fixed by the type, or None when the size is coded."""
    s = 2 + int(three_d)
    if type_idx in (0, 1, 4):
        return s, s
    if type_idx in (5, 6):
        return s, 1
    return None


def _num_matrices_info(n: int, num_kps: int) -> int:
    """Inverse of NumMatrices = info + 1 (info < NumKps - 1) or info + 2 (NumKps skipped)."""
    return n - 1 if n < num_kps else n - 2


# ----------------------------------------------------------------------------- writer


def _w_signed(w: BitWriter, v: int) -> None:
    w.ue(abs(v))
    if v:
        w.u(int(v < 0), 1)


def _w_element(w: BitWriter, e: Element, q: int, pred: bool) -> None:
    i, d, neg = e
    if i < 0 or d < 0 or i > UE_MAX:
        raise ValueError(f"matrix element {e} out of range")
    w.ue(i)
    if pred:
        w.ue(d)
    else:
        if d >> q:
            raise ValueError(f"matrix element fraction {d} does not fit in u({q})")
        w.u(d, q)
    if i or d:
        w.u(int(neg), 1)


def _w_string(w: BitWriter, s: str) -> None:
    raw = s.encode("utf-8")
    if b"\x00" in raw:
        raise ValueError("st(v) strings cannot contain NUL")
    for b in raw + b"\x00":
        w.u(b, 8)


def _w_nn(w: BitWriter, nn: NeuralNetworkInfo | None) -> None:
    w.u(int(nn is not None), 1)
    if nn is None:
        return
    if nn.mode_idc not in (0, 1):
        raise ValueError("nn_mode_idc must be 0 (in-band NNR) or 1 (URI)")
    w.ue(nn.mode_idc)
    if nn.mode_idc == 1:
        w.align()
        _w_string(w, nn.tag_uri)
        _w_string(w, nn.uri)


def _w_nn_payload(w: BitWriter, payload: bytes) -> None:
    w.align()
    for b in payload:
        w.u(b, 8)


def _finish_payload(w: BitWriter) -> bytes:
    """sei_payload() trailing bits: when not byte aligned, a 1 then zeros."""
    if len(w) % 8:
        w.u(1, 1)
        w.align()
    return w.getvalue()


class SeiWriter:
    """Writes GFV / GFVE payloads (the bytes of one sei_message's payload).

    Stateful like the reference writer: a predicted message inherits precision and sizes
    from the last base message written through the same writer, and is checked against them.
    """

    def __init__(self, form: Form = "vtm") -> None:
        self.form = _check_form(form)
        self._inh = _Inherited()

    # -- GFV
    def gfv(self, m: GfvMessage) -> bytes:
        w = BitWriter()
        self.write_gfv(w, m)
        return _finish_payload(w)

    def write_gfv(self, w: BitWriter, m: GfvMessage) -> None:
        """Append the GFV syntax of ``m`` to ``w`` (no trailing bits)."""
        _check_id("gfv_id", m.gfv_id)
        if not 0 <= m.cnt <= UE_MAX:
            raise ValueError("gfv_cnt out of range")
        base = bool(m.base_picture) and m.cnt == 0
        if m.base_picture and m.cnt:
            raise ValueError("gfv_base_picture_flag can only be set when gfv_cnt == 0")
        w.ue(m.gfv_id)
        w.ue(m.cnt)
        if m.cnt == 0:
            w.u(int(base), 1)
        if base:
            _w_nn(w, m.nn)
            self._w_chroma_key(w, m.chroma_key)
        elif m.nn is not None or m.chroma_key is not None:
            raise ValueError("NN and chroma-key information only go in base-picture messages")
        if not base and (self.form == "hm" or m.cnt == 0):
            w.u(int(m.fusion), 1)
        elif m.fusion:
            raise ValueError(
                "the VTM form codes the fusion flag only in non-base messages with gfv_cnt == 0"
            )
        w.u(int(m.low_confidence), 1)
        if m.coordinates is None and m.matrices is None:
            raise ValueError("a GFV message needs coordinates or matrices (or both)")
        coord = m.coordinates
        w.u(int(coord is not None), 1)
        z = False
        nkps = 0
        if coord is not None:
            z, nkps = self._w_coordinates(w, coord, base)
        w.u(int(m.matrices is not None), 1)
        if m.matrices is not None:
            self._w_matrices(w, m.matrices, base, coord is not None, z, nkps)
        if base:
            self._inh.gfv_nn_inband = m.nn is not None and m.nn.mode_idc == 0
            if m.nn is not None and m.nn.mode_idc == 0:
                _w_nn_payload(w, m.nn.payload)

    def _w_chroma_key(self, w: BitWriter, ck: ChromaKey | None) -> None:
        w.u(int(ck is not None), 1)
        if ck is None:
            return
        if self.form == "vtm":
            if not 0 <= ck.purpose_idc <= 2:
                raise ValueError("gfv_chroma_key_purpose_idc must be 0..2")
            w.ue(ck.purpose_idc)
        for v in ck.values:
            w.u(int(v is not None), 1)
            if v is not None:
                w.u(v, 8)
        lo, hi = ck.thresholds
        if self.form == "vtm":
            if (lo is None) != (hi is None):
                raise ValueError("the VTM form codes both chroma-key thresholds or neither")
            w.u(int(lo is not None), 1)
            if lo is not None and hi is not None:
                if not (0 <= lo <= 255 and 0 <= hi - lo - 1 <= 255):
                    raise ValueError("chroma-key thresholds need 0 <= lower < upper <= lower + 256")
                w.u(lo, 8)
                w.ue(hi - lo - 1)
        else:
            for t in (lo, hi):
                w.u(int(t is not None), 1)
                if t is not None:
                    w.ue(t)

    def _w_coordinates(self, w: BitWriter, c: Coordinates, base: bool) -> tuple[bool, int]:
        w.u(int(c.pred), 1)
        dims = 3 if c.z_present else 2
        if base or not c.pred:
            if not 1 <= c.precision <= MAX_PRECISION:
                raise ValueError("coordinate precision factor must be 1..32")
            if not c.values:
                raise ValueError("a coordinate block needs at least one keypoint")
            w.ue(c.precision - 1)
            w.ue(len(c.values) - 1)
            w.u(int(c.z_present), 1)
            if c.z_present:
                if not 1 <= c.z_max <= MAX_Z_MAX:
                    raise ValueError(f"z max value must be 1..{MAX_Z_MAX}")
                w.ue(c.z_max - 1)
            if base:
                self._inh.coord = (c.precision, len(c.values), c.z_present, c.z_max)
        else:
            if self._inh.coord is None:
                raise ValueError(
                    "predicted coordinates need an earlier base message with coordinates"
                )
            p, n, z, _ = self._inh.coord
            if (c.precision, len(c.values), c.z_present) != (p, n, z):
                raise ValueError(
                    f"predicted coordinates must keep the base message's precision {p}, "
                    f"{n} keypoints and z_present={z}"
                )
            dims = 3 if z else 2
        for kp in c.values:
            if len(kp) != dims:
                raise ValueError(f"each keypoint needs {dims} values, got {len(kp)}")
            for v in kp:
                if abs(v) > UE_MAX:
                    raise ValueError("coordinate value out of range")
                _w_signed(w, v)
        return c.z_present, len(c.values)

    def _w_matrices(
        self, w: BitWriter, m: Matrices, base: bool, coords: bool, z: bool, nkps: int
    ) -> None:
        if base and m.pred:
            raise ValueError("matrices cannot be predicted in a base-picture message")
        if not base:
            w.u(int(m.pred), 1)
        if m.pred:
            if self._inh.matrix is None:
                raise ValueError("predicted matrices need an earlier base message with matrices")
            q, specs = self._inh.matrix
            if m.precision != q or tuple(m.specs) != specs:
                raise ValueError(
                    "predicted matrices must keep the base message's precision and types"
                )
        else:
            if not 1 <= m.precision <= MAX_PRECISION:
                raise ValueError("matrix precision factor must be 1..32")
            if not m.specs:
                raise ValueError("a matrix block needs at least one matrix type")
            w.ue(m.precision - 1)
            w.ue(len(m.specs) - 1)
            for s in m.specs:
                _w_matrix_spec(w, s, coords, z, nkps)
            if base:
                self._inh.matrix = (m.precision, tuple(m.specs))
        if len(m.elements) != len(m.specs):
            raise ValueError("one element list per matrix type")
        for s, els in zip(m.specs, m.elements, strict=True):
            if len(els) != s.count:
                raise ValueError(
                    f"matrix type {s.type_idx} needs {s.count} elements, got {len(els)}"
                )
            for e in els:
                _w_element(w, e, m.precision, m.pred)

    # -- GFVE
    def gfve(self, m: GfveMessage) -> bytes:
        w = BitWriter()
        self.write_gfve(w, m)
        return _finish_payload(w)

    def write_gfve(self, w: BitWriter, m: GfveMessage) -> None:
        _check_id("gfve_id", m.gfve_id)
        if not (0 <= m.gfv_id <= UE_MAX and 0 <= m.gfv_cnt <= UE_MAX):
            raise ValueError("gfve_gfv_id / gfve_gfv_cnt out of range")
        if m.base_picture and m.gfv_cnt:
            raise ValueError("gfve_base_picture_flag can only be set when gfve_gfv_cnt == 0")
        base = bool(m.base_picture)
        w.ue(m.gfve_id)
        w.ue(m.gfv_id)
        w.ue(m.gfv_cnt)
        if m.gfv_cnt == 0:
            w.u(int(base), 1)
        if base:
            _w_nn(w, m.nn)
        elif m.nn is not None:
            raise ValueError("NN information only goes in base-picture messages")
        mat = m.matrices
        w.u(int(mat is not None), 1)
        if mat is not None:
            if base and mat.pred:
                raise ValueError("matrices cannot be predicted in a base-picture message")
            if not base:
                w.u(int(mat.pred), 1)
            if mat.pred:
                if self._inh.gfve_matrix is None:
                    raise ValueError("predicted GFVE matrices need an earlier base message")
                if (mat.precision, tuple(mat.sizes)) != self._inh.gfve_matrix:
                    raise ValueError(
                        "predicted GFVE matrices must keep the base sizes and precision"
                    )
            else:
                if not 1 <= mat.precision <= MAX_PRECISION:
                    raise ValueError("matrix precision factor must be 1..32")
                if not 1 <= len(mat.sizes) <= MAX_DIM_MINUS1 + 1:
                    raise ValueError("a GFVE message carries 1..1024 matrices")
                w.ue(mat.precision - 1)
                w.ue(len(mat.sizes) - 1)
                for h, wd in mat.sizes:
                    if h < 1 or wd < 1:
                        raise ValueError("matrix sizes must be positive")
                    w.ue(h - 1)  # height first, unlike GFV
                    w.ue(wd - 1)
                if base:
                    self._inh.gfve_matrix = (mat.precision, tuple(mat.sizes))
            for (h, wd), els in zip(mat.sizes, mat.elements, strict=True):
                if len(els) != h * wd:
                    raise ValueError(f"a {h}x{wd} matrix needs {h * wd} elements")
                for e in els:
                    # GFVE codes the predicted fraction as u(Q) too
                    _w_element(w, e, mat.precision, False)
        p = m.pupils
        if not 0 <= p.present_idx <= 3:
            raise ValueError("gfve_pupil_coordinate_present_idx must be 0..3")
        w.u(p.present_idx, 2)
        if p.present_idx:
            if base:
                if not 1 <= p.precision <= MAX_PRECISION:
                    raise ValueError("pupil precision factor must be 1..32")
                w.ue(p.precision - 1)
                self._inh.pupil_precision = p.precision
            elif self._inh.pupil_precision is None:
                raise ValueError("pupil coordinates need an earlier base GFVE message with pupils")
            elif p.precision != self._inh.pupil_precision:
                raise ValueError("non-base pupils must keep the base pupil precision")
        if self._inh.pupil_precision is not None:
            limit = 1 << (self._inh.pupil_precision + 1)
            for eye, bit in ((p.left, 1), (p.right, 2)):
                if p.present_idx & bit:
                    if eye is None:
                        raise ValueError("present_idx says a pupil is coded that is missing")
                    for v in eye:
                        if abs(v) > limit:
                            raise ValueError(f"pupil delta {v} exceeds 2^(P+1) = {limit}")
                        _w_signed(w, v)
        if base and m.nn is not None and m.nn.mode_idc == 0:
            _w_nn_payload(w, m.nn.payload)


def _check_id(name: str, v: int) -> None:
    if not 0 <= v <= UE_MAX:
        raise ValueError(f"{name} must be 0..2^32-2")
    if is_reserved_id(v):
        raise ValueError(f"{name} {v} is in a reserved range (256..511, 2^31..2^32-2)")


def _w_matrix_spec(w: BitWriter, s: MatrixSpec, coords: bool, z: bool, nkps: int) -> None:
    t = s.type_idx
    if not 0 <= t < 32:
        raise ValueError(f"matrix type {t} is reserved (32..63) or invalid")
    w.u(t, 6)
    if t in (0, 1):
        if not coords:
            raise ValueError(f"matrix type {t} needs keypoint coordinates in the same message")
        if (s.height, s.width) != matrix_size(t, z):
            raise ValueError(f"matrix type {t} is {2 + z}x{2 + z} here")
        w.u(int(s.num_matrices == nkps), 1)
        if s.num_matrices != nkps:
            info = _num_matrices_info(s.num_matrices, nkps)
            if not 0 <= info <= MAX_DIM_MINUS1 or s.num_matrices < 1:
                raise ValueError("number of matrices out of range")
            w.ue(info)
    elif t in (2, 3) or t >= 7:
        if t >= 7:
            if not 1 <= s.num_matrices <= MAX_DIM_MINUS1 + 1:
                raise ValueError("number of matrices must be 1..1024")
            w.ue(s.num_matrices - 1)
        elif s.num_matrices != 1:
            raise ValueError(f"matrix type {t} carries exactly one matrix")
        if not (1 <= s.width <= MAX_DIM_MINUS1 + 1 and 1 <= s.height <= MAX_DIM_MINUS1 + 1):
            raise ValueError("matrix width and height must be 1..1024")
        w.ue(s.width - 1)
        w.ue(s.height - 1)
    else:  # 4..6
        three_d = z if coords else s.three_d
        if coords and s.three_d != z:
            raise ValueError(f"with coordinates, matrix type {t} is 3-D exactly when z is present")
        if not coords:
            w.u(int(s.three_d), 1)
        if s.num_matrices != 1 or (s.height, s.width) != matrix_size(t, three_d):
            raise ValueError(f"matrix type {t} is one {matrix_size(t, three_d)} matrix here")


# ----------------------------------------------------------------------------- parser


class _In:
    """BitReader with element names in every error message."""

    def __init__(self, data: bytes, what: str) -> None:
        self.r = BitReader(data, what)
        self.data = data
        self.what = what

    def fail(self, msg: str) -> BitstreamError:
        return BitstreamError(f"{self.what}: {msg}")

    def u(self, n: int, name: str) -> int:
        if n > self.r.remaining:
            raise self.fail(f"truncated in {name} (needs {n} bits, {self.r.remaining} left)")
        return self.r.u(n)

    def flag(self, name: str) -> bool:
        return bool(self.u(1, name))

    def ue(self, name: str, limit: int = UE_MAX) -> int:
        zeros = 0
        while not self.u(1, name):
            zeros += 1
            if zeros > 32:
                raise self.fail(f"{name} is not a valid ue(v) code (over 32 leading zeros)")
        v = (1 << zeros) - 1 + self.u(zeros, name)
        if v > limit:
            raise self.fail(f"{name} = {v} is over its limit {limit}")
        return v

    def signed(self, name: str, limit: int = UE_MAX) -> int:
        a = self.ue(f"{name}_abs", limit)
        return -a if a and self.flag(f"{name}_sign_flag") else a

    def string(self, name: str) -> str:
        if self.r.pos % 8:
            raise self.fail(f"{name} does not start byte aligned")
        raw = bytearray()
        while True:
            b = self.u(8, f"{name} (no terminating NUL byte)")
            if b == 0:
                break
            raw.append(b)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{name} is not valid UTF-8") from None

    def align_zero(self, name: str) -> None:
        while self.r.pos % 8:
            if self.u(1, name):
                raise self.fail(f"{name} must be 0")

    def need(self, bits: int, what: str) -> None:
        """Refuse a count whose elements cannot fit in what is left (no long loops)."""
        if bits > self.r.remaining:
            raise self.fail(f"{what} cannot fit in the {self.r.remaining} bits left")

    def rest_bytes(self) -> bytes:
        self.align_zero("alignment_zero_bit_b")
        return bytes(self.u(8, "nn_payload_byte") for _ in range(self.r.remaining // 8))

    def at_trailing_bits(self) -> bool:
        """Whether what is left is sei_payload()'s end: nothing, or a 1 then zero bits."""
        left = self.r.remaining
        if left == 0:
            return True
        if left > 8:
            return False
        last = self.data[-1] & ((1 << left) - 1)
        return last == 1 << (left - 1)

    def trailing(self) -> None:
        if not self.at_trailing_bits():
            raise self.fail(
                f"{self.r.remaining} unexpected bits after the last syntax element "
                "(payload trailing bits must be a 1 followed by zeros)"
            )


def _parse_nn(r: _In, prefix: str) -> NeuralNetworkInfo | None:
    if not r.flag(f"{prefix}_nn_present_flag"):
        return None
    mode = r.ue(f"{prefix}_nn_mode_idc")
    if mode > 1:
        raise r.fail(f"{prefix}_nn_mode_idc = {mode} is reserved (0 or 1 supported)")
    nn = NeuralNetworkInfo(mode_idc=mode)
    if mode == 1:
        r.align_zero(f"{prefix}_nn_alignment_zero_bit_a")
        nn.tag_uri = r.string(f"{prefix}_nn_tag_uri")
        nn.uri = r.string(f"{prefix}_nn_uri")
    return nn


class SeiReader:
    """Parses GFV / GFVE payloads and reconstructs their values with the reader formulas.

    Keeps the state the reference reader keeps across messages: the parameters a predicted
    message inherits, and the base and previous values every prediction starts from. Values
    are exact ``Fraction`` s (the reference's doubles are exact for any sane stream).

    Where VTM/HM's reader has bookkeeping quirks (see ``docs/sei.md``) this reader follows the
    syntax notes' intent; the two agree on every stream laid out as the reference encoder
    lays it out (one base message, then gfv_cnt 1..N-1), which is what gfvc writes.
    """

    def __init__(self, form: Form = "vtm") -> None:
        self.form = _check_form(form)
        self._inh = _Inherited()
        self._coord_base: list[tuple[Fraction, ...]] | None = None
        self._coord_prev: list[tuple[Fraction, ...]] | None = None
        self._mat_base: list[list[Fraction]] | None = None
        self._mat_prev: list[list[Fraction]] | None = None
        self._gfve_base: list[list[Fraction]] | None = None
        self._gfve_prev: list[list[Fraction]] | None = None
        self._pupil_base = (Fraction(0),) * 4
        self._pupil_prev = (Fraction(0),) * 4

    # -- GFV
    def gfv(self, payload: bytes) -> GfvValues:
        """Parse and reconstruct one GFV payload (BitstreamError if it is invalid)."""
        r = _In(payload, "GFV SEI payload")
        m = self._parse_gfv(r)
        coords = self._rec_coordinates(m) if m.coordinates is not None else None
        mats = self._rec_matrices(m) if m.matrices is not None else None
        nn_tail = m.nn if m.base_picture else None
        if nn_tail is not None and nn_tail.mode_idc == 0:
            nn_tail.payload = r.rest_bytes()
        elif not m.base_picture and self._inh.gfv_nn_inband:
            # The reference writer repeats the in-band NN payload after every message.
            if not r.at_trailing_bits():
                r.rest_bytes()
        else:
            r.trailing()
        if m.base_picture:
            self._inh.gfv_nn_inband = m.nn is not None and m.nn.mode_idc == 0
        return GfvValues(m, coords, mats)

    def _parse_gfv(self, r: _In) -> GfvMessage:
        gid = r.ue("gfv_id")
        if is_reserved_id(gid):
            raise ReservedIdError(
                f"GFV SEI payload: gfv_id {gid} is reserved (256..511, 2^31..2^32-2); "
                "such messages must be ignored"
            )
        cnt = r.ue("gfv_cnt")
        base = r.flag("gfv_base_picture_flag") if cnt == 0 else False
        m = GfvMessage(gfv_id=gid, cnt=cnt, base_picture=base)
        if base:
            m.nn = _parse_nn(r, "gfv")
            if r.flag("gfv_chroma_key_info_present_flag"):
                m.chroma_key = self._parse_chroma_key(r)
        if not base and (self.form == "hm" or cnt == 0):
            m.fusion = r.flag("gfv_fusion_pic_flag")
        m.low_confidence = r.flag("gfv_low_confidence_face_parameter_flag")
        coord_present = r.flag("gfv_coordinate_present_flag")
        z, nkps = False, 0
        if coord_present:
            m.coordinates = self._parse_coordinates(r, base)
            z, nkps = m.coordinates.z_present, m.coordinates.num_kps
        if r.flag("gfv_matrix_present_flag"):
            m.matrices = self._parse_matrices(r, base, coord_present, z, nkps)
        elif not coord_present:
            raise r.fail("neither coordinates nor matrices are present")
        return m

    def _parse_chroma_key(self, r: _In) -> ChromaKey:
        ck = ChromaKey()
        if self.form == "vtm":
            ck.purpose_idc = r.ue("gfv_chroma_key_purpose_idc", 2)
        vals: list[int | None] = []
        for c in range(3):
            present = r.flag(f"gfv_chroma_key_value_present_flag[{c}]")
            vals.append(r.u(8, f"gfv_chroma_key_value[{c}]") if present else None)
        ck.values = (vals[0], vals[1], vals[2])
        if self.form == "vtm":
            if r.flag("gfv_chroma_key_thr_present_flag"):
                lo = r.u(8, "gfv_chroma_key_thr_lower")
                ck.thresholds = (lo, lo + r.ue("gfv_chroma_key_thr_upper_delta_minus1", 255) + 1)
        else:
            thr: list[int | None] = []
            for i in range(2):
                present = r.flag(f"gfv_chroma_key_thr_present_flag[{i}]")
                thr.append(r.ue(f"gfv_chroma_key_thr_value[{i}]", 255) if present else None)
            ck.thresholds = (thr[0], thr[1])
        return ck

    def _parse_coordinates(self, r: _In, base: bool) -> Coordinates:
        pred = r.flag("gfv_kps_pred_flag")
        if base or not pred:
            p = r.ue("gfv_coordinate_precision_factor_minus1", MAX_PRECISION - 1) + 1
            n = r.ue("gfv_num_kps_minus1") + 1
            r.need(2 * n, f"gfv_num_kps_minus1 + 1 = {n} keypoints")
            z = r.flag("gfv_coordinate_z_present_flag")
            zmax = r.ue("gfv_coordinate_z_max_value_minus1", MAX_Z_MAX - 1) + 1 if z else 1
            if base:
                self._inh.coord = (p, n, z, zmax)
        else:
            if self._inh.coord is None:
                raise r.fail("predicted coordinates but no earlier base message carried any")
            p, n, z, zmax = self._inh.coord
        dims = 3 if z else 2
        r.need(dims * n, f"{n} keypoints")
        names = ("dx", "dy", "dz") if pred else ("x", "y", "z")
        values = [
            tuple(r.signed(f"gfv_coordinate_{names[a]}[{i}]") for a in range(dims))
            for i in range(n)
        ]
        return Coordinates(pred=pred, precision=p, values=values, z_present=z, z_max=zmax)

    def _parse_matrices(self, r: _In, base: bool, coords: bool, z: bool, nkps: int) -> Matrices:
        pred = False if base else r.flag("gfv_matrix_pred_flag")
        if pred:
            if self._inh.matrix is None:
                raise r.fail("predicted matrices but no earlier base message carried any")
            q, spec_t = self._inh.matrix
            specs = list(spec_t)
        else:
            q = r.ue("gfv_matrix_element_precision_factor_minus1", MAX_PRECISION - 1) + 1
            ntypes = r.ue("gfv_num_matrix_types_minus1") + 1
            r.need(6 * ntypes, f"{ntypes} matrix types")
            specs = [self._parse_spec(r, i, coords, z, nkps) for i in range(ntypes)]
            if base:
                self._inh.matrix = (q, tuple(specs))
        total = sum(s.count for s in specs)
        r.need(total * (2 if pred else 1 + q), f"{total} matrix elements")
        elements = []
        for s in specs:
            els: list[Element] = []
            for _ in range(s.count):
                if pred:
                    i = r.ue("gfv_matrix_delta_element_int")
                    d = r.ue("gfv_matrix_delta_element_dec")
                    neg = r.flag("gfv_matrix_delta_element_sign_flag") if i or d else False
                else:
                    i = r.ue("gfv_matrix_element_int")
                    d = r.u(q, "gfv_matrix_element_dec")
                    neg = r.flag("gfv_matrix_element_sign_flag") if i or d else False
                els.append((i, d, neg))
            elements.append(els)
        return Matrices(pred=pred, precision=q, specs=specs, elements=elements)

    def _parse_spec(self, r: _In, i: int, coords: bool, z: bool, nkps: int) -> MatrixSpec:
        t = r.u(6, f"gfv_matrix_type_idx[{i}]")
        if t >= 32:
            raise r.fail(f"gfv_matrix_type_idx[{i}] = {t} is a reserved matrix type (32..63)")
        if t in (0, 1):
            if not coords:
                raise r.fail(f"matrix type {t} needs keypoint coordinates in the same message")
            if r.flag(f"gfv_num_matrices_equal_to_num_kps_flag[{i}]"):
                n = nkps
            else:
                info = r.ue(f"gfv_num_matrices_info[{i}]", MAX_DIM_MINUS1)
                n = info + 1 if info < nkps - 1 else info + 2
            h, w = matrix_size(t, z)  # type: ignore[misc]
            return MatrixSpec(t, n, h, w, z)
        if t in (2, 3) or t >= 7:
            n = r.ue(f"gfv_num_matrices_minus1[{i}]", MAX_DIM_MINUS1) + 1 if t >= 7 else 1
            w = r.ue(f"gfv_matrix_width_minus1[{i}]", MAX_DIM_MINUS1) + 1
            h = r.ue(f"gfv_matrix_height_minus1[{i}]", MAX_DIM_MINUS1) + 1
            return MatrixSpec(t, n, h, w)
        s = z if coords else r.flag(f"gfv_matrix_3d_space_flag[{i}]")
        h, w = matrix_size(t, s)  # type: ignore[misc]
        return MatrixSpec(t, 1, h, w, s)

    def _rec_coordinates(self, m: GfvMessage) -> list[tuple[Fraction, ...]]:
        c = m.coordinates
        assert c is not None
        scale = Fraction(1, 1 << c.precision)
        if not c.pred:
            out = [tuple(v * scale for v in kp) for kp in c.values]
        elif m.base_picture:  # DPCM over the keypoints of this message
            out = []
            prev = (Fraction(0),) * len(c.values[0])
            for kp in c.values:
                prev = tuple(v * scale + p for v, p in zip(kp, prev, strict=True))
                out.append(prev)
        else:
            ref = self._coord_base if m.cnt == 0 else self._coord_prev
            if ref is None or len(ref) != c.num_kps or len(ref[0]) != len(c.values[0]):
                raise BitstreamError(
                    "GFV SEI payload: predicted coordinates do not match the shape of the "
                    "message they are predicted from"
                )
            out = [
                tuple(v * scale + p for v, p in zip(kp, rk, strict=True))
                for kp, rk in zip(c.values, ref, strict=True)
            ]
        self._coord_prev = out
        if m.base_picture:
            self._coord_base = out
        return out

    def _rec_matrices(self, m: GfvMessage) -> list[list[Fraction]]:
        mt = m.matrices
        assert mt is not None
        ref = self._mat_base if m.cnt == 0 else self._mat_prev
        vals = _matrix_values(mt.elements, mt.precision, ref if mt.pred else None, mt.pred, "GFV")
        self._mat_prev = vals
        if m.base_picture:
            self._mat_base = vals
        return vals

    # -- GFVE
    def gfve(self, payload: bytes) -> GfveValues:
        """Parse and reconstruct one GFVE payload (BitstreamError if it is invalid)."""
        r = _In(payload, "GFVE SEI payload")
        gid = r.ue("gfve_id")
        if is_reserved_id(gid):
            raise ReservedIdError(
                f"GFVE SEI payload: gfve_id {gid} is reserved (256..511, 2^31..2^32-2); "
                "such messages must be ignored"
            )
        m = GfveMessage(gfve_id=gid, gfv_id=r.ue("gfve_gfv_id"), gfv_cnt=r.ue("gfve_gfv_cnt"))
        m.base_picture = r.flag("gfve_base_picture_flag") if m.gfv_cnt == 0 else False
        if m.base_picture:
            m.nn = _parse_nn(r, "gfve")
        mats = None
        if r.flag("gfve_matrix_present_flag"):
            m.matrices = self._parse_gfve_matrices(r, m.base_picture)
            mats = self._rec_gfve_matrices(m)
        m.pupils, pupils = self._parse_pupils(r, m)
        if m.nn is not None and m.nn.mode_idc == 0:
            m.nn.payload = r.rest_bytes()
        else:
            r.trailing()
        return GfveValues(m, mats, pupils)

    def _parse_gfve_matrices(self, r: _In, base: bool) -> GfveMatrices:
        pred = False if base else r.flag("gfve_matrix_pred_flag")
        if pred:
            if self._inh.gfve_matrix is None:
                raise r.fail("predicted matrices but no earlier base message carried any")
            q, size_t = self._inh.gfve_matrix
            sizes = list(size_t)
        else:
            q = r.ue("gfve_matrix_element_precision_factor_minus1", MAX_PRECISION - 1) + 1
            n = r.ue("gfve_num_matrices_minus1", MAX_DIM_MINUS1) + 1
            r.need(2 * n, f"{n} matrix sizes")
            sizes = []
            for j in range(n):
                h = r.ue(f"gfve_matrix_height_minus1[{j}]") + 1
                w = r.ue(f"gfve_matrix_width_minus1[{j}]") + 1
                sizes.append((h, w))
            if base:
                self._inh.gfve_matrix = (q, tuple(sizes))
        total = sum(h * w for h, w in sizes)
        r.need(total * (1 + q), f"{total} matrix elements")
        elements = []
        for h, w in sizes:
            name = "gfve_matrix_delta_element" if pred else "gfve_matrix_element"
            els: list[Element] = []
            for _ in range(h * w):
                i = r.ue(f"{name}_int")
                d = r.u(q, f"{name}_dec")
                neg = r.flag(f"{name}_sign_flag") if i or d else False
                els.append((i, d, neg))
            elements.append(els)
        return GfveMatrices(pred=pred, precision=q, sizes=sizes, elements=elements)

    def _rec_gfve_matrices(self, m: GfveMessage) -> list[list[Fraction]]:
        mt = m.matrices
        assert mt is not None
        ref = self._gfve_base if m.gfv_cnt == 0 else self._gfve_prev
        vals = _matrix_values(mt.elements, mt.precision, ref if mt.pred else None, mt.pred, "GFVE")
        self._gfve_prev = vals
        if m.base_picture:
            self._gfve_base = vals
        return vals

    def _parse_pupils(
        self, r: _In, m: GfveMessage
    ) -> tuple[Pupils, tuple[tuple[Fraction, Fraction], tuple[Fraction, Fraction]] | None]:
        idx = r.u(2, "gfve_pupil_coordinate_present_idx")
        p = Pupils(present_idx=idx)
        if idx:
            if m.base_picture:
                prec = r.ue("gfve_pupil_coordinate_precision_factor_minus1", MAX_PRECISION - 1) + 1
                self._inh.pupil_precision = prec
            elif self._inh.pupil_precision is None:
                raise r.fail("pupil coordinates before any base GFVE message carried pupils")
        if self._inh.pupil_precision is None:
            return p, None
        prec = self._inh.pupil_precision
        p.precision = prec
        limit = 1 << (prec + 1)
        zero = Fraction(0)
        if m.gfv_cnt == 0:
            ref = (zero,) * 4 if m.base_picture else self._pupil_base
        else:
            ref = self._pupil_prev
        scale = Fraction(1, 1 << prec)
        if idx & 1:
            p.left = (
                r.signed("gfve_pupil_left_eye_dx_coordinate", limit),
                r.signed("gfve_pupil_left_eye_dy_coordinate", limit),
            )
            left = (ref[0] + p.left[0] * scale, ref[1] + p.left[1] * scale)
        else:
            left = (ref[0], ref[1])
        rref = left if m.base_picture else (ref[2], ref[3])
        if idx & 2:
            p.right = (
                r.signed("gfve_pupil_right_eye_dx_coordinate", limit),
                r.signed("gfve_pupil_right_eye_dy_coordinate", limit),
            )
            right = (rref[0] + p.right[0] * scale, rref[1] + p.right[1] * scale)
        else:
            right = rref
        now = (left[0], left[1], right[0], right[1])
        if m.base_picture:
            self._pupil_base = now
        self._pupil_prev = now
        return p, (left, right)


def _matrix_values(
    elements: list, precision: int, ref: list[list[Fraction]] | None, pred: bool, what: str
) -> list[list[Fraction]]:
    """Matrix element values of one message; predicted ones are added to ``ref``'s."""
    vals = [[_element_value(e, precision) for e in els] for els in elements]
    if not pred:
        return vals
    if ref is None or [len(x) for x in ref] != [len(x) for x in vals]:
        raise BitstreamError(
            f"{what} SEI payload: predicted matrices do not match the sizes of the message "
            "they are predicted from"
        )
    return [[v + p for v, p in zip(a, b, strict=True)] for a, b in zip(vals, ref, strict=True)]


def _element_value(e: Element, q: int) -> Fraction:
    i, d, neg = e
    v = i + Fraction(d, 1 << q)
    return -v if neg else v


@dataclass
class GfvValues:
    """A parsed GFV message and its reconstructed values."""

    message: GfvMessage
    coordinates: list[tuple[Fraction, ...]] | None  # per keypoint (x, y[, z])
    matrices: list[list[Fraction]] | None  # per matrix type, syntax order

    def coordinate_array(self) -> np.ndarray | None:
        if self.coordinates is None:
            return None
        return np.array([[float(v) for v in kp] for kp in self.coordinates])

    def matrix_arrays(self) -> list[np.ndarray] | None:
        """Per type, an (N, H, W) float array."""
        if self.matrices is None:
            return None
        specs = self.message.matrices.specs  # type: ignore[union-attr]
        return [
            np.array([float(v) for v in vals]).reshape(s.num_matrices, s.height, s.width)
            for s, vals in zip(specs, self.matrices, strict=True)
        ]


@dataclass
class GfveValues:
    """A parsed GFVE message and its reconstructed values."""

    message: GfveMessage
    matrices: list[list[Fraction]] | None
    pupils: tuple[tuple[Fraction, Fraction], tuple[Fraction, Fraction]] | None  # (left, right)


# ----------------------------------------------------------------------------- exact grid encoders


def _split(v: int, q: int) -> Element:
    """Signed integer in 2^-Q units -> (int, dec, negative) with dec < 2^Q."""
    a = abs(v)
    return a >> q, a & ((1 << q) - 1), v < 0


def _three_d(t: int, a: np.ndarray, z: bool, coords: bool) -> bool:
    """MatrixSpec.three_d as the parser infers it: z for types 0/1 and for 4..6 with
    coordinates, the matrix size for 4..6 without, False for every other type."""
    if t in (0, 1) or (t in (4, 5, 6) and coords):
        return z
    return t in (4, 5, 6) and a.shape[1] == 3


def _signed_bits(values: np.ndarray) -> int:
    a = np.abs(values.astype(np.int64)).ravel()
    return int(sum(ue_bits(int(x)) for x in a) + np.count_nonzero(a))


class GfvGridEncoder:
    """Builds GFV messages from values already on the SEI grid, exactly.

    Coordinates are integers in units of 2^-P and matrix elements integers in units of
    2^-Q, so reconstruction gives them back bit for bit. For every message it keeps the
    same base/previous references as ``SeiReader`` and picks, per block, whichever of the
    predicted or unpredicted coding is shorter.
    """

    def __init__(self, gfv_id: int = 0) -> None:
        _check_id("gfv_id", gfv_id)
        self.gfv_id = gfv_id
        self._cb: np.ndarray | None = None  # base / previous coordinates
        self._cp: np.ndarray | None = None
        self._mb: list[np.ndarray] | None = None  # base / previous matrices
        self._mp: list[np.ndarray] | None = None
        self._specs: tuple[MatrixSpec, ...] | None = None
        self._q: int | None = None
        self._coord_params: tuple[int, int, bool] | None = None

    def message(
        self,
        cnt: int,
        *,
        base: bool,
        coordinates: np.ndarray | None = None,
        precision: int = 1,
        z_max: int = 1,
        matrices: Sequence[tuple[int, np.ndarray]] | None = None,
        matrix_precision: int = 1,
        nn: NeuralNetworkInfo | None = None,
        predict: bool = True,
    ) -> GfvMessage:
        """One message. ``coordinates``: (K, 2|3) ints; ``matrices``: (type_idx, (N, H, W)
        ints) pairs. ``predict=False`` forbids prediction (every block coded whole)."""
        if base and cnt:
            raise ValueError("a base-picture message has gfv_cnt 0")
        m = GfvMessage(gfv_id=self.gfv_id, cnt=cnt, base_picture=base, nn=nn if base else None)
        z = False
        if coordinates is not None:
            c = np.asarray(coordinates, dtype=np.int64)
            if c.ndim != 2 or c.shape[1] not in (2, 3):
                raise ValueError("coordinates must be (K, 2) or (K, 3)")
            z = c.shape[1] == 3
            m.coordinates = self._coordinates(c, cnt, base, precision, z_max, predict)
        if matrices:
            m.matrices = self._matrices(
                matrices, cnt, base, matrix_precision, z, coordinates, predict
            )
        return m

    def _coordinates(
        self, c: np.ndarray, cnt: int, base: bool, p: int, z_max: int, predict: bool
    ) -> Coordinates:
        z = c.shape[1] == 3
        header = ue_bits(p - 1) + ue_bits(len(c) - 1) + 1 + (ue_bits(z_max - 1) if z else 0)
        options: list[tuple[int, bool, np.ndarray]] = [(header + _signed_bits(c), False, c)]
        if base and predict:
            d = np.diff(c, axis=0, prepend=np.zeros((1, c.shape[1]), np.int64))
            options.append((header + _signed_bits(d), True, d))
        elif predict and not base:
            ref = self._cb if cnt == 0 else self._cp
            if ref is not None and ref.shape == c.shape and self._coord_params == (p, len(c), z):
                d = c - ref
                options.append((_signed_bits(d), True, d))
        _, pred, vals = min(options, key=lambda o: o[0])
        self._cp = c
        if base:
            self._cb = c
            self._coord_params = (p, len(c), z)
        return Coordinates(
            pred=pred,
            precision=p,
            values=[tuple(int(v) for v in row) for row in vals],
            z_present=z,
            z_max=z_max,
        )

    def _matrices(
        self,
        matrices: Sequence[tuple[int, np.ndarray]],
        cnt: int,
        base: bool,
        q: int,
        z: bool,
        coordinates: np.ndarray | None,
        predict: bool,
    ) -> Matrices:
        arrays = [np.asarray(a, dtype=np.int64) for _, a in matrices]
        specs = []
        for (t, _), a in zip(matrices, arrays, strict=True):
            if a.ndim != 3:
                raise ValueError("matrices must be (N, H, W) arrays")
            specs.append(
                MatrixSpec(
                    t,
                    a.shape[0],
                    a.shape[1],
                    a.shape[2],
                    _three_d(t, a, z, coordinates is not None),
                )
            )
        spec_t = tuple(specs)

        def bits(vals: list[np.ndarray], pred: bool) -> int:
            n = 0
            for a in vals:
                mag = np.abs(a).ravel()
                for x in mag:
                    i, d = int(x) >> q, int(x) & ((1 << q) - 1)
                    n += ue_bits(i) + (ue_bits(d) if pred else q) + (1 if x else 0)
            return n

        options = [(bits(arrays, False), False, arrays)]
        if predict and not base and self._specs == spec_t and self._q == q:
            ref = self._mb if cnt == 0 else self._mp
            if ref is not None and [r.shape for r in ref] == [a.shape for a in arrays]:
                deltas = [a - r for a, r in zip(arrays, ref, strict=True)]
                # an unpredicted block also codes the precision and the types
                options[0] = (
                    options[0][0] + ue_bits(q - 1) + ue_bits(len(specs) - 1) + 6 * len(specs),
                    False,
                    arrays,
                )
                options.append((bits(deltas, True), True, deltas))
        _, pred, vals = min(options, key=lambda o: o[0])
        self._mp = arrays
        if base:
            self._mb, self._specs, self._q = arrays, spec_t, q
        return Matrices(
            pred=pred,
            precision=q,
            specs=specs,
            elements=[[_split(int(v), q) for v in a.ravel()] for a in vals],
        )


class GfvePupilGridEncoder:
    """Builds GFVE pupil messages from pupil positions on the 2^-P grid, exactly.

    The base message codes both eyes (left from 0, right from left); later messages code
    only the eyes that moved (an eye left out keeps its reference).
    """

    def __init__(self, gfve_id: int = 0, gfv_id: int = 0, precision: int = 1) -> None:
        _check_id("gfve_id", gfve_id)
        self.gfve_id, self.gfv_id, self.precision = gfve_id, gfv_id, precision
        self._base: tuple[int, int, int, int] | None = None
        self._prev: tuple[int, int, int, int] | None = None

    def message(
        self, cnt: int, *, base: bool, left: Sequence[int], right: Sequence[int]
    ) -> GfveMessage:
        lx, ly, rx, ry = (int(v) for v in (*left, *right))
        limit = 1 << (self.precision + 1)
        p = Pupils(precision=self.precision)
        if base:
            p.present_idx = 3
            p.left, p.right = (lx, ly), (rx - lx, ry - ly)
        else:
            ref = self._base if cnt == 0 else self._prev
            if ref is None:
                raise ValueError("the first GFVE pupil message must be a base message")
            dl, dr = (lx - ref[0], ly - ref[1]), (rx - ref[2], ry - ref[3])
            p.present_idx = (1 if any(dl) else 0) | (2 if any(dr) else 0)
            p.left = dl if p.present_idx & 1 else None
            p.right = dr if p.present_idx & 2 else None
        for eye in (p.left, p.right):
            if eye is not None and max(abs(eye[0]), abs(eye[1])) > limit:
                raise ValueError(f"pupil delta {eye} exceeds 2^(P+1) = {limit}")
        now = (lx, ly, rx, ry)
        self._prev = now
        if base:
            self._base = now
        return GfveMessage(
            gfve_id=self.gfve_id, gfv_id=self.gfv_id, gfv_cnt=cnt, base_picture=base, pupils=p
        )


# ----------------------------------------------------------------------------- reference quantisers


def c_round(x: float) -> int:
    """``(int)(x + 0.5)`` as C computes it: half up for positives, toward zero below."""
    return math.trunc(x + 0.5)


def quantize_coordinate(x: float, p: int) -> int:
    """The reference encoder's coordinate quantiser (VTM/HM): (int)(x * 2^P + 0.5)."""
    return c_round(x * (1 << p))


def quantize_matrix_element(e: float, q: int, pred: bool = False) -> Element:
    """The reference encoder's matrix quantiser: integer part by truncation, fraction
    rounded half up and, unpredicted, clipped to 2^Q - 1 (never carried into the integer)."""
    a = abs(e)
    i = math.trunc(a)
    d = c_round((a - i) * (1 << q))
    if not pred:
        d = min(max(d, 0), (1 << q) - 1)
    return i, d, e < 0


class ReferenceGfvEncoder:
    """Builds GFV messages from float values exactly as VTM/HM's writer quantises them.

    Use it to predict what the reference encoder writes for a configuration; the
    reconstruction it predicts from is kept in doubles, as in the C++ code.
    """

    def __init__(self, gfv_id: int = 0) -> None:
        self.gfv_id = gfv_id
        self._cb: list[list[float]] | None = None
        self._cp: list[list[float]] | None = None
        self._mb: list[list[float]] | None = None
        self._mp: list[list[float]] | None = None

    def message(
        self,
        cnt: int,
        *,
        base: bool,
        coordinates: np.ndarray | None = None,
        precision: int = 1,
        coord_pred: bool = False,
        z_max: int = 1,
        matrices: Sequence[tuple[int, np.ndarray]] | None = None,
        matrix_precision: int = 1,
        matrix_pred: bool = False,
    ) -> GfvMessage:
        m = GfvMessage(gfv_id=self.gfv_id, cnt=cnt, base_picture=base)
        z = False
        if coordinates is not None:
            c = np.asarray(coordinates, dtype=np.float64)
            z = c.shape[1] == 3
            m.coordinates = self._coordinates(c, cnt, base, precision, coord_pred, z_max)
        if matrices:
            m.matrices = self._matrices(
                matrices, cnt, base, matrix_precision, matrix_pred, z, coordinates is not None
            )
        return m

    def _coordinates(
        self, c: np.ndarray, cnt: int, base: bool, p: int, pred: bool, z_max: int
    ) -> Coordinates:
        scale = 1 << p
        rec: list[list[float]] = []
        values = []
        for i, kp in enumerate(c.tolist()):
            row_q, row_r = [], []
            for a, x in enumerate(kp):
                if not pred:
                    qv = c_round(x * scale)
                    r = qv / scale
                else:
                    if base:
                        ref = 0.0 if i == 0 else rec[i - 1][a]
                    else:
                        src = self._cb if cnt == 0 else self._cp
                        if src is None:
                            raise ValueError("no reference for predicted coordinates")
                        ref = src[i][a]
                    qv = c_round((x - ref) * scale)
                    r = qv / scale + ref
                row_q.append(qv)
                row_r.append(r)
            values.append(tuple(row_q))
            rec.append(row_r)
        self._cp = rec
        if base:
            self._cb = rec
        return Coordinates(
            pred=pred, precision=p, values=values, z_present=c.shape[1] == 3, z_max=z_max
        )

    def _matrices(
        self,
        matrices: Sequence[tuple[int, np.ndarray]],
        cnt: int,
        base: bool,
        q: int,
        pred: bool,
        z: bool,
        coords: bool,
    ) -> Matrices:
        specs, elements, rec = [], [], []
        ref_all = (self._mb if cnt == 0 else self._mp) if pred else None
        if pred and ref_all is None:
            raise ValueError("no reference for predicted matrices")
        for k, (t, a) in enumerate(matrices):
            a = np.asarray(a, dtype=np.float64)
            specs.append(
                MatrixSpec(t, a.shape[0], a.shape[1], a.shape[2], _three_d(t, a, z, coords))
            )
            els, recs = [], []
            for j, e in enumerate(a.ravel().tolist()):
                ref = ref_all[k][j] if ref_all is not None else 0.0
                i, d, neg = quantize_matrix_element(e - ref if pred else e, q, pred)
                v = i + d / (1 << q)
                recs.append((-v if neg else v) + ref)
                els.append((i, d, neg))
            elements.append(els)
            rec.append(recs)
        self._mp = rec
        if base:
            self._mb = rec
        return Matrices(pred=pred, precision=q, specs=specs, elements=elements)


class ReferenceGfveEncoder:
    """GFVE pupils from floats as the reference encoder codes them: (int)(|d| 2^P + 0.5)."""

    def __init__(self, gfve_id: int = 0, gfv_id: int = 0, precision: int = 1) -> None:
        self.gfve_id, self.gfv_id, self.precision = gfve_id, gfv_id, precision
        self._base = (0.0,) * 4
        self._prev = (0.0,) * 4

    def message(
        self,
        cnt: int,
        *,
        base: bool,
        present_idx: int,
        left: Sequence[float],
        right: Sequence[float],
    ) -> GfveMessage:
        scale = 1 << self.precision
        ref = (0.0,) * 4 if (cnt == 0 and base) else (self._base if cnt == 0 else self._prev)

        def code(x: float, r: float) -> tuple[int, float]:
            d = x - r
            a = c_round(abs(d) * scale)
            v = -a if d < 0 else a
            return v, (-a if d < 0 else a) / scale + r

        p = Pupils(present_idx=present_idx, precision=self.precision)
        lx, ly = ref[0], ref[1]
        if present_idx & 1:
            (dx, lx), (dy, ly) = code(left[0], ref[0]), code(left[1], ref[1])
            p.left = (dx, dy)
        rref = (lx, ly) if base else (ref[2], ref[3])
        rx, ry = rref
        if present_idx & 2:
            (dx, rx), (dy, ry) = code(right[0], rref[0]), code(right[1], rref[1])
            p.right = (dx, dy)
        now = (lx, ly, rx, ry)
        self._prev = now
        if base:
            self._base = now
        return GfveMessage(
            gfve_id=self.gfve_id, gfv_id=self.gfv_id, gfv_cnt=cnt, base_picture=base, pupils=p
        )


__all__ = [
    "APPLICATION_MATRIX_TYPE",
    "ChromaKey",
    "Coordinates",
    "Element",
    "FORMS",
    "Form",
    "GfvGridEncoder",
    "GfvMessage",
    "GfvValues",
    "GfveMatrices",
    "GfveMessage",
    "GfvePupilGridEncoder",
    "GfveValues",
    "MATRIX_TYPES",
    "MatrixSpec",
    "Matrices",
    "NeuralNetworkInfo",
    "PAYLOAD_GFV",
    "PAYLOAD_GFVE",
    "Pupils",
    "ReferenceGfvEncoder",
    "ReferenceGfveEncoder",
    "ReservedIdError",
    "SeiReader",
    "SeiWriter",
    "c_round",
    "is_reserved_id",
    "matrix_size",
    "quantize_coordinate",
    "quantize_matrix_element",
    "ue_bits",
]
