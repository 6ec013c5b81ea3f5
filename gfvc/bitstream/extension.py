"""The header extension's entries (spec: docs/bitstream.md, "Header extension").

The extension is a list of entries ``tag:u8 length:u8 value[length]``. A reader skips tags
it does not know. Tag 1 lists the spans of frames in which the encoder saw no face (the
camera showed none: the person turned away or left): pairs ``gap:varint length:varint``,
``gap`` counted from the end of the previous span (from frame 0 for the first).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from gfvc.bitstream.format import MAX_EXTENSION, StreamHeader, _read_varint, _varint
from gfvc.errors import BitstreamError

TAG_NO_FACE = 1


def pack_entries(entries: dict[int, bytes]) -> bytes:
    out = bytearray()
    for tag, value in sorted(entries.items()):
        if not 0 <= tag <= 255 or len(value) > 255:
            raise ValueError("an extension entry has a one-byte tag and at most 255 bytes")
        out += bytes([tag, len(value)]) + value
    if len(out) > MAX_EXTENSION:
        raise ValueError(f"the header extension holds at most {MAX_EXTENSION} bytes")
    return bytes(out)


def parse_entries(ext: bytes) -> dict[int, bytes]:
    """Entries by tag; BitstreamError when an entry runs past the end."""
    out: dict[int, bytes] = {}
    at = 0
    while at < len(ext):
        if at + 2 > len(ext) or at + 2 + ext[at + 1] > len(ext):
            raise BitstreamError("corrupt header extension (an entry runs past its end)")
        out[ext[at]] = ext[at + 2 : at + 2 + ext[at + 1]]
        at += 2 + ext[at + 1]
    return out


def with_no_face_spans(header: StreamHeader, spans: list[tuple[int, int]]) -> StreamHeader:
    """``header`` listing ``spans`` ([start, end) frames without a face), as many as fit."""
    entries = parse_entries(header.extension)
    entries.pop(TAG_NO_FACE, None)
    room = MAX_EXTENSION - len(pack_entries(entries)) - 2
    value = bytearray()
    prev = 0
    for start, end in spans:
        item = _varint(start - prev) + _varint(end - start)
        if len(value) + len(item) > min(room, 255):
            break
        value += item
        prev = end
    if value:
        entries[TAG_NO_FACE] = bytes(value)
    return replace(header, extension=pack_entries(entries))


def no_face_spans(header: StreamHeader) -> list[tuple[int, int]]:
    """The spans ([start, end) frames) the header lists as without a face."""
    value = parse_entries(header.extension).get(TAG_NO_FACE, b"")
    spans, at, prev = [], 0, 0
    while at < len(value):
        gap, at = _read_varint(value, at, "header extension")
        length, at = _read_varint(value, at, "header extension")
        spans.append((prev + gap, prev + gap + length))
        prev += gap + length
    return spans


TAG_ENHANCEMENT = 2
ENHANCEMENT_HEVC = 1  # the only base-layer codec so far


@dataclass(frozen=True)
class EnhancementInfo:
    """Extension tag 2 (required when header flag bit 1 is set): the base layer's codec and
    picture size, the first 8 bytes of the fusion network weights' SHA-256, and whether the
    base pictures are foveated (a 12th byte, 1, written only then; 11 bytes: uniform)."""

    size: int
    fusion_hash: bytes
    codec: int = ENHANCEMENT_HEVC
    foveated: bool = False

    def to_bytes(self) -> bytes:
        head = bytes([self.codec]) + self.size.to_bytes(2, "big") + self.fusion_hash
        return head + (b"\x01" if self.foveated else b"")  # uniform: as before maps


def with_enhancement(header: StreamHeader, info: EnhancementInfo) -> StreamHeader:
    entries = parse_entries(header.extension)
    entries[TAG_ENHANCEMENT] = info.to_bytes()
    return replace(header, extension=pack_entries(entries), enhanced=True)


def without_enhancement(header: StreamHeader) -> StreamHeader:
    """``header`` for the same stream with its enhancement layer dropped."""
    if not header.enhanced:
        return header
    entries = parse_entries(header.extension)
    entries.pop(TAG_ENHANCEMENT, None)
    return replace(header, extension=pack_entries(entries), enhanced=False)


def enhancement_info(header: StreamHeader) -> EnhancementInfo | None:
    """The enhancement layer's settings, None for a stream without the layer."""
    if not header.enhanced:
        return None
    value = parse_entries(header.extension).get(TAG_ENHANCEMENT)
    if value is None or len(value) not in (11, 12) or value[0] != ENHANCEMENT_HEVC:
        raise BitstreamError("corrupt bitstream header (enhancement layer settings missing)")
    if len(value) == 12 and value[11] > 1:
        raise BitstreamError("corrupt bitstream header (unknown base-layer sampling)")
    size, fusion_hash = int.from_bytes(value[1:3], "big"), bytes(value[3:11])
    return EnhancementInfo(size, fusion_hash, value[0], value[11:] == b"\x01")
