"""Follow the face: a stabilised crop path, refreshes where the crop jumps or the face is
lost and found, one subject among several faces, spans without a face listed by `gfvc info`
(clips made from the real clips, small and short; the dlib numbers are in
benchmarks/bench_real_input.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_one_line_error, clip, run_cli
from realclips import face_frames, leave_and_return, pan, pan_path, two_people, write_clip

from gfvc.bitstream import StreamHeader
from gfvc.bitstream.extension import no_face_spans, parse_entries, with_no_face_spans
from gfvc.errors import BitstreamError
from gfvc.io.track import plan_crops, track_face

W, H, SIDE = 480, 270, 128


@pytest.fixture(scope="module")
def faces():
    return face_frames(clip("stk_Obama_clip1.mp4"), 40, side=SIDE)


def _centre(b):
    return b.x + b.size / 2, b.y + b.size / 2


def test_crop_follows_a_pan_smoothly_without_refresh(faces):
    n = len(faces)
    xs = np.linspace(60, 280, n)  # 140 px/s: leaning and walking speed
    ys = (H - SIDE) / 2 + 12 * np.sin(np.linspace(0, 2 * np.pi, n))
    tr = track_face(pan(faces, W, H, xs, ys), 25.0)
    assert tr.shots == [(0, len(faces))] and tr.lost == [] and tr.refresh == []
    cx = np.array([_centre(b)[0] for b in tr.boxes])
    face_cx = xs + SIDE / 2
    # the face stays in the middle of the crop, and the path is smooth (no per-frame jitter)
    assert np.max(np.abs(cx - face_cx) / tr.boxes[0].size) < 0.2
    assert np.max(np.abs(np.diff(cx, 2))) < 4
    assert len({b.size for b in tr.boxes}) == 1


def test_a_cut_is_a_refresh(faces):
    xs, ys = pan_path(len(faces), W, H, SIDE, jump_at=20)
    xs[:] = 40  # still, then a jump to the other side
    xs[20:] = W - SIDE - 40
    tr = track_face(pan(faces, W, H, xs, ys), 25.0)
    assert [s for s, _ in tr.shots] == [0, 20] and 20 in tr.refresh
    assert _centre(tr.boxes[19])[0] < W / 2 < _centre(tr.boxes[20])[0]


def test_a_cut_to_another_person_is_followed_from_the_cut(faces):
    """Shot A (one person, left), then shot B (someone else, bigger, right): the crop moves to
    B at the cut with one key frame there, instead of coding B's shot as a lost span."""
    other = face_frames(clip("stk_feifeili_clip1.mp4"), 30, side=SIDE + 40)
    _, ys = pan_path(20, W, H, SIDE)
    shot_a = pan(faces[:20], W, H, np.full(20, 40.0), ys)
    shot_b = pan(other, W, H, np.full(30, W - SIDE - 60.0), np.full(30, 40.0))
    tr = track_face(shot_a + shot_b, 25.0)
    assert tr.lost == [] and [s for s, _ in tr.shots] == [0, 20]
    assert tr.refresh == [20] and tr.refresh_reasons[20] == "cut"
    assert _centre(tr.boxes[19])[0] < W / 2 < _centre(tr.boxes[20])[0]
    assert tr.boxes[20].size > tr.boxes[19].size


def test_plan_crops_bridges_flicker_and_plans_lost_spans():
    box = (200.0, 150.0, 80.0)
    raw = [box] * 10 + [None] * 2 + [box] * 10 + [None] * 30 + [box] * 8
    tr = plan_crops(raw, 640, 360, 25.0, 1.8)
    assert tr.shots == [(0, 22), (52, 60)] and tr.lost == [(22, 52)]
    assert tr.refresh == [22, 34, 46, 52]  # lost, every 0.5 s while lost, found
    assert tr.boxes[30] == tr.boxes[21]  # held where the face was last seen
    head = plan_crops([None] * 5 + raw, 640, 360, 25.0, 1.8)
    assert head.lost[0] == (0, 5) and head.boxes[0] == head.boxes[5]


def test_one_subject_among_two_faces(faces):
    other = face_frames(clip("stk_feifeili_clip1.mp4"), len(faces), side=SIDE - 40)
    frames = two_people(faces, other, W, H, grow_b=2.0)  # the right one ends up the biggest
    left = track_face(frames, 25.0)
    assert all(_centre(b)[0] < W / 2 for b in left.boxes) and left.refresh == []
    right = track_face(frames, 25.0, face=1)
    assert all(_centre(b)[0] > W / 2 for b in right.boxes)


def test_extension_lists_spans_and_refuses_damage():
    h = StreamHeader(8, bytes(8), 256, 256, 25, 1.0, 1, 2, "yuv420", 40, True, 28)
    spans = [(0, 10), (25, 60), (100, 101)]
    h2 = with_no_face_spans(h, spans)
    assert no_face_spans(StreamHeader.parse(h2.to_bytes())[0]) == spans
    many = with_no_face_spans(h, [(i * 3, i * 3 + 1) for i in range(500)])
    assert len(many.to_bytes()) < 300 and len(no_face_spans(many)) > 50
    with pytest.raises(BitstreamError):
        parse_entries(bytes([1, 9, 0]))


def test_leaving_and_coming_back_end_to_end(tmp_path, faces):
    """Nobody at first, then the person, then they leave and come back: no crash, key frames
    where the camera changes, the spans in `gfvc info`, a face in view whenever one is."""
    frames = leave_and_return(faces[:36], W, H, (14, 24))
    frames = frames[6:]  # starts while the person is walking in -> no face at the start
    frames[:4] = [np.full_like(frames[0], 100)] * 4
    src = write_clip(tmp_path / "walk.mp4", frames)
    gfv = tmp_path / "walk.gfv"
    res = run_cli("encode", src, "-o", gfv, "-q", "--keyframe-codec", "x265", "--qp", "40")
    assert res.exit_code == 0, res.output
    res = run_cli("info", gfv, "--json")
    d = json.loads(res.output)
    spans = d["no_face_spans"]
    assert spans and spans[0][0] == 0 and len(spans) >= 2
    keys = set(d["key_frame_indices"])
    assert all(s in keys for s, _ in spans[1:]) and all(
        e in keys for _, e in spans if e < len(frames)
    )
    assert "no face" in run_cli("info", gfv).output
    out = tmp_path / "walk.y4m"
    assert run_cli("decode", gfv, "-o", out, "-q").exit_code == 0


def test_face_index_beyond_the_faces_is_one_line(tmp_path, faces):
    src = write_clip(tmp_path / "one.mp4", pan(faces[:4], W, H, [100] * 4, [60] * 4))
    assert_one_line_error(
        run_cli("encode", src, "-o", tmp_path / "o.gfv", "--face", "2", "--model", "toy"),
        "--face 2",
    )


def test_frames_are_streamed_through_both_passes(tmp_path, faces, monkeypatch):
    """Long inputs in flat memory: tracking and cropping pull frames one at a time."""
    import gfvc.io.video as video
    from gfvc.codec import EncodeSettings, FramePreparer

    pulled = []
    real = video.on_time_grid

    def counting(frames, rate):
        for f in real(frames, rate):
            pulled.append(1)
            yield f

    monkeypatch.setattr(video, "on_time_grid", counting)
    src = write_clip(tmp_path / "s.mp4", pan(faces[:20], W, H, [120] * 20, [60] * 20))
    prep = FramePreparer(src, EncodeSettings())
    assert prep.track.frames == 20 and len(pulled) == 20  # the first pass read it all once
    it = iter(prep)
    next(it), next(it)
    assert len(pulled) <= 20 + 3  # the second pass reads as it goes
    prep.close()
