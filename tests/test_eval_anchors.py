"""Conventional anchors through PyAV and the rate report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gfvc.errors import BackendUnavailableError, InputError, UnknownNameError
from gfvc.eval.anchors import anchor_code, canonical_codec, vtm_command
from gfvc.eval.pixel import psnr_y
from gfvc.eval.rate import kbps, rate_report

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
needs_clips = pytest.mark.skipif(not FACES.is_dir(), reason=f"real clips not found at {FACES}")


def clip(n: int) -> list[np.ndarray]:
    """First n frames of lp_d3, centre square crop resized to 256x256."""
    import av

    from gfvc.eval._frames import resize_rgb

    frames = []
    with av.open(str(FACES / "lp_d3.mp4")) as container:
        for frame in container.decode(video=0):
            a = frame.to_ndarray(format="rgb24")
            h, w = a.shape[:2]
            s = min(h, w)
            a = np.ascontiguousarray(
                a[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
            )
            frames.append(resize_rgb(a, 256, 256))
            if len(frames) == n:
                break
    return frames


def synthetic(n: int, size: int = 64) -> list[np.ndarray]:
    """A smooth gradient sliding by one pixel per frame (cheap, codable content)."""
    yy, xx = np.mgrid[0:size, 0:size]
    return [
        np.stack([(xx + t) * 3 % 256, yy * 3 % 256, (xx + yy) % 256], -1).astype(np.uint8)
        for t in range(n)
    ]


# ------------------------------------------------------------------ rate
def test_rate_report_counts_every_key_frame() -> None:
    r = rate_report(
        [8000, 6000], feature_bits=[100] * 248, overhead_bits=400, num_frames=250, fps=25
    )
    assert r.num_key_frames == 2 and r.key_frame_bits == 14000 and r.feature_bits == 24800
    assert r.total_bits == 14000 + 24800 + 400
    assert r.kbps == pytest.approx(r.total_bits / 250 * 25 / 1000)
    assert r.kbps == pytest.approx(r.key_frame_kbps + r.feature_kbps + r.overhead_kbps)
    assert r.as_dict()["kbps"] == pytest.approx(3.92)


def test_rate_report_rejects_bad_input() -> None:
    with pytest.raises(InputError):
        rate_report(100, 10, num_frames=0, fps=25)
    with pytest.raises(InputError):
        rate_report([-1], 10, num_frames=10, fps=25)
    with pytest.raises(InputError):
        rate_report(100, 10, num_frames=10, fps=0)
    assert kbps(10_000, 250, 25) == pytest.approx(1.0)


# ------------------------------------------------------------------ anchors
def test_codec_names() -> None:
    assert canonical_codec("HEVC") == "x265" and canonical_codec("av1") == "svtav1"
    with pytest.raises(UnknownNameError):
        canonical_codec("mpeg2")


def test_lossless_returns_input() -> None:
    frames = synthetic(3, 16)
    res = anchor_code(frames, "lossless", 0, fps=25)
    assert all(np.array_equal(a, b) for a, b in zip(frames, res.decoded_frames, strict=True))
    assert res.bits == 3 * 16 * 16 * 24


def test_x265_and_svtav1_synthetic() -> None:
    frames = synthetic(5)
    for codec in ("x265", "svtav1"):
        res = anchor_code(frames, codec, 30, fps=25)
        assert len(res.decoded_frames) == 5 and res.decoded_frames[0].shape == (64, 64, 3)
        assert res.kbps == pytest.approx(res.bits / 5 * 25 / 1000)
        assert psnr_y(frames[0], res.decoded_frames[0]) > 30


def test_anchor_input_errors() -> None:
    with pytest.raises(InputError, match="QP"):
        anchor_code(synthetic(2), "x265", 52)
    with pytest.raises(InputError, match="even"):
        anchor_code([f[:63] for f in synthetic(2)], "x265", 30)
    with pytest.raises(InputError, match="frame 1"):
        anchor_code([synthetic(1)[0], synthetic(1, 32)[0]], "x265", 30)


def test_vvc_needs_vtm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("GFVC_VTM_ENCODER", raising=False)
    with pytest.raises(BackendUnavailableError, match="VTM"):
        anchor_code(synthetic(2), "vvc", 37)
    cmd = vtm_command(
        "EncoderApp", "ld.cfg", Path("in.yuv"), Path("o.266"), (256, 256), 250, 42, 25.0
    )
    assert "--IntraPeriod=-1" in cmd and "--QP=42" in cmd and "--FramesToBeEncoded=250" in cmd


@needs_clips
def test_x265_real_frames_monotone_rate() -> None:
    frames = clip(10)
    results = [anchor_code(frames, "x265", qp, fps=25) for qp in (32, 37, 42, 47)]
    assert all(len(r.decoded_frames) == 10 for r in results)
    rates = [r.kbps for r in results]
    assert rates == sorted(rates, reverse=True) and len(set(rates)) == 4
    quality = [
        np.mean([psnr_y(a, b) for a, b in zip(frames, r.decoded_frames, strict=True)])
        for r in results
    ]
    assert quality == sorted(quality, reverse=True)
