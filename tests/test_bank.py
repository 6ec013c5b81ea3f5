"""The reference bank (format version 4): key units fill slots, recall units switch back to a
reference both sides hold. Built from real clips in ../shared/data/faces."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ToyModel, clip_frames, moving_frames

from gfvc.bitstream import KEY, KeyInfo, SegmentPacker, StreamHeader, parse_stream
from gfvc.codec import Decoder, Encoder, decode_file, stream_report
from gfvc.control.bank import Reference, ReferenceBank
from gfvc.control.rate import RateController
from gfvc.errors import BitstreamError
from gfvc.features.quant import ClosedLoopPredictor
from gfvc.keyframe import keyframe_codec


@pytest.fixture(scope="module")
def aba():
    """Person A, a cut to person B, a cut back to A: (frames, encoder, units)."""
    from gfvc.models import model_class

    a, b = clip_frames("lp_d3.mp4", 60), clip_frames("vr_1.mp4", 30)
    frames = a[:30] + b + a[30:]
    enc = Encoder(model_class("landmark").create(), keyframe_codec("svtav1", qp=40))
    units = [enc.encode_unit(f) for f in frames]
    return frames, enc, units


def _decode(header, units):
    from gfvc.models import model_class

    dec = Decoder(header, model_class("landmark").create())
    return dec, [dec.decode_unit(u) for u in units]


def test_a_cut_back_to_a_person_seen_before_recalls_that_reference(aba):
    frames, enc, units = aba
    assert [(i, r) for i, r, _, _ in enc.keys] == [(0, "start"), (30, "cut")]
    assert len(enc.recalls) == 1
    at, reason, slot = enc.recalls[0]
    assert 60 <= at <= 62 and reason == "cut" and slot == 0  # within three frames of the cut
    info = KeyInfo.parse(units[at][1:], 4)[0]
    assert info.recall and info.slot == 0 and info.tag == 0 and not info.reset
    # a recall costs a feature, not a picture
    assert len(units[at]) < len(units[30]) / 10, (len(units[at]), len(units[30]))
    _, out = _decode(enc.header, units)
    t = at + 2
    err_a = np.abs(out[t].astype(int) - frames[t]).mean()
    err_b = np.abs(out[t].astype(int) - frames[59]).mean()  # still showing B
    assert err_a < err_b / 2, (err_a, err_b)


def test_random_access_after_the_cut_primes_the_bank(aba, tmp_path):
    _, enc, units = aba
    packer = SegmentPacker(enc.header.segment_units)
    data = enc.header.to_bytes() + b"".join(packer.add(u) for u in units) + packer.finish()
    parsed = parse_stream(data)
    assert stream_report(data).frames == len(units)
    # from key frame 1 (B, at frame 30): the recall of A at 60 needs A's key, primed from 0
    n = decode_file(data, tmp_path / "part.rgb", from_key=1)
    assert n == len(units) - 30
    _, full = _decode(parsed.header, parsed.units)
    part = np.fromfile(tmp_path / "part.rgb", dtype=np.uint8).reshape(n, 3, 256, 256)
    assert np.array_equal(part.transpose(0, 2, 3, 1), np.stack(full[30:]))


def test_a_recall_of_a_reference_the_decoder_lacks_is_refused(aba):
    _, enc, units = aba
    from gfvc.models import model_class

    dec = Decoder(enc.header, model_class("landmark").create())
    for u in units[30:60]:  # joined at B's key frame, without priming
        dec.decode_unit(u)
    at = enc.recalls[0][0]
    with pytest.raises(BitstreamError, match="does not hold"):
        dec.decode_unit(units[at])
    # the decoder stays usable: B's reference is still in place
    assert dec.decode_unit(units[30]).shape == (256, 256, 3)


def test_version_3_streams_still_decode(aba):
    """Version 3 key units have two info bytes and no bank: strip the bank fields."""
    frames, enc, units = aba
    import struct
    import zlib

    head = enc.header.to_bytes()
    n = 6 + head[5]
    body = head[:4] + bytes([3]) + head[5:n]
    v3, _ = StreamHeader.parse(body + struct.pack(">I", zlib.crc32(body)))
    assert v3.version == 3 and not v3.has_bank
    # without recalls (watch off), a v4 stream differs from v3 only in the 3 bank bytes
    from gfvc.models import model_class

    plain = Encoder(model_class("landmark").create(), keyframe_codec("svtav1", qp=40), watch=False)
    v4_units = [plain.encode_unit(f) for f in frames[:10]]
    v3_units = [u[:3] + u[6:] if u[0] == KEY else u for u in v4_units]
    _, a = _decode(plain.header, v4_units)
    _, b = _decode(v3, v3_units)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_export_sends_the_recalled_picture_again(aba):
    _, enc, units = aba
    from gfvc.interop.exporter import gfv_to_annexb

    packer = SegmentPacker(enc.header.segment_units)
    data = enc.header.to_bytes() + b"".join(packer.add(u) for u in units) + packer.finish()
    _, report, msgs = gfv_to_annexb(data)
    assert report.frames == len(units)
    assert report.key_pictures == len(enc.keys) + len(enc.recalls)


def test_toy_streams_fill_slots_and_reset_at_entry_points():
    enc = Encoder(ToyModel(64), keyframe_codec("lossless"), gop=5)
    units = [enc.encode_unit(f) for f in moving_frames(12)]
    infos = [KeyInfo.parse(u[1:], 4)[0] for u in units if u[0] == KEY]
    # --gop key frames are entry points: each empties the bank and takes slot 0
    assert [(i.slot, i.tag, i.reset) for i in infos] == [(0, 0, True), (0, 1, True), (0, 2, True)]


def test_bank_slots_least_recently_used_and_tags():
    bank = ReferenceBank(slots=3)
    p = ClosedLoopPredictor.from_ints(np.zeros(2, dtype=np.int64), 1.0)

    def ref(tag):
        return Reference(tag, None, np.zeros(2), p, b"")

    bank.store(bank.slot_for_key(True), ref(0), True)
    for tag in (1, 2):
        bank.store(bank.slot_for_key(False), ref(tag), False)
    assert [s for s, _ in bank.items()] == [0, 1, 2]
    bank.touch(0)  # recalled: slot 1 is now the least recently used
    assert bank.slot_for_key(False) == 1
    assert bank.get(2, 2).tag == 2
    with pytest.raises(BitstreamError):
        bank.get(2, 7)  # the slot holds another reference


def test_snapshot_predictor_is_not_moved_by_the_live_one():
    p = ClosedLoopPredictor.from_ints(np.array([3, 4]), 2.0)
    r = Reference(0, None, np.zeros(2), p, b"")
    p.update(np.array([1, 1]))
    assert np.array_equal(r.predictor().acc, [3, 4])


def test_budget_key_frame_spends_a_surplus():
    """When the stream runs well under its line (the base layer spent less than planned),
    a key frame comes early to spend it on quality; not in the last second."""
    rc = RateController(8, 25.0, (0, 63), expected_frames=250, base_bits_guess=200)
    rc._last_qp, rc._last_key_bits = 50, 2000.0
    rc.after_key(2000)
    for _ in range(40):
        rc.after_base(100)
        rc.after_feature(40)
    assert rc.due() is None  # too soon after the last key frame
    for _ in range(40):
        rc.after_base(100)
        rc.after_feature(40)
    assert rc.due() == "budget"
    rc.frames = 240  # the clip ends within a second
    assert rc.due() is None


def test_a_live_receiver_that_lost_a_packet_resynchronises_at_a_recall(aba):
    """A recall needs only the bank: after a loss, it is an entry point like a key frame."""
    from gfvc.bitstream import pack_packet
    from gfvc.models import model_class

    _, enc, units = aba
    packets = [pack_packet(u, i) for i, u in enumerate(units)]
    rx = Decoder(enc.header.to_bytes(), model_class("landmark").create())
    at = enc.recalls[0][0]
    shown = [rx.receive(p) for i, p in enumerate(packets) if i != 45]  # one B packet lost
    assert shown[45].needs_refresh and not shown[45].decoded  # waits for a key frame
    assert all(s.needs_refresh for s in shown[45 : at - 1])
    assert shown[at - 1].decoded and not shown[at - 1].needs_refresh  # the recall (one fewer)


def test_a_cut_the_input_announces_is_answered_by_a_recall_once(aba):
    """``request_refresh("cut")`` (the crop jumped) may be answered from the bank; the
    request is then spent, not repeated on every later frame."""
    from gfvc.models import model_class

    frames, _, _ = aba
    enc = Encoder(model_class("landmark").create(), keyframe_codec("svtav1", qp=40))
    for f in frames[:60]:  # A, then B from frame 30
        enc.encode_unit(f)
    enc.request_refresh("cut")
    for f in frames[60:70]:  # A again
        enc.encode_unit(f)
    assert [r[:2] for r in enc.recalls] == [(60, "cut")], (enc.keys, enc.recalls)
    assert [k[0] for k in enc.keys] == [0, 30]
