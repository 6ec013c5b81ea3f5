"""BD-rate / BD-quality behaviour, including lower-is-better metrics, and the PNG plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gfvc.errors import InputError
from gfvc.eval.bd import bd_quality, bd_rate, overlap_fraction
from gfvc.eval.plots import closest_rate_index, comparison_strip, panel_label, plot_rd

RATES = [5.0, 10.0, 20.0, 40.0]
PSNR = [28.0, 31.0, 33.5, 35.5]
DISTS = [0.30, 0.22, 0.16, 0.12]


def test_bd_rate_self_is_zero() -> None:
    assert bd_rate(RATES, PSNR, RATES, PSNR) == pytest.approx(0.0, abs=1e-9)
    assert bd_quality(RATES, PSNR, RATES, PSNR) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("method", ["pchip", "akima"])
def test_half_rate_is_minus_50_percent(method: str) -> None:
    half = [r / 2 for r in RATES]
    assert bd_rate(RATES, PSNR, half, PSNR, method=method) == pytest.approx(-50.0, abs=1e-6)
    assert bd_rate(half, PSNR, RATES, PSNR, method=method) == pytest.approx(100.0, abs=1e-6)


def test_lower_is_better_metric() -> None:
    half = [r / 2 for r in RATES]
    assert bd_rate(RATES, DISTS, half, DISTS, "dists") == pytest.approx(-50.0, abs=1e-6)
    better = [d - 0.01 for d in DISTS]  # lower DISTS at the same rate
    assert bd_quality(RATES, DISTS, RATES, better, "dists") == pytest.approx(-0.01, abs=1e-9)
    assert bd_rate(RATES, DISTS, RATES, better, "dists") < 0


def test_input_order_does_not_matter() -> None:
    half = [r / 2 for r in RATES]
    assert bd_rate(RATES[::-1], PSNR[::-1], half, PSNR) == pytest.approx(-50.0, abs=1e-6)


def test_unequal_point_counts_allowed() -> None:
    rates6 = [4.0, 6.0, 9.0, 14.0, 22.0, 40.0]
    psnr6 = list(np.interp(np.log(rates6), np.log(RATES), PSNR))
    assert bd_rate(rates6, psnr6, RATES, PSNR) == pytest.approx(0.0, abs=2.0)


def test_errors() -> None:
    with pytest.raises(InputError, match="at least 3"):
        bd_rate(RATES[:2], PSNR[:2], RATES, PSNR)
    with pytest.raises(InputError, match="not monotonic"):
        bd_rate(RATES, [28.0, 31.0, 30.0, 35.0], RATES, PSNR)
    with pytest.raises(InputError, match="not monotonic"):
        bd_rate(RATES, PSNR, RATES, PSNR, "lpips")  # rising LPIPS with rate is wrong
    with pytest.raises(InputError, match="do not overlap"):
        bd_rate(RATES, PSNR, RATES, [p + 20 for p in PSNR])
    with pytest.raises(InputError, match="same rate"):
        bd_rate([5.0, 5.0, 20.0, 40.0], PSNR, RATES, PSNR)
    with pytest.raises(InputError, match="4 rates but 3"):
        bd_quality(RATES, PSNR[:3], RATES, PSNR)


@pytest.mark.parametrize("method", ["pchip", "akima"])
def test_three_points_hand_computed(method: str) -> None:
    # log2(rate) linear in PSNR on both curves: every interpolator is exact. At equal PSNR the
    # test needs 2^(-1/3) of the anchor's rate (it is 1 dB better, 3 dB per doubling), so
    # BD-rate = 2^(-1/3) - 1 = -20.63 %, and BD-PSNR = +1 dB over the common rate range.
    rates = [10.0, 20.0, 40.0]
    anchor, test = [30.0, 33.0, 36.0], [31.0, 34.0, 37.0]
    expected = (2 ** (-1 / 3) - 1) * 100
    assert bd_rate(rates, anchor, rates, test, method=method) == pytest.approx(expected, abs=1e-9)
    assert bd_quality(rates, anchor, rates, test, method=method) == pytest.approx(1.0, abs=1e-9)
    # a 3-point curve against a 4-point one through the same points: nearly 0 (the
    # interpolants differ slightly between the points)
    assert bd_rate(RATES, PSNR, RATES[:3], PSNR[:3], method=method) == pytest.approx(0, abs=0.5)


def test_overlap_fraction() -> None:
    assert overlap_fraction([0, 10], [5, 15]) == pytest.approx(1 / 3)
    assert overlap_fraction([0, 1], [2, 3]) == 0.0


def test_plots_write_png(tmp_path: Path) -> None:
    out = plot_rd(
        {"x265": (RATES, DISTS), "GFVC": ([1.5, 2.5, 3.5, 5.0], [0.29, 0.2, 0.15, 0.13])},
        "dists",
        tmp_path / "rd.png",
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    frame = np.zeros((64, 64, 3), np.uint8)
    strip = comparison_strip(
        frame,
        (frame, 4.9, {"dists": 0.131}),
        ("x265 QP51", frame, 7.2, {"dists": 0.25, "psnr_y": 26.5}),
        tmp_path / "s.png",
    )
    assert strip.read_bytes()[:4] == b"\x89PNG"
    assert (
        panel_label("GFVC", 4.94, {"dists": 0.1312, "psnr_y": 23.41})
        == "GFVC  4.9 kbps\nDISTS 0.131  PSNR-Y BT.709 23.41"
    )
    assert closest_rate_index([5.0, 7.0, 15.0], 6.5) == 1
