from fractions import Fraction

import numpy as np
import pytest

from gfvc.bitstream import FEATURE, KEY, SegmentPacker, StreamHeader, parse_stream
from gfvc.bitstream.format import VERSION, pack_key_payload, unpack_key_payload
from gfvc.errors import BitstreamError


def header(**kw):
    base = dict(
        model_id=1,
        model_hash=bytes(range(8)),
        width=256,
        height=256,
        fps=Fraction(30000, 1001),
        qstep=64.0,
        coder_id=1,
        keyframe_codec_id=1,
        keyframe_format="rgb444",
        keyframe_qp=42,
        key_feature_sent=True,
        feature_dim=60,
        segment_units=16,
        extension=b"abc",
    )
    base.update(kw)
    return StreamHeader(**base)


def make_file(n_frames=100, seed=0, key_every=None, segment_units=16):
    rng = np.random.default_rng(seed)
    h = header(segment_units=segment_units)
    packer = SegmentPacker(segment_units)
    out = h.to_bytes()
    units = []
    for i in range(n_frames):
        if i == 0 or (key_every and i % key_every == 0):
            u = bytes([KEY]) + pack_key_payload(rng.bytes(500 + i), rng.bytes(7), rng.bytes(3))
        else:
            u = bytes([FEATURE]) + rng.bytes(int(np.clip(rng.normal(25, 4), 1, None)))
        units.append(u)
        out += packer.add(u)
    return out + packer.finish(), units


def test_header_round_trip():
    h = header()
    parsed, n = StreamHeader.parse(h.to_bytes() + b"tail")
    assert parsed == h and n == len(h.to_bytes())


def test_file_round_trip_with_key_refresh():
    data, units = make_file(200, key_every=70)
    parsed = parse_stream(data)
    assert parsed.units == units
    assert parsed.frames == 200
    assert [s.has_key for s in parsed.segments].count(True) == 3


def test_framing_costs_under_8_bits_per_inter_frame():
    data, units = make_file(250, segment_units=64)
    payload = sum(len(u) - 1 for u in units)
    overhead_bits = 8 * (len(data) - payload)
    assert overhead_bits / 249 <= 8.0, overhead_bits / 249


def test_every_single_byte_corruption_is_detected():
    data, _ = make_file(40)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x5A
        with pytest.raises(BitstreamError):
            parse_stream(bytes(bad))


def test_every_truncation_is_detected():
    data, _ = make_file(40)
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            parse_stream(data[:n])


def test_trailing_bytes_rejected():
    data, _ = make_file(5)
    with pytest.raises(BitstreamError, match="after the end marker"):
        parse_stream(data + b"\x00")


def test_newer_version_rejected_with_upgrade_hint():
    data = bytearray(header().to_bytes())
    data[4] = VERSION + 1
    with pytest.raises(BitstreamError, match="newer"):
        StreamHeader.parse(bytes(data))


def test_not_a_gfv_file():
    with pytest.raises(BitstreamError, match="not a .gfv"):
        StreamHeader.parse(b"\x00\x00\x00\x18ftypmp42")


def test_key_payload_round_trip_and_truncation():
    p = pack_key_payload(b"x" * 300, b"feat", b"side")
    assert unpack_key_payload(p) == (b"x" * 300, b"feat", b"side")
    with pytest.raises(BitstreamError):
        unpack_key_payload(p[:100])


def test_segment_rules():
    packer = SegmentPacker(4)
    with pytest.raises(BitstreamError):
        packer.add(b"Zoops")
