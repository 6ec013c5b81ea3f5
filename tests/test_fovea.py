"""Foveated base pictures (issue 13): the sampling maps, their 5 signalled bytes, and streams
whose base layer uses them."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import clip_frames

from gfvc.bitstream.extension import (
    TAG_ENHANCEMENT,
    EnhancementInfo,
    enhancement_info,
    pack_entries,
    with_enhancement,
)
from gfvc.bitstream.format import StreamHeader
from gfvc.enhance.base_layer import BaseLayerDecoder, BaseLayerEncoder
from gfvc.enhance.fovea import (
    GAIN_BY_BASE_SIZE,
    Fovea,
    defoveate,
    down_matrix,
    downscale,
    fovea_for,
    foveate,
    up_matrix,
)
from gfvc.errors import BitstreamError


@pytest.fixture(scope="module")
def frames():
    return clip_frames("lp_d3.mp4", 12)


def _up(base: np.ndarray, f: Fovea, size: int) -> np.ndarray:
    t = torch.from_numpy(base).permute(2, 0, 1)[None].float() / 255
    return (defoveate(t, f, size)[0].permute(1, 2, 0) * 255).round().byte().numpy()


def _err(a: np.ndarray, b: np.ndarray, box: slice) -> float:
    return float(np.abs(a[box, box].astype(float) - b[box, box]).mean())


def test_maps_average_and_interpolate():
    d = down_matrix(256, 128, 0.5, 0.2, 1.0)
    u = up_matrix(256, 128, 0.5, 0.2, 1.0)
    assert d.shape == (128, 256) and u.shape == (256, 128)
    assert np.allclose(d.sum(1), 1, atol=1e-5) and np.allclose(u.sum(1), 1, atol=1e-5)
    assert (d >= 0).all()
    # base pixels are narrower (fewer source pixels) at the centre than at the borders
    width = (d > 0).sum(1)
    assert width[64] < width[0] and width[64] < width[-1]
    # gain 0 is plain area averaging
    flat = down_matrix(256, 128, 0.5, 0.2, 0.0)
    assert np.allclose(flat[:, :4], [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]] + [[0] * 4] * 126)


def test_foveation_buys_detail_at_the_centre_for_detail_at_the_borders(frames):
    f, flat = Fovea(0.5, 0.5, 0.2, 0.2, 1.0), Fovea(gain=0.0)
    img = frames[0]
    sharp, uniform = _up(foveate(img, f, 128), f, 256), _up(foveate(img, flat, 128), flat, 256)
    centre, whole = slice(96, 160), slice(0, 256)
    assert _err(img, sharp, centre) < 0.9 * _err(img, uniform, centre)
    gap = foveate(img, flat, 128).astype(int) - downscale(img, 128)
    assert np.abs(gap).max() <= 1  # gain 0: area averaging (up to rounding of halves)
    assert _err(img, sharp, whole) < 2 * _err(img, uniform, whole)  # and not much worse overall


def test_fovea_bytes_round_trip_and_refuse_damage():
    f = Fovea(0.47, 0.58, 0.2, 0.25, 1.5).quantized()
    assert Fovea.from_bytes(f.to_bytes()) == f and len(f.to_bytes()) == 5
    with pytest.raises(BitstreamError, match="spread"):
        Fovea.from_bytes(bytes([128, 128, 0, 50, 16]))
    with pytest.raises(BitstreamError, match="sampling map"):
        Fovea.from_bytes(b"\x80\x80")


def test_fovea_centres_between_eyes_and_mouth():
    eyes = np.array([[100.0, 110], [156, 110]])
    mouth = np.array([[120.0, 180], [136, 180]])
    f = Fovea.around(eyes, mouth, 256)
    assert f.cx == pytest.approx(0.5, abs=0.01) and f.cy == pytest.approx(145 / 256, abs=0.01)
    assert Fovea.around(eyes[:0], mouth, 256) == Fovea().quantized()


def test_foveated_base_stream_carries_its_map_at_each_restart(frames):
    f = Fovea(0.45, 0.6, 0.2, 0.2, 1.0).quantized()
    enc, dec = BaseLayerEncoder(128, qp=30, foveated=True), BaseLayerDecoder(128, foveated=True)
    chunks = [enc.encode(x, restart=i % 6 == 0, fovea=f) for i, x in enumerate(frames)]
    assert chunks[0][:5] == f.to_bytes() and chunks[6][:5] == f.to_bytes()
    pics = [dec.decode(c, restart=i % 6 == 0) for i, c in enumerate(chunks)]
    assert dec.fovea == f and all(p.shape == (128, 128, 3) for p in pics)
    # damaged map bytes in a key picture: refused, and the old stream stays in place
    bad = bytes([200, 200, 1, 1, 16]) + chunks[6][5:]
    with pytest.raises(BitstreamError):
        dec.decode(bad, restart=True)
    assert dec.fovea == f


def test_enhancement_settings_old_and_new():
    head = StreamHeader(8, b"\0" * 8, 256, 256, Fraction(25), 1.0, 1, 1, "yuv420", 40, True, 28)
    new = with_enhancement(head, EnhancementInfo(128, b"h" * 8, foveated=True))
    assert enhancement_info(new).foveated
    old = EnhancementInfo(64, b"h" * 8).to_bytes()[:11]  # written before foveation: uniform
    info = enhancement_info(replace(new, extension=pack_entries({TAG_ENHANCEMENT: old})))
    assert info.size == 64 and not info.foveated
    bad = pack_entries({TAG_ENHANCEMENT: old + b"\x07"})
    with pytest.raises(BitstreamError, match="sampling"):
        enhancement_info(replace(new, extension=bad))


def test_encoder_maps_the_face_at_128_and_keeps_64_uniform(frames):
    eyes, mouth = np.array([[100.0, 110]]), np.array([[128.0, 180]])
    assert fovea_for((eyes, mouth), 256, 128).gain == GAIN_BY_BASE_SIZE[128] > 0
    assert fovea_for((eyes, mouth), 256, 64).gain == 0.0
    assert fovea_for(None, 256, 128) == Fovea(gain=GAIN_BY_BASE_SIZE[128]).quantized()


def test_stream_key_units_carry_the_map_and_a_damaged_map_is_refused(frames):
    from gfvc.bitstream import parse_stream
    from gfvc.bitstream.format import read_key_payload
    from gfvc.codec import Decoder, EncodeSettings, build_model, encode_frames

    model = build_model("landmark")
    data = encode_frames(
        frames[:6], EncodeSettings(base_size=128, base_qp=36), Fraction(25), model=model
    )
    parsed = parse_stream(data)
    assert enhancement_info(parsed.header).foveated
    unit = parsed.units[0]
    key = read_key_payload(unit[1:], parsed.header.version, True)
    f = Fovea.from_bytes(key.enhancement[:5])
    assert f.gain == GAIN_BY_BASE_SIZE[128] and 0.3 < f.cy < 0.8 and 0.3 < f.cx < 0.7  # on the face
    at = unit.index(key.enhancement)
    bad = bytearray(unit)
    bad[at + 2] = 0  # sx: no spread
    dec = Decoder(parsed.header, model)
    with pytest.raises(BitstreamError, match="sampling map"):
        dec.decode_unit(bytes(bad))
    assert dec.decode_unit(unit).shape == (256, 256, 3)  # the intact unit still decodes
