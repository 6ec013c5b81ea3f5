"""`gfvc eval` and `gfvc anchor`: JSON contents, hand-checked values and one-line errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import assert_one_line_error, clip, moving_frames
from conftest import run_cli as run
from conftest import write_video as write

from gfvc.eval.metrics import ALL_METRICS
from gfvc.io import read_frames


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Reference and a 'decoded' copy that is off by exactly +6 in every sample."""
    d = tmp_path_factory.mktemp("eval")
    ref = [np.clip(f, 10, 240) for f in moving_frames(4)]
    dec = [f + 6 for f in ref]
    return write(d / "ref_64x64.rgb", ref), write(d / "dec_64x64.rgb", dec), d


def test_eval_json_has_every_key_and_hand_checked_psnr(pair):
    ref, dec, _ = pair
    res = run("eval", ref, dec, "--json", "--metrics", "psnr_rgb,psnr_y,ssim")
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    for key in ALL_METRICS:
        assert key in d and key in d["frames"]
    # MSE = 36 on every sample: PSNR = 10 log10(255^2 / 36) on RGB and on Y (Y shifts by 6 *
    # (0.2126 + 0.7152 + 0.0722) = 6 in full range).
    expected = 10 * math.log10(255**2 / 36)
    assert d["psnr_rgb"] == pytest.approx(expected, abs=1e-9)
    assert d["frames"]["psnr_rgb"] == pytest.approx([expected] * 4, abs=1e-9)
    assert d["psnr_y"] == pytest.approx(expected, abs=0.05)
    assert 0.9 < d["ssim"] <= 1.0
    for key in ("ms_ssim", "lmd", "lmd_mediapipe", "id_dist", "lpips", "dists", "vmaf"):
        assert d[key] is None and d["frames"][key] is None  # not requested / unavailable
    assert d["num_frames"] == 4 and (d["width"], d["height"]) == (64, 64)
    text = run("eval", ref, dec, "--metrics", "psnr_rgb")
    assert text.exit_code == 0 and f"psnr_rgb       {expected:.4f}" in text.output


def test_eval_all_metrics_default(pair):
    """Default: every metric; each one a number or null, never missing or NaN."""
    ref, dec, d = pair
    two = write(d / "two_64x64.rgb", list(read_frames(ref))[:2])
    two_dec = write(d / "two_dec_64x64.rgb", list(read_frames(dec))[:2])
    res = run("eval", two, two_dec, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    for key in ALL_METRICS:
        v = out[key]
        assert v is None or math.isfinite(v), key
        if v is None:  # with its reason: backend missing, or no face in synthetic frames
            assert key in out["unavailable"] or key in out["notes"], key
    assert out["psnr_rgb"] is not None and out["ms_ssim"] is None  # 64 px: too small


def test_eval_mismatched_length_and_size(pair, tmp_path):
    ref, _, _ = pair
    frames = list(read_frames(ref))
    short = write(tmp_path / "short_64x64.rgb", frames[:3])
    assert_one_line_error(run("eval", ref, short), "lengths differ")
    # containers whose length is only known by decoding: found while streaming
    a, b = write(tmp_path / "a.y4m", frames), write(tmp_path / "b.mkv", frames[:3])
    assert_one_line_error(run("eval", a, b, "--metrics", "psnr_y"), "lengths differ")
    big = write(tmp_path / "big_96x96.rgb", [np.zeros((96, 96, 3), np.uint8)] * 4)
    assert_one_line_error(run("eval", ref, big), "frame sizes differ")


def test_eval_errors(pair, tmp_path):
    ref, dec, _ = pair
    assert_one_line_error(run("eval", ref, tmp_path / "nope.mp4"), "nope.mp4")
    assert_one_line_error(run("eval", ref, dec, "--metrics", "psnr,ssim"), "unknown metric")
    raw = tmp_path / "nosize.rgb"
    raw.write_bytes(ref.read_bytes())
    assert_one_line_error(run("eval", raw, raw), "size")
    res = run("eval", raw, raw, "--size", "64x64", "--metrics", "psnr_rgb", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["psnr_rgb"] == 100.0  # identical frames: the stated cap


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    d = tmp_path_factory.mktemp("anchor")
    return write(d / "in_64x64.rgb", moving_frames(8))


def test_anchor_lossless_reference_is_exact(source, tmp_path):
    out = tmp_path / "ref_64x64.rgb"
    res = run("anchor", source, "-o", out, "--codec", "lossless", "--size", "64", "--no-crop",
              "--json")  # fmt: skip
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["codec"] == "lossless" and d["qp"] is None and d["output_exact"] is True
    assert d["frames"] == 8 and d["bits"] == 8 * 64 * 64 * 24
    assert out.read_bytes() == source.read_bytes()  # the cropped original, byte for byte


def test_anchor_lossless_refuses_lossy_output(source, tmp_path):
    for name in ("ref.mp4", "ref.y4m", "ref.yuv"):
        res = run("anchor", source, "-o", tmp_path / name, "--codec", "lossless", "--size", "64",
                  "--no-crop")  # fmt: skip
        assert_one_line_error(res, "use a .rgb output")
        assert not (tmp_path / name).exists()


def test_anchor_x265_rate_and_eval(source, tmp_path):
    ref, dec = tmp_path / "ref_64x64.rgb", tmp_path / "x265_64x64.rgb"
    assert run("anchor", source, "-o", ref, "--codec", "lossless", "--size", "64",
               "--no-crop").exit_code == 0  # fmt: skip
    res = run("anchor", source, "-o", dec, "--codec", "x265", "--qp", "30", "--size", "64",
              "--no-crop", "--json", "--fps", "25")  # fmt: skip
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["codec"] == "x265" and d["qp"] == 30 and d["frames"] == 8
    assert d["kbps"] == pytest.approx(d["bits"] / 8 * 25 / 1000)
    ev = run("eval", ref, dec, "--json", "--metrics", "psnr_y")
    assert ev.exit_code == 0, ev.output
    assert 25 < json.loads(ev.output)["psnr_y"] < 60
    text = run("anchor", source, "-o", tmp_path / "x.mp4", "--codec", "x265", "--qp", "40",
               "--size", "64", "--no-crop", "--frames", "4")  # fmt: skip
    assert text.exit_code == 0, text.output
    assert "x265 QP 40, 4 frames" in text.output and "note: .mp4" in text.output


def test_anchor_errors(source, tmp_path):
    def anchor(*extra):
        return run("anchor", source, "-o", tmp_path / "o.rgb", "--size", "64", "--no-crop", *extra)

    assert_one_line_error(anchor("--codec", "h264"), "unknown anchor codec")
    assert_one_line_error(anchor("--codec", "x265", "--qp", "60"), "[0, 51]")
    assert_one_line_error(anchor("--codec", "svtav1", "--qp", "0"), "[1, 63]")
    assert_one_line_error(anchor("--frames", "1"), "at least 2")
    assert not (tmp_path / "o.rgb").exists()


def test_anchor_uses_the_encode_face_crop(tmp_path):
    from gfvc.codec import EncodeSettings, FramePreparer

    src = clip("lp_d3.mp4")
    out = tmp_path / "lp_256x256.rgb"
    res = run("anchor", src, "-o", out, "--codec", "lossless", "--frames", "3")
    assert res.exit_code == 0, res.output
    prep = FramePreparer(src, EncodeSettings(frames=3))
    try:
        expected = list(prep)
    finally:
        prep.close()
    got = list(read_frames(out))
    assert len(got) == 3
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
