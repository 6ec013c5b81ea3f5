"""Phone and camera files: rotation metadata, variable frame rate, 10-bit, full range, odd
sizes, audio streams (ignored on input, copied with --audio-from)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from conftest import assert_one_line_error, clip, run_cli
from realclips import background, face_frames, paste, write_clip

from gfvc.io import VideoReader, find_face_crop
from gfvc.io.video import on_time_grid


def _psnr(a, b):
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 10 * np.log10(255**2 / max(mse, 1e-9))


@pytest.fixture(scope="module")
def face():
    return face_frames(clip("dt_W009_front_neutral_level1_001.mp4"), 6, side=192)


def _portrait(face):
    """What a phone shows: a 288x512 portrait picture, the face in the upper middle."""
    out = []
    for f in face:
        c = background(288, 512)
        paste(c, f, 48, 120)
        out.append(c)
    return out


@pytest.mark.parametrize("rotation", [90, 270, 180])
def test_rotation_metadata_is_applied(tmp_path, face, rotation):
    shown = _portrait(face)
    p = write_clip(tmp_path / "phone.mp4", shown, rotation=rotation)
    with VideoReader(p) as r:
        assert (r.info.width, r.info.height, r.info.rotation) == (288, 512, rotation)
        got = list(r)
    assert len(got) == len(shown) and got[0].shape == (512, 288, 3)
    assert min(_psnr(a, b) for a, b in zip(got, shown, strict=True)) > 30
    box = find_face_crop(got[:3])
    assert 20 < box.x + box.size / 2 - 48 < 180  # the face is found upright, where it is shown


def test_variable_frame_rate_follows_timestamps(tmp_path):
    """Frame i is flat grey 20*i; shown at irregular times (a stall, then a burst)."""
    times = [0, 0.04, 0.08, 0.20, 0.24, 0.26, 0.28, 0.32, 0.36, 0.40]
    frames = [np.full((64, 64, 3), 20 * i + 10, np.uint8) for i in range(len(times))]
    p = write_clip(tmp_path / "vfr.mp4", frames, times=times)
    with VideoReader(p) as r:
        rate = r.info.fps
        got = [int(round(f.mean())) for f in r]
    # as many frames as the duration at the stream's rate, and time runs as in the source
    assert abs(len(got) - round(0.40 * float(rate)) - 1) <= 1
    assert got == sorted(got)
    assert got.count(got[3]) >= 2  # the stall is held


def test_time_grid_holds_drops_and_bounds_gaps():
    f = [np.full((2, 2, 3), v, np.uint8) for v in range(8)]
    t = [0.0, 0.04, 0.16, 0.17, 0.18, 0.20, None, 1e9]
    got = [int(x[0, 0, 0]) for x in on_time_grid(zip(t, f, strict=True), Fraction(25))]
    # slots: 0->0, 1->1, 2,3 hold 1, 4->2 (3 dropped into it, 4 too: the newest is held),
    # 5->5, 6->6 (no time: next slot), then a 1e9 s gap shortened to 10 s of holds
    assert got[:7] == [0, 1, 1, 1, 2, 5, 6]
    assert got[-1] == 7 and len(got) == 7 + 250 + 1


def test_ten_bit_and_full_range(tmp_path, face):
    shown = face[:3]
    p10 = write_clip(tmp_path / "hdr.mp4", shown, pix_fmt="yuv420p10le")
    with VideoReader(p10) as r:
        got = list(r)
    assert (
        got[0].dtype == np.uint8 and min(_psnr(a, b) for a, b in zip(got, shown, strict=True)) > 32
    )
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8)[None, :, None], (64, 1, 3))
    pf = write_clip(tmp_path / "full.mp4", [ramp] * 3, pix_fmt="yuvj420p", full_range=True)
    with VideoReader(pf) as r:
        got = next(iter(r))
    # full range read as full range: the darkest and brightest columns keep their levels
    assert abs(int(got[:, :4].mean()) - int(ramp[:, :4].mean())) <= 4
    assert abs(int(got[:, -4:].mean()) - int(ramp[:, -4:].mean())) <= 4


@pytest.mark.parametrize("size", [(641, 479), (720, 1280)])
def test_odd_and_portrait_sizes_are_read_and_cropped(tmp_path, face, size):
    w, h = size
    frames = []
    for f in face[:3]:
        c = background(w, h)
        paste(c, f, (w - 192) // 2 + 7, (h - 192) // 2 - 11)
        frames.append(c)
    p = write_clip(tmp_path / f"v{w}x{h}.mkv", frames, codec="ffv1", pix_fmt="yuv444p")
    with VideoReader(p) as r:
        assert (r.info.width, r.info.height) == (w, h)
        got = list(r)
    assert got[0].shape == (h, w, 3)
    box = find_face_crop(got)
    assert abs(box.x + box.size / 2 - (w / 2 + 7)) < 40


def test_audio_is_ignored_and_copied_with_audio_from(tmp_path, face):
    import av

    src = write_clip(tmp_path / "talk.mp4", _portrait(face), rotation=90, audio=True)
    gfv = tmp_path / "talk.gfv"
    res = run_cli("encode", src, "-o", gfv, "-q", "--keyframe-codec", "x265")
    assert res.exit_code == 0, res.output
    out = tmp_path / "dec.mp4"
    res = run_cli("decode", gfv, "-o", out, "-q", "--audio-from", src)
    assert res.exit_code == 0, res.output
    with av.open(str(out)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        a = c.streams.audio[0]
        packets = [p for p in c.demux(a) if p.size]
        dur = float(max(p.pts + p.duration for p in packets) * a.time_base)
    assert abs(dur - len(face) / 25) < 0.1
    assert_one_line_error(
        run_cli("decode", gfv, "-o", tmp_path / "d.y4m", "--audio-from", src), "audio"
    )
    assert_one_line_error(
        run_cli("decode", gfv, "-o", tmp_path / "d2.mp4", "--audio-from", tmp_path / "none.mp4"),
        "does not exist",
    )
    silent = write_clip(tmp_path / "silent.mp4", face[:2])
    assert_one_line_error(
        run_cli("decode", gfv, "-o", tmp_path / "d3.mp4", "--audio-from", silent), "no audio"
    )
    assert not (tmp_path / "d3.mp4").exists()
