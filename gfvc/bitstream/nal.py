"""NAL-unit level of HEVC and VVC Annex-B streams, as far as SEI carriage needs it.

The GFV and GFVE SEI messages (payloadType 223 and 224) are suffix SEI messages, so they
travel in suffix SEI NAL units: HEVC ``SUFFIX_SEI_NUT`` 40, VVC ``SUFFIX_SEI_NUT`` 24. This
module splits an Annex-B byte stream into NAL units (keeping each unit's exact byte span so
the rest of the stream can be copied untouched), removes and inserts emulation prevention
bytes, and codes the ``sei_rbsp`` (payload type and size bytes, then ``rbsp_trailing_bits``).
Nothing here knows the GFV syntax; ``gfvc.bitstream.sei`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from gfvc.errors import BitstreamError

Codec = Literal["hevc", "vvc"]

#: NAL unit types of the SEI units, per codec.
PREFIX_SEI = {"hevc": 39, "vvc": 23}
SUFFIX_SEI = {"hevc": 40, "vvc": 24}

#: Largest payloadType / payloadSize we accept when parsing (the syntax has no limit; this
#: only stops a hostile run of 0xFF bytes from being taken seriously).
_MAX_FF_RUN = 1 << 16


@dataclass(frozen=True)
class NalUnit:
    """One NAL unit of an Annex-B stream.

    ``start`` is the offset of its start code prefix and ``end`` the offset just past its
    last byte, so ``data[start:end]`` is the unit exactly as it was in the stream (leading
    zero bytes of the start code included).
    """

    codec: Codec
    nal_type: int
    layer_id: int
    temporal_id: int
    start: int
    end: int
    payload_start: int  # first byte after the 2-byte NAL unit header

    def raw(self, data: bytes) -> bytes:
        return data[self.start : self.end]

    def rbsp(self, data: bytes) -> bytes:
        """The RBSP after the NAL header, emulation prevention bytes removed."""
        return unescape_rbsp(data[self.payload_start : self.end])

    @property
    def is_vcl(self) -> bool:
        return self.nal_type < 32 if self.codec == "hevc" else self.nal_type < 12

    @property
    def is_suffix_sei(self) -> bool:
        return self.nal_type == SUFFIX_SEI[self.codec]

    @property
    def is_prefix_sei(self) -> bool:
        return self.nal_type == PREFIX_SEI[self.codec]


@dataclass(frozen=True)
class SeiMessage:
    """One ``sei_message()``: its payloadType and payload bytes (trailing bits included)."""

    payload_type: int
    payload: bytes


# ----------------------------------------------------------------------------- emulation prevention


def escape_rbsp(rbsp: bytes) -> bytes:
    """Insert ``emulation_prevention_three_byte`` after every 0x0000 followed by 0..3.

    A 0x03 is also appended when the RBSP ends in 0x00, as the NAL syntax requires.
    """
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    if rbsp and rbsp[-1] == 0:
        out.append(3)
    return bytes(out)


def unescape_rbsp(ebsp: bytes) -> bytes:
    """Drop the 0x03 of every 0x000003 sequence (the inverse of ``escape_rbsp``)."""
    if b"\x00\x00\x03" not in ebsp:
        return bytes(ebsp)
    out = bytearray()
    zeros = 0
    for b in ebsp:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


# ----------------------------------------------------------------------------- Annex-B


def _start_codes(data: bytes) -> Iterator[tuple[int, int]]:
    """(prefix start, payload start) of every 0x000001 start code; leading zeros included."""
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        s = i
        while s > 0 and data[s - 1] == 0:
            s -= 1
        yield s, i + 3
        i = data.find(b"\x00\x00\x01", i + 3)


def is_annexb(data: bytes) -> bool:
    """True when ``data`` starts like an Annex-B stream: zero bytes, 0x01, a NAL header.

    Cheap and safe to call on any file head (a .gfv starts with "GFVC", MP4 with a box
    size, so neither matches).
    """
    i = 0
    while i < len(data) and i < 64 and data[i] == 0:
        i += 1
    return 2 <= i < 64 and i + 2 < len(data) and data[i] == 1 and not data[i + 1] & 0x80


def _header(codec: Codec, b0: int, b1: int) -> tuple[int, int, int]:
    """(nal_type, layer_id, temporal_id) from the two header bytes."""
    if codec == "hevc":
        return (b0 >> 1) & 0x3F, ((b0 & 1) << 5) | (b1 >> 3), (b1 & 7) - 1
    return b1 >> 3, b0 & 0x3F, (b1 & 7) - 1


def detect_codec(data: bytes, hint: str | None = None) -> Codec:
    """Tell HEVC from VVC by the NAL headers (parameter sets, SEI and AUD types vote).

    ``hint`` (a file suffix such as ".266", or "hevc"/"vvc") breaks a tie.
    """
    votes = {"hevc": 0, "vvc": 0}
    for _, p in _start_codes(data[: 1 << 20]):
        if p + 1 >= len(data):
            break
        b0, b1 = data[p], data[p + 1]
        if b0 & 0x80 or not b1 & 7:
            continue
        # HEVC VPS/SPS/PPS/AUD/EOS/EOB/SEI (32..40): first byte 0x40..0x51, layer 0.
        if 32 <= (b0 >> 1) & 0x3F <= 40 and not b0 & 1 and b1 >> 3 == 0:
            votes["hevc"] += 1
        # VVC: reserved zero bit clear; OPI/DCI/VPS/SPS/PPS/APS/PH/AUD/EOS/EOB/SEI (12..24).
        if not b0 & 0x40 and 12 <= b1 >> 3 <= 24:
            votes["vvc"] += 1
    if votes["hevc"] != votes["vvc"]:
        return "hevc" if votes["hevc"] > votes["vvc"] else "vvc"
    h = (hint or "").lower().lstrip(".")
    if h in ("266", "vvc", "h266", "bit", "vvc1"):
        return "vvc"
    if h in ("265", "hevc", "h265", "bin"):
        return "hevc"
    raise BitstreamError("cannot tell whether this Annex-B stream is HEVC or VVC")


def split_nal_units(
    data: bytes, codec: Codec | None = None, hint: str | None = None
) -> list[NalUnit]:
    """Every NAL unit of an Annex-B stream, in order, with its exact byte span."""
    if not is_annexb(data):
        raise BitstreamError("not an Annex-B HEVC/VVC stream (no start code at the beginning)")
    codec = codec or detect_codec(data, hint)
    starts = list(_start_codes(data))
    units = []
    for k, (s, p) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(data)
        # trailing_zero_8bits belong to no NAL unit; they were counted into the next prefix.
        if end - p < 2:
            raise BitstreamError(f"NAL unit at byte {s} is shorter than its 2-byte header")
        b0, b1 = data[p], data[p + 1]
        if b0 & 0x80:
            raise BitstreamError(f"NAL unit at byte {s} has forbidden_zero_bit set")
        t, layer, tid = _header(codec, b0, b1)
        if tid < 0:
            raise BitstreamError(f"NAL unit at byte {s} has nuh_temporal_id_plus1 equal to 0")
        units.append(NalUnit(codec, t, layer, tid, s, end, p + 2))
    return units


def nal_header(codec: Codec, nal_type: int, layer_id: int = 0, temporal_id: int = 0) -> bytes:
    if codec == "hevc":
        return bytes(
            [(nal_type << 1) | (layer_id >> 5), ((layer_id & 31) << 3) | (temporal_id + 1)]
        )
    return bytes([layer_id & 0x3F, (nal_type << 3) | (temporal_id + 1)])


# ----------------------------------------------------------------------------- SEI rbsp


def _ff_coded(v: int) -> bytes:
    """payloadType / payloadSize coding: 0xFF per full 255, then the remainder byte."""
    return b"\xff" * (v // 255) + bytes([v % 255])


def sei_rbsp(messages: Iterable[SeiMessage]) -> bytes:
    """``sei_rbsp()``: each message's type, size and payload, then rbsp_trailing_bits."""
    out = bytearray()
    for m in messages:
        if m.payload_type < 0:
            raise ValueError("payloadType must be non-negative")
        out += _ff_coded(m.payload_type) + _ff_coded(len(m.payload)) + m.payload
    if not out:
        raise ValueError("an SEI NAL unit needs at least one message")
    return bytes(out) + b"\x80"


def parse_sei_rbsp(rbsp: bytes, where: str = "SEI NAL unit") -> list[SeiMessage]:
    """Split an ``sei_rbsp()`` into messages; checks sizes and the trailing bits."""
    msgs: list[SeiMessage] = []
    i, n = 0, len(rbsp)

    def coded(what: str) -> int:
        nonlocal i
        v = run = 0
        while True:
            if i >= n:
                raise BitstreamError(f"truncated {where} (inside a {what})")
            b = rbsp[i]
            i += 1
            v += b
            if b != 0xFF:
                return v
            run += 1
            if run > _MAX_FF_RUN:
                raise BitstreamError(f"corrupt {where}: {what} is implausibly large")

    while True:
        if i >= n:
            raise BitstreamError(f"{where} has no rbsp_trailing_bits")
        if i == n - 1 and rbsp[i] == 0x80:
            break
        ptype = coded("payloadType")
        size = coded("payloadSize")
        if i + size > n:
            raise BitstreamError(
                f"truncated {where}: payload of type {ptype} says {size} bytes, {n - i} left"
            )
        msgs.append(SeiMessage(ptype, bytes(rbsp[i : i + size])))
        i += size
    return msgs


def sei_nal_unit(
    messages: Iterable[SeiMessage],
    codec: Codec,
    *,
    suffix: bool = True,
    layer_id: int = 0,
    temporal_id: int = 0,
    long_start_code: bool = False,
) -> bytes:
    """A complete SEI NAL unit with its start code (3 bytes unless ``long_start_code``)."""
    nal_type = (SUFFIX_SEI if suffix else PREFIX_SEI)[codec]
    prefix = b"\x00\x00\x00\x01" if long_start_code else b"\x00\x00\x01"
    return (
        prefix
        + nal_header(codec, nal_type, layer_id, temporal_id)
        + escape_rbsp(sei_rbsp(messages))
    )


__all__ = [
    "Codec",
    "NalUnit",
    "PREFIX_SEI",
    "SUFFIX_SEI",
    "SeiMessage",
    "detect_codec",
    "escape_rbsp",
    "is_annexb",
    "nal_header",
    "parse_sei_rbsp",
    "sei_nal_unit",
    "sei_rbsp",
    "split_nal_units",
    "unescape_rbsp",
]
