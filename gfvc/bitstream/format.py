"""The .gfv file format: written and parsed here, and only here. Spec: docs/bitstream.md.

Layout::

    file    = header, segment+, end
    header  = "GFVC", version u8, length u8, fields ..., crc32
    segment = 0x53, flags u8, count u8, unit-length table, payloads, crc32
    end     = 0x45, frames u32, crc32

A *unit* is one frame's data: one type byte (``K`` key frame, ``F`` feature) and its
payload. In a file the type byte is implied by the segment flags (only the first unit of a
segment can be a key unit) and the payload lengths sit in a compact Rice-coded table, so
framing plus integrity costs a few bits per frame while every byte is still covered by a
CRC-32.

A *packet* is the live form of a unit, what the streaming ``Encoder`` emits for a transport
of its own: type byte ``k``/``f``, a 16-bit sequence number and a CRC-16 over the whole
packet, so a receiver notices a lost or damaged unit (``pack_packet`` / ``open_packet``).
"""

from __future__ import annotations

import binascii
import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

from gfvc.bits import BitReader, BitWriter, unzigzag, zigzag
from gfvc.errors import BitstreamError

MAGIC = b"GFVC"
VERSION = 4  # 2: coder statistics reset at every key unit; 3: the enhancement layer (flag bit 1);
# 4: the reference bank (key units fill numbered slots, recall units switch back to one)
MIN_VERSION = 1
SEGMENT = 0x53  # "S"
END = 0x45  # "E"
KEY = 0x4B  # "K": unit type byte of a key-frame unit
FEATURE = 0x46  # "F": unit type byte of a feature unit
KEY_PACKET = 0x6B  # "k": live packet carrying a key-frame unit
FEATURE_PACKET = 0x66  # "f": live packet carrying a feature unit
PACKET_HEADER = 5  # type, sequence number u16, CRC-16
MAX_SEGMENT_UNITS = 255

# Limits a header must respect (docs/bitstream.md, "Header"); the encoder checks the same.
SIZE_RANGE = (16, 4096)  # width and height, even
FPS_RANGE = (Fraction(1, 10), Fraction(240))
QSTEP_RANGE = (1e-3, 1e6)
MAX_FEATURE_DIM = 4096

KEYFRAME_FORMATS = {"yuv420": 0, "rgb444": 1}
FLAG_KEY_FEATURE_SENT = 1
FLAG_ENHANCEMENT = 2  # units carry an enhancement-layer chunk (version 3; extension tag 2)

_HEADER_FIELDS = struct.Struct(">B8sHHHHfBBBBBHB")
MAX_EXTENSION = 255 - _HEADER_FIELDS.size - 1  # the body length is one byte: 225


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
    extension: bytes = b""  # model-specific, up to MAX_EXTENSION (225) bytes
    version: int = VERSION  # format version the stream was written in
    enhanced: bool = False  # units carry an enhancement-layer chunk (its settings: tag 2)

    @property
    def resets_at_key(self) -> bool:
        """Whether the feature coder starts over at every key unit (format version >= 2)."""
        return self.version >= 2

    @property
    def has_bank(self) -> bool:
        """Whether key units carry reference-bank fields and may be recalls (version >= 4)."""
        return self.version >= 4

    def to_bytes(self) -> bytes:
        if len(self.model_hash) != 8:
            raise ValueError("model_hash must be 8 bytes")
        if len(self.extension) > MAX_EXTENSION:
            raise ValueError(f"header extension is limited to {MAX_EXTENSION} bytes")
        if self.version != VERSION:
            raise ValueError(f"this gfvc writes format version {VERSION} only")
        fps = Fraction(self.fps).limit_denominator(65535)
        if fps.numerator > 65535 or fps <= 0:
            raise ValueError(f"frame rate {self.fps} cannot be stored")
        problem = header_problem(self.width, self.height, fps, self.qstep, self.feature_dim)
        if problem:
            raise ValueError(problem)
        flags = (FLAG_KEY_FEATURE_SENT if self.key_feature_sent else 0) | (
            FLAG_ENHANCEMENT if self.enhanced else 0
        )
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
        if version < MIN_VERSION:
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
        ext = body[_HEADER_FIELDS.size + 1 :]
        if len(ext) != ext_len:
            raise BitstreamError(
                f"corrupt bitstream header (extension says {ext_len} bytes, {len(ext)} present)"
            )
        formats = {v: k for k, v in KEYFRAME_FORMATS.items()}
        if f[9] not in formats or f[5] == 0 or f[4] == 0 or f[13] == 0:
            raise BitstreamError("corrupt bitstream header (invalid field values)")
        known = FLAG_KEY_FEATURE_SENT | (FLAG_ENHANCEMENT if version >= 3 else 0)
        if f[11] & ~known:
            raise BitstreamError(f"corrupt bitstream header (unknown flags 0x{f[11]:02x})")
        problem = header_problem(f[2], f[3], Fraction(f[4], f[5]), f[6], f[12])
        if problem:
            raise BitstreamError(f"corrupt bitstream header ({problem})")
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
            version=version,
            enhanced=bool(f[11] & FLAG_ENHANCEMENT),
        )
        return header, n + 4


def header_problem(width: int, height: int, fps: Fraction, qstep: float, dim: int) -> str:
    """What is out of range in these header fields ('' when all are fine)."""
    lo, hi = SIZE_RANGE
    if not (lo <= width <= hi and lo <= height <= hi) or width % 2 or height % 2:
        return f"frame size {width}x{height} outside {lo}..{hi} or odd"
    if not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
        return f"frame rate {float(fps):g} outside {float(FPS_RANGE[0]):g}..{FPS_RANGE[1]}"
    if not (math.isfinite(qstep) and QSTEP_RANGE[0] <= qstep <= QSTEP_RANGE[1]):
        return f"qstep {qstep} outside {QSTEP_RANGE[0]:g}..{QSTEP_RANGE[1]:g}"
    if not 1 <= dim <= MAX_FEATURE_DIM:
        return f"feature dimension {dim} outside 1..{MAX_FEATURE_DIM}"
    return ""


def stored_qstep(qstep: float) -> float:
    """``qstep`` as the header stores it (float32): what both sides compute with."""
    return struct.unpack(">f", struct.pack(">f", qstep))[0]


# ----------------------------------------------------------------------------- units


#: Why the encoder sent a key frame (KeyInfo.reason); informative, shown by ``gfvc info``.
KEY_REASONS = (
    "start",  # 0: first frame
    "periodic",  # 1: --gop, or the rate controller's refresh period
    "request",  # 2: Encoder.request_refresh() (a receiver's back channel)
    "cut",  # 3: the source changed at once (scene cut, another person)
    "drift",  # 4: the rendered face drifted far from the source
    "expression",  # 5: eyes or mouth the reference cannot render
    "lighting",  # 6: the brightness changed
    "face-found",  # 7: the face came back after being lost
    "budget",  # 8: the rate controller had bits to spare (the base layer spent less)
)
QP_UNKNOWN = 255
#: Reference-bank slots (format version 4): key units fill them, recall units switch back.
BANK_SLOTS = 4
_BANK_RESET = 0x10  # bank byte: this key empties every other slot (a bank entry point)
_BANK_RECALL = 0x20  # bank byte: a recall unit (no picture: animate the slot's reference)


@dataclass(frozen=True)
class KeyInfo:
    """What a key unit says about itself: why it was sent, the picture's QP (version >= 2),
    and (version >= 4) the reference-bank slot it fills or recalls, that reference's 16-bit
    tag (a key counter, so a receiver knows it holds the very reference meant), whether it
    empties the bank first, and whether it is a recall."""

    reason: int = 0
    qp: int = QP_UNKNOWN
    slot: int = 0
    tag: int = 0
    reset: bool = True
    recall: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.slot < BANK_SLOTS or not 0 <= self.tag <= 0xFFFF:
            raise ValueError(f"bank slot {self.slot} / tag {self.tag} out of range")

    @property
    def reason_name(self) -> str:
        return KEY_REASONS[self.reason] if self.reason < len(KEY_REASONS) else f"{self.reason}"

    def to_bytes(self) -> bytes:
        bank = self.slot | (_BANK_RESET if self.reset else 0) | (_BANK_RECALL if self.recall else 0)
        return bytes([self.reason, self.qp, bank]) + self.tag.to_bytes(2, "big")

    @classmethod
    def parse(cls, payload: bytes, version: int) -> tuple[KeyInfo, bytes]:
        """The key info at the start of a key unit payload, and the rest."""
        n = 5 if version >= 4 else 2 if version >= 2 else 0
        if len(payload) < n:
            raise BitstreamError("truncated key-frame unit")
        if n < 5:
            return (KeyInfo(payload[0], payload[1]) if n else KeyInfo()), payload[n:]
        bank = payload[2]
        if bank & ~(_BANK_RESET | _BANK_RECALL | 0x0F) or (bank & 0x0F) >= BANK_SLOTS:
            raise BitstreamError(f"corrupt key-frame unit (bank byte 0x{bank:02x})")
        if bank & _BANK_RESET and bank & _BANK_RECALL:
            raise BitstreamError("corrupt key-frame unit (a recall cannot empty the bank)")
        info = KeyInfo(
            payload[0],
            payload[1],
            slot=bank & 0x0F,
            tag=int.from_bytes(payload[3:5], "big"),
            reset=bool(bank & _BANK_RESET),
            recall=bool(bank & _BANK_RECALL),
        )
        return info, payload[5:]


@dataclass(frozen=True)
class KeyUnit:
    info: KeyInfo
    picture: bytes
    feature: bytes
    side: bytes
    enhancement: bytes = b""  # the enhancement layer's chunk (streams with flag bit 1)
    coded: bytes = b""  # a recall unit's feature residual (entropy coded); '' in key units


def pack_key_payload(
    keyframe: bytes,
    key_feature: bytes,
    side: bytes = b"",
    info: KeyInfo | None = None,
    enhancement: bytes | None = None,
) -> bytes:
    """Key unit payload: [key info: reason u8, qp u8, bank u8, tag u16], [the enhancement
    chunk (streams with the layer)], the key-frame picture, the key feature and model side
    information, all but the last with varint lengths (the side information runs to the end).
    ``info`` None: the version-1 layout, without key info."""
    if info is not None and info.recall:
        raise ValueError("a recall unit is packed by pack_recall_payload")
    head = b"" if info is None else info.to_bytes()
    if enhancement is not None:
        head += join_enhancement(enhancement, b"")
    return head + _varint(len(keyframe)) + keyframe + _varint(len(key_feature)) + key_feature + side


def pack_recall_payload(info: KeyInfo, coded: bytes, enhancement: bytes | None = None) -> bytes:
    """Recall unit payload (version 4): [key info with the recall bit], [the enhancement
    chunk], then the frame's feature residual against the recalled reference's key feature,
    entropy coded as a feature unit's (the coder starts over)."""
    if not info.recall or info.reset:
        raise ValueError("a recall unit's key info must have recall set and reset clear")
    head = info.to_bytes()
    if enhancement is not None:
        head += join_enhancement(enhancement, b"")
    return head + coded


def join_enhancement(chunk: bytes, rest: bytes) -> bytes:
    """``rest`` preceded by the enhancement chunk, length first (a feature unit's payload
    starts so; a key unit's follows its two info bytes)."""
    return _varint(len(chunk)) + chunk + rest


def split_enhancement(payload: bytes, what: str) -> tuple[bytes, bytes]:
    """(enhancement chunk, the rest of the payload)."""
    n, at = _read_varint(payload, 0, what)
    if at + n > len(payload):
        raise BitstreamError(f"truncated {what} (enhancement layer)")
    return payload[at : at + n], payload[at + n :]


def read_key_payload(payload: bytes, version: int = VERSION, enhanced: bool = False) -> KeyUnit:
    """Split a key (or recall) unit payload of a stream in format ``version``."""
    info, payload = KeyInfo.parse(payload, version)
    chunk = b""
    if enhanced:
        chunk, payload = split_enhancement(payload, "key-frame unit")
    if info.recall:
        return KeyUnit(info, b"", b"", b"", enhancement=chunk, coded=payload)
    return KeyUnit(info, *unpack_key_payload(payload), enhancement=chunk)


def unpack_key_payload(payload: bytes) -> tuple[bytes, bytes, bytes]:
    """(picture, key_feature, side) of a key unit payload without its key info (version 1
    layout; ``read_key_payload`` reads either)."""
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


# ----------------------------------------------------------------------------- live packets

_PACKET_OF = {KEY: KEY_PACKET, FEATURE: FEATURE_PACKET}
_UNIT_OF = {v: k for k, v in _PACKET_OF.items()}


def _crc16(data: bytes) -> int:
    """CRC-16/XMODEM (polynomial 0x1021, initial value 0, no reflection)."""
    return binascii.crc_hqx(data, 0)


def pack_packet(unit: bytes, seq: int) -> bytes:
    """Live form of ``unit``: type (k/f), sequence number mod 65536, CRC-16, payload."""
    head = bytes([_PACKET_OF[unit_type(unit)]]) + struct.pack(">H", seq & 0xFFFF)
    return head + struct.pack(">H", _crc16(head + unit[1:])) + unit[1:]


def is_packet(data: bytes) -> bool:
    return bool(data) and data[0] in _UNIT_OF


def open_packet(packet: bytes) -> tuple[bytes, int]:
    """(unit, sequence number) of a live packet; damage raises BitstreamError."""
    if not is_packet(packet):
        raise BitstreamError("not a gfvc packet (unknown packet type byte)")
    if len(packet) < PACKET_HEADER:
        raise BitstreamError("truncated packet")
    (crc,) = struct.unpack(">H", packet[3:5])
    if _crc16(packet[:3] + packet[5:]) != crc:
        raise BitstreamError("damaged packet (CRC-16 mismatch)")
    (seq,) = struct.unpack(">H", packet[1:3])
    return bytes([_UNIT_OF[packet[0]]]) + packet[5:], seq


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
