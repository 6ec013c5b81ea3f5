"""Streaming encoder/decoder and file round trips."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ToyModel, ToySentModel, clip, moving_frames, write_video

from gfvc.bitstream import KEY, SegmentPacker, parse_stream
from gfvc.codec import Decoder, Encoder, EncodeSettings, decode_file, encode_file, stream_report
from gfvc.errors import BitstreamError, CheckpointError, GfvcError, InputError
from gfvc.io import VideoReader
from gfvc.keyframe import keyframe_codec


def code(model_cls, frames, **kw):
    enc = Encoder(model_cls(64), keyframe_codec("lossless"), **kw)
    enc.trace = []
    units = [enc.encode_unit(f) for f in frames]
    dec = Decoder(enc.header, model_cls(64))
    dec.trace = []
    out = [dec.decode_unit(u) for u in units]
    return enc, dec, units, out


@pytest.mark.parametrize("model_cls", [ToyModel, ToySentModel])
@pytest.mark.parametrize("coder", ["range", "expgolomb"])
def test_streaming_round_trip_integers_match(model_cls, coder):
    frames = moving_frames(40)
    enc, dec, units, out = code(model_cls, frames, coder=coder)
    assert len(out) == 40
    assert units[0][0] == KEY and all(u[0] != KEY for u in units[1:])
    for a, b in zip(enc.trace, dec.trace, strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(out[0], frames[0])  # lossless key frame
    # the decoder's feature follows the encoder's analysis within half a quantization step
    m = ToyModel(64)
    base = np.zeros(16) if model_cls.send_key_feature else m.analyse(out[0])
    recon = base + dec.trace[-1] / enc.qstep
    assert np.abs(recon - m.analyse(frames[-1])).max() <= 0.5 / enc.qstep + 1e-12


def test_gop_sends_key_frames_and_resets_prediction():
    frames = moving_frames(25)
    enc, dec, units, out = code(ToyModel, frames, gop=10)
    assert [i for i, u in enumerate(units) if u[0] == KEY] == [0, 10, 20]
    assert np.array_equal(out[10], frames[10])


def test_decoder_refuses_a_different_model():
    enc = Encoder(ToyModel(64), keyframe_codec("lossless"))
    other = ToyModel(64)
    other.config_dict = lambda: {"model": "toy", "size": 64, "variant": 2}  # type: ignore[method-assign]
    with pytest.raises(CheckpointError, match="hash mismatch"):
        Decoder(enc.header, other)


def test_feature_unit_before_key_unit_is_an_error():
    enc = Encoder(ToyModel(64), keyframe_codec("lossless"))
    frames = moving_frames(2)
    enc.encode_unit(frames[0])
    unit = enc.encode_unit(frames[1])
    with pytest.raises(BitstreamError, match="before any key"):
        Decoder(enc.header, ToyModel(64)).decode_unit(unit)


def test_wrong_frame_shape_is_an_input_error():
    enc = Encoder(ToyModel(64), keyframe_codec("lossless"))
    with pytest.raises(InputError, match=r"\(64, 64, 3\) uint8"):
        enc.encode_unit(np.zeros((32, 32, 3), np.uint8))


def test_closed_encoder_refuses_work():
    enc = Encoder(ToyModel(64), keyframe_codec("lossless"))
    enc.close()
    with pytest.raises(GfvcError, match="closed"):
        enc.encode_unit(moving_frames(1)[0])


def test_file_round_trip_and_bit_accounting(tmp_path):
    src = tmp_path / "in.rgb"
    write_video(src, moving_frames(30))
    gfv = tmp_path / "out.gfv"
    s = EncodeSettings(
        model="toy", size=64, crop=False, keyframe_codec="x265", qp=30, raw_size=(64, 64)
    )
    rep = encode_file(src, gfv, s)
    data = gfv.read_bytes()
    assert rep.frames == 30
    assert rep.keyframe_bits + rep.feature_bits + rep.overhead_bits == 8 * len(data)
    assert rep.keyframe_bits > 0 and rep.feature_bits > 0
    assert (
        rep.overhead_bits / 29 <= 8 + 8 * 60 / 29
    )  # header + end marker amortised over a short clip
    dst = tmp_path / "dec.y4m"
    assert decode_file(gfv, dst) == 30
    with VideoReader(dst) as r:
        assert sum(1 for _ in r) == 30


def test_corrupt_file_writes_no_output(tmp_path):
    src = tmp_path / "in.rgb"
    write_video(src, moving_frames(10))
    gfv = tmp_path / "out.gfv"
    encode_file(
        src,
        gfv,
        EncodeSettings(
            model="toy", size=64, crop=False, keyframe_codec="lossless", raw_size=(64, 64)
        ),
    )
    data = bytearray(gfv.read_bytes())
    data[len(data) // 2] ^= 1
    bad = tmp_path / "bad.gfv"
    bad.write_bytes(bytes(data))
    with pytest.raises(BitstreamError):
        decode_file(bad, tmp_path / "out.mp4")
    assert not list(tmp_path.glob("out.mp4*"))


@pytest.mark.slow
def test_mesh_on_real_clip_500_frames_exact_integers():
    """500+ frames of real FaceMesh features: decoder integers equal encoder integers."""
    from gfvc.codec import FramePreparer
    from gfvc.models.mesh import MeshModel

    frames = []
    for name in ("lp_d3.mp4", "lp_d0.mp4", "lp_d12.mp4"):
        prep = FramePreparer(clip(name), EncodeSettings(crop=True))
        frames += list(prep)
        prep.close()
    assert len(frames) >= 500
    enc = Encoder(MeshModel(), keyframe_codec("x265", qp=37))
    enc.trace = []
    units = [enc.encode_unit(f) for f in frames]
    dec = Decoder(enc.header, MeshModel())
    dec.trace = []
    out = [dec.decode_unit(u) for u in units]
    assert len(out) == len(frames)
    assert all(np.array_equal(a, b) for a, b in zip(enc.trace, dec.trace, strict=True))
    feats = [u for u in units if u[0] != KEY]
    bits = sum(8 * (len(u) - 1) for u in feats) / len(feats)
    assert bits < 400, bits  # features stay compact on real motion
    # three clips of different people back to back: the watch sends a key frame at each cut
    cuts = [i for i, reason, _, _ in enc.keys if reason == "cut"]
    assert len(cuts) >= 2, enc.keys


@pytest.mark.slow
def test_encode_decode_lp_d3_same_frame_count(tmp_path):
    gfv = tmp_path / "lp_d3.gfv"
    rep = encode_file(clip("lp_d3.mp4"), gfv, EncodeSettings(frames=60))
    assert rep.frames == 60
    assert decode_file(gfv, tmp_path / "lp_d3.mp4") == 60
    with VideoReader(tmp_path / "lp_d3.mp4") as r:
        assert r.info.width == 256 and sum(1 for _ in r) == 60
    parsed = parse_stream(gfv.read_bytes())
    assert stream_report(gfv.read_bytes()).total_bits == 8 * len(gfv.read_bytes())
    assert parsed.header.key_feature_sent


def test_segment_packer_and_stream_report_agree():
    enc = Encoder(ToyModel(64), keyframe_codec("lossless"))
    packer = SegmentPacker(8)
    data = enc.header.to_bytes()
    for f in moving_frames(20):
        data += packer.add(enc.encode_unit(f))
    data += packer.finish()
    rep = stream_report(data)
    assert rep.frames == 20 and rep.total_bits == 8 * len(data)


def test_deadzone_holds_small_moves_and_rounds_larger_ones():
    from gfvc.features.quant import ClosedLoopPredictor

    p = ClosedLoopPredictor.from_ints(np.zeros(4, np.int64), 1.0)
    x = np.array([0.55, 0.69, 0.71, -1.4])
    assert p.residual(x).tolist() == [1, 1, 1, -1]  # plain rounding
    assert p.residual(x, deadzone=0.7).tolist() == [0, 0, 1, -1]


def test_unset_keyframe_codec_and_qp_fall_back_to_model_and_codec_defaults():
    from gfvc.codec import EncodeSettings, build_model, settings_keyframe

    mesh = build_model("mesh")
    kf = settings_keyframe(EncodeSettings(model="mesh"), mesh)
    assert (kf.name, kf.qp) == ("x265", 32)
    kf = settings_keyframe(EncodeSettings(model="mesh", keyframe_codec="svtav1", qp=50), mesh)
    assert (kf.name, kf.qp, kf.options["preset"]) == ("svtav1", 50, 4)
    lm = build_model("landmark")
    assert settings_keyframe(EncodeSettings(), lm).name == lm.default_keyframe_codec == "svtav1"
