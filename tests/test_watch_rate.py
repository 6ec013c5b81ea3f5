"""The encoder watches what the decoder will show (cuts, lost faces, lighting) and keeps to a
target rate. Built from real clips in ../shared/data/faces."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from conftest import clip_frames

from gfvc.bitstream import KEY, open_packet
from gfvc.codec import (
    Decoder,
    Encoder,
    EncodeSettings,
    encode_frames,
    stream_report,
)
from gfvc.control.rate import FirstPass, RateController
from gfvc.control.watch import Watch, WatchSettings
from gfvc.keyframe import keyframe_codec


@pytest.fixture(scope="module")
def model():
    from gfvc.models import model_class

    return model_class("landmark").create()


@pytest.fixture(scope="module")
def two_people():
    return clip_frames("lp_d3.mp4", 40), clip_frames("vr_1.mp4", 40)


def _keys(model, frames, **kw):
    model.reset()
    enc = Encoder(model, keyframe_codec("svtav1", qp=45), **kw)
    units = [enc.encode_unit(f) for f in frames]
    return enc, units


def test_cut_to_another_person_sends_a_key_frame_at_once(model, two_people):
    a, b = two_people
    enc, units = _keys(model, a + b)
    cuts = [i for i, reason, _, _ in enc.keys if reason == "cut"]
    assert cuts and 40 <= cuts[0] <= 42, enc.keys
    # the decoder shows the second person from there on: its picture is B's, not A warped
    dec = Decoder(enc.header, type(model).create())
    out = [dec.decode_unit(u) for u in units]
    err_b = np.abs(out[cuts[0] + 2].astype(int) - b[cuts[0] + 2 - 40]).mean()
    err_a = np.abs(out[cuts[0] + 2].astype(int) - a[-1]).mean()
    assert err_b < err_a / 2, (err_b, err_a)


def test_without_the_watch_the_first_person_stays(model, two_people):
    a, b = two_people
    enc, units = _keys(model, a + b, watch=False)
    assert [k[1] for k in enc.keys] == ["start"]


def test_face_lost_and_found_refreshes(model, two_people):
    a, _ = two_people
    blank = [np.full_like(a[0], 90) for _ in range(12)]
    enc, units = _keys(model, a[:30] + blank + a[30:])
    # a new key frame, or a recall of the first one from the bank (the same face comes back)
    after = sorted([(i, r) for i, r, _, _ in enc.keys if i >= 42] + enc.recalls)
    assert after and after[0][0] <= 44, (enc.keys, enc.recalls)  # within three frames
    assert after[0][1] in ("face-found", "cut")
    dec = Decoder(enc.header, type(model).create())
    out = [dec.decode_unit(u) for u in units]
    back = after[0][0] + 1
    err = np.abs(out[back].astype(int) - a[back - 12]).mean()
    assert err < np.abs(out[back].astype(int) - blank[0]).mean() / 2, err


def test_lighting_change_refreshes(model, two_people):
    a, _ = two_people
    ramp = [
        np.clip(f.astype(float) * (1 - 0.02 * max(0, t - 5)), 0, 255).astype(np.uint8)
        for t, f in enumerate(a)
    ]
    enc, _ = _keys(model, ramp)
    assert "lighting" in [r for _, r, _, _ in enc.keys], enc.keys


def test_expression_far_from_the_key_frame_refreshes(model):
    """A neutral key frame cannot render wide-open eyes and mouth: an expression key frame."""
    enc, _ = _keys(model, clip_frames("dt_W009_front_surprised_level3_001.mp4", 115))
    reasons = [r for _, r, _, _ in enc.keys] + [r for _, r, _ in enc.recalls]
    assert "expression" in reasons, enc.keys


def test_steady_talking_head_sends_no_extra_keyclip_frames(model):
    enc, _ = _keys(model, clip_frames("stk_Obama_clip1.mp4", 150))
    assert [k[1] for k in enc.keys] == ["start"], enc.keys


def test_watch_thresholds_on_synthetic_scores():
    w = Watch(WatchSettings(min_gap=2))
    frame = np.full((64, 64, 3), 100, np.uint8)
    w.key(frame)
    assert w.check(w.score(frame, frame, None, True)) is None
    other = np.full((64, 64, 3), 200, np.uint8)
    assert w.check(w.score(other, frame, None, True)) == "cut"  # change 100 > 35
    w.key(other)
    for _ in range(3):
        assert w.check(w.score(other, other, None, False)) is None  # lost: nothing to do
    assert w.check(w.score(other, other, None, True)) == "face-found"


@pytest.mark.parametrize("kbps", [2, 8, 16])
def test_kbps_lands_within_ten_percent_on_a_ten_second_clip(model, kbps):
    frames = clip_frames("lp_d3.mp4", 250)
    model.reset()
    data = encode_frames(frames, EncodeSettings(kbps=kbps), Fraction(25), model=model)
    got = stream_report(data).kbps
    assert abs(got / kbps - 1) <= 0.10, got


def test_live_encoder_keeps_a_per_second_budget_without_bursts(model):
    """The streaming API example: 8 kbps, no key frame longer than a second to send."""
    frames = clip_frames("dpe_d.mp4", 250)
    model.reset()
    enc = Encoder(model, keyframe_codec("svtav1"), kbps=8, burst_s=1.0)
    dec = Decoder(enc.header.to_bytes(), type(model).create())
    sizes = []
    for f in frames:
        packet = enc.encode_frame(f)  # send it
        unit, _ = open_packet(packet)
        sizes.append(8 * len(packet))
        assert dec.receive(packet).decoded
        if unit[0] == KEY:
            assert 8 * len(unit) <= 8000 * 1.0 + 64  # a key frame fits a second of budget
    per_second = [sum(sizes[i : i + 25]) for i in range(0, 250, 25)]
    assert max(per_second) <= 8000 * 2, per_second
    # packets carry 4 bytes more per frame than the file's units (sequence number, CRC-16)
    assert abs(sum(sizes) / 10 / 8000 - 1) <= 0.15, sum(sizes) / 10


def test_rate_controller_sizes_the_key_to_the_budget():
    rc = RateController(2, 25, (0, 63), expected_frames=250)
    sizes = {qp: int(40000 * 2 ** (-qp / 10)) for qp in range(64)}
    plan = rc.choose_key(lambda qp: bytes(sizes[qp] // 8))
    target = 2000 * 10 - rc.feature_bits * 249
    assert plan.bits <= target and sizes[plan.qp - 1] > target


def test_features_dead_zone_follows_the_budget_within_its_range():
    """Features that overspend widen the dead zone, but never past ``DEADZONE_MAX`` (a
    wider one let a closing lid go unsent for frames); features that underspend narrow it
    back to plain rounding."""
    from gfvc.control.rate import DEADZONE_MAX

    rc = RateController(2, 25, (0, 63), expected_frames=250)
    rc.after_key(16000)
    for _ in range(100):  # 400 bits a frame against a 2 kbps line (80 a frame)
        rc.after_feature(400)
    assert rc.deadzone == pytest.approx(DEADZONE_MAX) and DEADZONE_MAX < 1.5
    rc = RateController(2, 25, (0, 63), expected_frames=250)
    rc.after_key(4000)  # leaves 64 bits a frame
    for _ in range(20):  # 20 bits a frame: well under the line
        rc.after_feature(20)
    assert rc.deadzone == pytest.approx(0.5)


def test_info_lists_every_reference(model, two_people, tmp_path):
    from conftest import run_cli

    a, b = two_people
    model.reset()
    data = encode_frames(a + b, EncodeSettings(), Fraction(25), model=model)
    (tmp_path / "x.gfv").write_bytes(data)
    import json

    refs = json.loads(run_cli("info", tmp_path / "x.gfv", "--json").output)["references"]
    assert [r["reason"] for r in refs][:2] == ["start", "cut"]
    assert all(r["picture_bits"] > 0 and r["qp"] == 40 for r in refs)
    assert "reference at frame" in run_cli("info", tmp_path / "x.gfv").output


def test_retarget_carries_at_most_a_second_of_balance():
    rc = RateController(8, 25, (0, 63))
    for _ in range(50):  # two seconds spending nothing: 16 kbit unspent
        rc.after_feature(0)
    rc.retarget(2)
    # the line now runs at 2 kbps; of the 16 kbit saved only one second (2 kbit) carries over
    assert rc.budget_until(0) == pytest.approx(2000)
    assert rc.budget_until(25) == pytest.approx(4000)
    rc.spent += 100_000  # a huge overspend at the new rate: the debt is capped the same way
    rc.retarget(4)
    assert rc.budget_until(0) == pytest.approx(-4000)
    with pytest.raises(ValueError):
        rc.retarget(0)


def test_set_kbps_moves_a_live_encoders_spend():
    """A call's rate slider: the same moving picture at 64 then 4 kbps spends less after."""
    from conftest import ToyModel, moving_frames

    from gfvc.errors import InputError

    frames = moving_frames(100, size=64)
    enc = Encoder(ToyModel(64), keyframe_codec("x265"), gop=25, watch=False)
    assert enc.rate is None
    with pytest.raises(InputError, match="kbps"):
        enc.set_kbps(-1)
    enc.set_kbps(64)
    assert enc.rate is not None
    enc.rate.max_period = 1.0  # a key frame each second, so both halves contain two
    enc.rate.period_frames = 25
    first = sum(len(enc.encode_frame(f)) for f in frames[:50])
    enc.set_kbps(4)
    second = sum(len(enc.encode_frame(f)) for f in frames[50:])
    assert second < first / 2, (first, second)
    assert len(enc.keys) >= 4


def test_skipped_frames_count_as_time_for_the_budget():
    """A live sender that drops every other frame still spends its rate per second."""
    from conftest import ToyModel, moving_frames

    frames = moving_frames(100, size=64)
    spent = {}
    for drop in (False, True):
        enc = Encoder(ToyModel(64), keyframe_codec("x265"), kbps=16, watch=False)
        enc.rate.max_period = 1.0
        enc.rate.period_frames = 25
        total = 0
        for i, f in enumerate(frames):
            if drop and i % 2:
                enc.skip()
                continue
            total += len(enc.encode_frame(f))
        spent[drop] = 8 * total / 4  # bits per second over the 4 s
    assert enc.frame_index == 50  # sequence numbers count coded frames only
    assert spent[True] > 0.6 * spent[False], spent


def test_eyes_opening_beyond_a_downcast_reference_recall_an_open_eyed_one(model, monkeypatch):
    """lp_d3 looks down (eyes nearly closed) around frame 143 and opens her eyes from 170: a
    reference coded at 143 cannot show open eyes (a warp closes eyes, it cannot open them).
    The encoder answers with a recall of the open-eyed first reference, even when the budget
    has no room for a key frame."""
    frames = clip_frames("lp_d3.mp4", 200)
    enc, _ = _keys(model, frames[:143])
    scheduled = enc._scheduled_key
    monkeypatch.setattr(
        enc, "_scheduled_key", lambda: scheduled() or ("periodic" if len(enc.keys) == 1 else None)
    )
    monkeypatch.setattr(enc, "_key_affordable", lambda: False)  # no room for a key frame
    for f in frames[143:]:
        enc.encode_unit(f)
    assert [k[0] for k in enc.keys] == [0, 143]
    assert enc.recalls and enc.recalls[0][1:] == ("expression", 0) and enc.recalls[0][0] >= 168


def test_a_refresh_never_replaces_a_good_reference_with_a_coarse_one():
    """After a key picture at the quality floor the controller plans refreshes more often, to
    spend what features leave. When the budget at the planned moment buys less than half the
    last picture (a much coarser reference), the refresh waits; at the longest period it comes
    anyway."""
    rc = RateController(8, 25, (0, 63))
    big = 60_000  # a floor-QP key picture: more than seven seconds of budget
    rc.choose_key(lambda qp: bytes(big // 8))
    rc.after_key(big)
    assert rc.period_frames < 250  # refreshes planned sooner than every 10 s
    for _ in range(rc.period_frames):
        rc.after_feature(300)
        assert rc.due() is None  # the budget buys a much coarser picture only
    while rc._since_key < 250:
        rc.after_feature(300)
    assert rc.due() == "periodic"


def test_a_reused_model_codes_a_stream_as_a_fresh_one(model, two_people):
    """Nothing from an earlier stream (FaceMesh's tracking, the fallback pose) carries over:
    the model's second stream is the one a fresh model codes."""
    a, b = two_people

    def code(m, frames):
        enc = Encoder(m, keyframe_codec("svtav1", qp=45), kbps=8)
        return [enc.encode_unit(f) for f in frames]

    fresh = code(type(model).create(), a)
    code(model, b[:20])
    assert code(model, a) == fresh


def test_first_pass_shares_the_key_budget_between_the_keys_to_come():
    """A second pass gives each key frame an equal part of what the budget leaves for the
    key frames still to come (a "budget" refresh spent a surplus and is decided again), and
    sends the periodic refreshes where the first pass did."""
    plan = FirstPass(keys=((0, "start"), (50, "budget"), (80, "periodic")), frames=100)
    assert plan.keys_after(0) == 1 and plan.keys_after(80) == 0
    two = RateController(16, 25, (0, 63), expected_frames=100, base_bits_guess=520, first_pass=plan)
    one = RateController(16, 25, (0, 63), expected_frames=100, base_bits_guess=520)
    per_frame = two.feature_bits + 520
    assert two.key_target() == pytest.approx((16000 * 4 - two.spent - per_frame * 98) / 2)
    assert one.key_target() == pytest.approx(16000 * 4 - one.spent - per_frame * 99)
    # with what the first pass's other units cost, exactly that is reserved for them
    inter = (0,) + (600,) * 49 + (0,) + (600,) * 29 + (0,) + (600,) * 19
    measured = RateController(
        16,
        25,
        (0, 63),
        expected_frames=100,
        base_bits_guess=520,
        first_pass=FirstPass(plan.keys, 100, inter),
    )
    assert measured.key_target() == pytest.approx((16000 * 4 - measured.spent - 600 * 97) / 2)
    assert plan.inter_bits_from(0) is None and measured.first_pass.inter_bits_from(99) == 600
    two.frames = two._since_key = 80
    assert two.due() == "periodic"
    two.frames = two._since_key = 79
    assert two.due() is None  # the one-pass period (10 s) plays no part


def test_two_passes_give_every_shot_a_usable_key_frame(model):
    """Three shots of 3 s at 8 kbps: one pass sizes the first key frame for ten seconds and
    the last cut's key frame finds the budget spent; two passes share it out."""
    frames = clip_frames("lp_d3.mp4", 75) + clip_frames("vr_1.mp4", 75)
    frames += clip_frames("dpe_d.mp4", 75)
    qps, kbps = {}, {}
    for two in (False, True):
        model.reset()
        enc = Encoder(model, keyframe_codec("svtav1"), kbps=8, expected_frames=225)
        if two:
            for f in frames:
                enc.encode_unit(f)
            model.reset()
            plan = enc.first_pass()
            assert len(plan.inter) == 225 and [plan.inter[k] for k in (0, 75, 150)] == [0] * 3
            assert min(plan.inter[1:75]) > 0
            enc = Encoder(
                model, keyframe_codec("svtav1"), kbps=8, expected_frames=225, first_pass=plan
            )
        bits = sum(8 * len(enc.encode_unit(f)) for f in frames)
        qps[two], kbps[two] = [k[2] for k in enc.keys], bits / 9 / 1000
        assert [k[0] for k in enc.keys] == [0, 75, 150]
    assert max(qps[True]) - min(qps[True]) <= 10 and max(qps[True]) < max(qps[False]), qps
    assert abs(kbps[True] / 8 - 1) <= 0.03, kbps
