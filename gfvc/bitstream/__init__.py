"""The .gfv bitstream: header, segments, units (spec in docs/bitstream.md)."""

from gfvc.bitstream.format import (
    FEATURE,
    KEY,
    ParsedStream,
    SegmentPacker,
    StreamHeader,
    iter_units,
    pack_key_payload,
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
    "iter_units",
    "pack_key_payload",
    "parse_stream",
    "unit_type",
    "unpack_key_payload",
]
