"""The .gfv bitstream: header, segments, units (spec in docs/bitstream.md)."""

from gfvc.bitstream.format import (
    FEATURE,
    KEY,
    ParsedStream,
    SegmentPacker,
    StreamHeader,
    is_packet,
    iter_units,
    open_packet,
    pack_key_payload,
    pack_packet,
    parse_stream,
    unit_type,
    unpack_key_payload,
)

__all__ = [
    "FEATURE",
    "KEY",
    "ParsedStream",
    "SegmentPacker",
    "StreamHeader",
    "is_packet",
    "iter_units",
    "open_packet",
    "pack_key_payload",
    "pack_packet",
    "parse_stream",
    "unit_type",
    "unpack_key_payload",
]
