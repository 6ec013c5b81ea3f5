"""The .gfv file format: written and parsed here, and only here. Spec: docs/bitstream.md.

Layout::

    file    = header, segment+, end
    header  = "GFVC", version u8, length u8, fields ..., crc32
    segment = 0x53, flags u8, count u8, unit-length table, payloads, crc32
    end     = 0x45, frames u32, crc32

A *unit* is what the streaming ``Encoder`` emits per frame: one type byte (``K`` key frame,
``F`` feature) and its payload. In a file the type byte is implied by the segment flags
(only the first unit of a segment can be a key unit) and the payload lengths sit in a
compact Rice-coded table, so framing plus integrity costs a few bits per frame while every
byte is still covered by a CRC-32.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

from gfvc.bits import BitReader, BitWriter, unzigzag, zigzag
from gfvc.errors import BitstreamError

MAGIC = b"GFVC"
VERSION = 1
SEGMENT = 0x53  # "S"
END = 0x45  # "E"
KEY = 0x4B  # "K": unit type byte of a key-frame unit
FEATURE = 0x46  # "F": unit type byte of a feature unit
MAX_SEGMENT_UNITS = 255

KEYFRAME_FORMATS = {"yuv420": 0, "rgb444": 1}
FLAG_KEY_FEATURE_SENT = 1

_HEADER_FIELDS = struct.Struct(">B8sHHHHfBBBBBHB")


@dataclass(frozen=True)
class StreamHeader:
    """Everything a decoder needs before the first unit."""

    model_id: int
    model_hash: bytes  # 8 bytes: hash of the model configuration and weights
    width: int
    height: int
    fps: Fraction
    qstep: float
    coder_id: int
    keyframe_codec_id: int
    keyframe_format: str  # "yuv420" | "rgb444"
    keyframe_qp: int
    key_feature_sent: bool
    feature_dim: int
    segment_units: int = 128
    extension: bytes = b""  # model-specific, up to 255 bytes

    def to_bytes(self) -> bytes:
        if len(self.model_hash) != 8:
            raise ValueError("model_hash must be 8 bytes")
        if len(self.extension) > 255:
            raise ValueError("header extension is limited to 255 bytes")
        fps = Fraction(self.fps).limit_denominator(65535)
        if fps.numerator > 65535 or fps <= 0:
            raise ValueError(f"frame rate {self.fps} cannot be stored")
        flags = FLAG_KEY_FEATURE_SENT if self.key_feature_sent else 0
        body = _HEADER_FIELDS.pack(
            self.model_id,
            self.model_hash,
            self.width,
            self.height,
            fps.numerator,
            fps.denominator,
            self.qstep,
            self.coder_id,
            self.keyframe_codec_id,
            KEYFRAME_FORMATS[self.keyframe_format],
            self.keyframe_qp,
            flags,
            self.feature_dim,
            self.segment_units,
        )
        body += bytes([len(self.extension)]) + self.extension
        head = MAGIC + bytes([VERSION, len(body)]) + body
        return head + struct.pack(">I", zlib.crc32(head))

    @classmethod
    def parse(cls, data: bytes) -> tuple[StreamHeader, int]:
        """Parse a header at the start of ``data``; returns it and its length in bytes."""
        if len(data) < 6 or data[:4] != MAGIC:
            raise BitstreamError("not a .gfv bitstream (bad magic bytes)")
        version = data[4]
        if version > VERSION:
            raise BitstreamError(
                f"bitstream format version {version} is newer than this gfvc supports ({VERSION}); "
                "upgrade gfvc"
            )
        if version < 1:
            raise BitstreamError(f"invalid bitstream format version {version}")
        n = 6 + data[5]
        if len(data) < n + 4:
            raise BitstreamError("truncated bitstream header")
        (crc,) = struct.unpack(">I", data[n : n + 4])
        if zlib.crc32(data[:n]) != crc:
            raise BitstreamError("corrupt bitstream header (CRC mismatch)")
        body = data[6:n]
        if len(body) < _HEADER_FIELDS.size + 1:
            raise BitstreamError("bitstream header too short")
        f = _HEADER_FIELDS.unpack(body[: _HEADER_FIELDS.size])
        ext_len = body[_HEADER_FIELDS.size]
        ext = body[_HEADER_FIELDS.size + 1 : _HEADER_FIELDS.size + 1 + ext_len]
        formats = {v: k for k, v in KEYFRAME_FORMATS.items()}
        if f[9] not in formats or f[5] == 0 or f[4] == 0 or f[13] == 0:
            raise BitstreamError("corrupt bitstream header (invalid field values)")
        header = cls(
            model_id=f[0],
            model_hash=f[1],
            width=f[2],
            height=f[3],
            fps=Fraction(f[4], f[5]),
            qstep=f[6],
            coder_id=f[7],
            keyframe_codec_id=f[8],
            keyframe_format=formats[f[9]],
            keyframe_qp=f[10],
            key_feature_sent=bool(f[11] & FLAG_KEY_FEATURE_SENT),
            feature_dim=f[12],
            segment_units=f[13],
            extension=bytes(ext),
        )
        return header, n + 4


# ----------------------------------------------------------------------------- units


def pack_key_payload(keyframe: bytes, key_feature: bytes, side: bytes = b"") -> bytes:
    """Key unit payload: the key-frame picture, the key feature and model side information,
    the first two with varint lengths (the side information runs to the end)."""
    return _varint(len(keyframe)) + keyframe + _varint(len(key_feature)) + key_feature + side


def unpack_key_payload(payload: bytes) -> tuple[bytes, bytes, bytes]:
    """(picture, key_feature, side) of a key unit payload."""
    n, at = _read_varint(payload, 0, "key-frame unit")
    if at + n > len(payload):
        raise BitstreamError("truncated key-frame unit")
    picture = payload[at : at + n]
    m, at = _read_varint(payload, at + n, "key-frame unit")
    if at + m > len(payload):
        raise BitstreamError("truncated key-frame unit")
    return picture, payload[at : at + m], payload[at + m :]


def unit_type(unit: bytes) -> int:
    if not unit or unit[0] not in (KEY, FEATURE):
        raise BitstreamError("not a gfvc unit (unknown unit type byte)")
    return unit[0]


# ----------------------------------------------------------------------------- segments


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _read_varint(data: bytes, at: int, what: str) -> tuple[int, int]:
    v = shift = 0
    while True:
        if at >= len(data):
            raise BitstreamError(f"truncated {what}")
        b = data[at]
        at += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, at
        if shift > 35:
            raise BitstreamError(f"corrupt {what} (length field too long)")


def _rice_table(lengths: list[int]) -> tuple[int, int, bytes]:
    """Code unit lengths in the cheapest of two ways, with the best Rice parameter.

    Mode 0 codes successive differences (lengths that drift slowly), mode 1 offsets from
    the segment's smallest length (lengths that jump around a floor). Returns
    (base, mode << 4 | k, table bytes); ``base`` is the first length (mode 0) or the minimum.
    """
    floor = min(lengths)
    options = [
        (0, lengths[0], [zigzag(b - a) for a, b in zip(lengths, lengths[1:], strict=False)]),
        (1, floor, [v - floor for v in lengths]),
    ]
    best = None
    for mode, base, values in options:
        for k in range(8):
            w = BitWriter()
            for v in values:
                w.rice(v, k)
            w.align()
            if best is None or len(w) < 8 * len(best[2]):
                best = (base, mode << 4 | k, w.getvalue())
    return best  # type: ignore[return-value]


def write_segment(units: list[bytes]) -> bytes:
    """Pack up to 255 units (type byte + payload each) into one CRC-protected segment."""
    if not 1 <= len(units) <= MAX_SEGMENT_UNITS:
        raise ValueError("a segment holds 1 to 255 units")
    has_key = unit_type(units[0]) == KEY
    if any(unit_type(u) != FEATURE for u in units[1:]):
        raise ValueError("only the first unit of a segment may be a key unit")
    head = bytearray([SEGMENT, 1 if has_key else 0, len(units)])
    payloads = [u[1:] for u in units]
    feats = payloads[1:] if has_key else payloads
    if has_key:
        head += _varint(len(payloads[0]))
    if feats:
        base, mode_k, table = _rice_table([len(p) for p in feats])
        head += _varint(base) + bytes([mode_k]) + table
    body = bytes(head) + b"".join(payloads)
    return body + struct.pack(">I", zlib.crc32(body))


def write_end(frames: int) -> bytes:
    body = bytes([END]) + struct.pack(">I", frames)
    return body + struct.pack(">I", zlib.crc32(body))


@dataclass
class SegmentInfo:
    offset: int
    units: int
    has_key: bool
    payload_bytes: int
    total_bytes: int


@dataclass
class ParsedStream:
    """A whole .gfv file split into units, with where every byte went."""

    header: StreamHeader
    header_bytes: int
    units: list[bytes] = field(default_factory=list)
    segments: list[SegmentInfo] = field(default_factory=list)
    end_bytes: int = 0
    frames: int = 0


def iter_units(data: bytes) -> Iterator[tuple[StreamHeader, bytes, SegmentInfo | None]]:
    """Yield (header, unit, segment) for every unit, checking each segment's CRC first.

    Raises BitstreamError on corruption, truncation (no end marker), a unit count that
    disagrees with the end marker, or trailing bytes.
    """
    header, at = StreamHeader.parse(data)
    count = 0
    while True:
        if at >= len(data):
            raise BitstreamError(
                f"truncated bitstream: ends after {count} frames without an end marker"
            )
        kind = data[at]
        if kind == END:
            if len(data) < at + 9:
                raise BitstreamError("truncated bitstream (inside the end marker)")
            (crc,) = struct.unpack(">I", data[at + 5 : at + 9])
            if zlib.crc32(data[at : at + 5]) != crc:
                raise BitstreamError("corrupt bitstream (end marker CRC mismatch)")
            (frames,) = struct.unpack(">I", data[at + 1 : at + 5])
            if frames != count:
                raise BitstreamError(
                    f"corrupt bitstream: end marker says {frames} frames, found {count}"
                )
            if at + 9 != len(data):
                raise BitstreamError(f"{len(data) - at - 9} unexpected bytes after the end marker")
            return
        if kind != SEGMENT:
            raise BitstreamError(
                f"corrupt bitstream (unknown segment type 0x{kind:02x} at byte {at})"
            )
        seg, units = _parse_segment(data, at)
        for u in units:
            count += 1
            yield header, u, seg
        at += seg.total_bytes


def _parse_segment(data: bytes, start: int) -> tuple[SegmentInfo, list[bytes]]:
    what = f"segment at byte {start}"
    if len(data) < start + 3:
        raise BitstreamError(f"truncated bitstream ({what})")
    flags, n = data[start + 1], data[start + 2]
    if flags > 1 or n == 0:
        raise BitstreamError(f"corrupt bitstream ({what} has invalid flags or count)")
    has_key = bool(flags & 1)
    at = start + 3
    lengths: list[int] = []
    if has_key:
        klen, at = _read_varint(data, at, what)
        lengths.append(klen)
    nfeat = n - 1 if has_key else n
    if nfeat:
        base, at = _read_varint(data, at, what)
        if at >= len(data):
            raise BitstreamError(f"truncated bitstream ({what})")
        mode, k = data[at] >> 4, data[at] & 15
        at += 1
        if mode > 1 or k > 7:
            raise BitstreamError(f"corrupt bitstream ({what} has an invalid length table)")
        r = BitReader(memoryview(data)[at:], what)
        if mode == 0:
            feats = [base]
            for _ in range(nfeat - 1):
                feats.append(feats[-1] + unzigzag(r.rice(k, max_quotient=4096)))
        else:
            feats = [base + r.rice(k, max_quotient=4096) for _ in range(nfeat)]
        if any(x < 0 for x in feats):
            raise BitstreamError(f"corrupt bitstream ({what} has negative unit lengths)")
        at += r.byte_pos()
        lengths += feats
    end = at + sum(lengths)
    if end + 4 > len(data):
        raise BitstreamError(f"truncated bitstream ({what} is cut short)")
    (crc,) = struct.unpack(">I", data[end : end + 4])
    if zlib.crc32(data[start:end]) != crc:
        raise BitstreamError(f"corrupt bitstream ({what}: CRC mismatch)")
    units, p = [], at
    for i, ln in enumerate(lengths):
        kind = KEY if (has_key and i == 0) else FEATURE
        units.append(bytes([kind]) + data[p : p + ln])
        p += ln
    info = SegmentInfo(start, n, has_key, sum(lengths), end + 4 - start)
    return info, units


def parse_stream(data: bytes) -> ParsedStream:
    """Parse and verify a whole file into units (used by ``info`` and tests)."""
    header, hlen = StreamHeader.parse(data)
    out = ParsedStream(header=header, header_bytes=hlen)
    for _, unit, seg in iter_units(data):
        out.units.append(unit)
        if seg is not None and (not out.segments or out.segments[-1] is not seg):
            out.segments.append(seg)
    out.frames = len(out.units)
    out.end_bytes = 9
    return out


class SegmentPacker:
    """Groups units into segments as they arrive (a key unit always opens a new one)."""

    def __init__(self, max_units: int = 64) -> None:
        if not 1 <= max_units <= MAX_SEGMENT_UNITS:
            raise ValueError("segment size must be 1..255 units")
        self.max_units = max_units
        self._pending: list[bytes] = []
        self.frames = 0

    def add(self, unit: bytes) -> bytes:
        """Add one unit; returns the bytes of any segment completed by it (may be empty)."""
        out = b""
        kind = unit_type(unit)
        if self._pending and (kind == KEY or len(self._pending) >= self.max_units):
            out = self.flush()
        self._pending.append(unit)
        self.frames += 1
        return out

    def flush(self) -> bytes:
        if not self._pending:
            return b""
        seg = write_segment(self._pending)
        self._pending = []
        return seg

    def finish(self) -> bytes:
        return self.flush() + write_end(self.frames)
