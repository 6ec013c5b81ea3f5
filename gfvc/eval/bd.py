"""Bjontegaard deltas (BD-rate, BD-quality) for any metric, via the ``bjontegaard`` package.

The package interpolates log10(rate) as a function of quality (BD-rate) or quality as a
function of log10(rate) (BD-quality) and averages over the overlap of the two curves. It
assumes quality rises with rate: its interpolator flips a curve only when *both* axes fall,
so a "lower is better" metric (LPIPS, DISTS, landmark or identity distance) would trip its
assertion. We therefore negate such metrics for BD-rate. We pass
``require_matching_points=False`` (its default True rejects curves with different point
counts, e.g. 4 GFVC points against 6 anchor points) and use PCHIP interpolation (monotone,
no overshoot between points); ``method="akima"`` is available too. Both are piecewise and work
from three points per curve (the GFVC test conditions of our example use three rate points);
the package's "cubic" method (one cubic polynomial through all points, the original VCEG-M33
formula) needs four and is not offered.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from gfvc.errors import InputError

#: Metrics where lower values mean better quality.
LOWER_IS_BETTER = frozenset(
    {"lmd", "eye_err", "mouth_err", "lmd_mediapipe", "id_dist", "lpips", "dists"}
)
#: Fewest RD points per curve (PCHIP and Akima interpolate three points; two would be a line).
MIN_POINTS = 3
METHODS = ("pchip", "akima")


def lower_is_better(metric: str) -> bool:
    """True for metrics where a smaller value is better quality."""
    return metric in LOWER_IS_BETTER


def _curve(
    rates: Sequence[float],
    values: Sequence[float],
    metric: str,
    which: str,
    *,
    monotone: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Validated curve sorted by rate: >= MIN_POINTS finite points, distinct rates and (with
    ``monotone``) quality strictly improving with rate."""
    r = np.asarray(rates, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if r.ndim != 1 or r.shape != v.shape:
        raise InputError(f"{which} curve: {r.size} rates but {v.size} {metric} values")
    if r.size < MIN_POINTS:
        raise InputError(f"{which} curve has {r.size} points; BD needs at least {MIN_POINTS}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(v))):
        raise InputError(f"{which} curve has non-finite rate or {metric} values")
    if np.any(r <= 0):
        raise InputError(f"{which} curve has a rate <= 0")
    order = np.argsort(r, kind="stable")
    r, v = r[order], v[order]
    if np.any(np.diff(r) <= 0):
        raise InputError(f"{which} curve has two points with the same rate")
    step = np.diff(v) if not lower_is_better(metric) else -np.diff(v)
    if monotone and np.any(step <= 0):
        i = int(np.argmax(step <= 0))
        direction = "fall" if lower_is_better(metric) else "rise"
        raise InputError(
            f"{which} curve is not monotonic: {metric} should {direction} with rate but goes "
            f"{v[i]:.6g} -> {v[i + 1]:.6g} between {r[i]:.6g} and {r[i + 1]:.6g} kbps"
        )
    return r, v


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(f"unknown interpolation {method!r}; choose from {', '.join(METHODS)}")


def _overlap_or_raise(a: np.ndarray, b: np.ndarray, axis: str) -> None:
    if min(a.max(), b.max()) <= max(a.min(), b.min()):
        raise InputError(f"the two curves do not overlap in {axis}; the BD value is undefined")


def bd_rate(
    anchor_rates: Sequence[float],
    anchor_values: Sequence[float],
    test_rates: Sequence[float],
    test_values: Sequence[float],
    metric: str = "psnr_y",
    *,
    method: str = "pchip",
    min_overlap: float = 0.0,
) -> float:
    """Average rate difference of test vs anchor at equal ``metric``, in percent.

    Negative means the test needs fewer bits for the same quality.
    """
    _check_method(method)
    ar, av = _curve(anchor_rates, anchor_values, metric, "anchor")
    tr, tv = _curve(test_rates, test_values, metric, "test")
    if lower_is_better(metric):
        av, tv = -av, -tv
    _overlap_or_raise(av, tv, metric)
    import bjontegaard  # imported here: it pulls in pyplot and scipy (2 s)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_rate(
            ar, av, tr, tv, method, require_matching_points=False, min_overlap=min_overlap
        )
    if not math.isfinite(value):
        raise InputError(f"BD-rate on {metric} is undefined for these curves")
    return float(value)


def bd_quality(
    anchor_rates: Sequence[float],
    anchor_values: Sequence[float],
    test_rates: Sequence[float],
    test_values: Sequence[float],
    metric: str = "psnr_y",
    *,
    method: str = "pchip",
    min_overlap: float = 0.0,
) -> float:
    """Average ``metric`` difference (test - anchor, metric units) at equal rate.

    Positive is better for PSNR/SSIM/VMAF; negative is better for lower-is-better metrics.
    The metric is interpolated as a function of log-rate, so it need not be monotonic (a GFVC
    curve that saturates, or dips, as the key-frame QP falls still has a BD-quality); only
    the rates must be distinct.
    """
    _check_method(method)
    ar, av = _curve(anchor_rates, anchor_values, metric, "anchor", monotone=False)
    tr, tv = _curve(test_rates, test_values, metric, "test", monotone=False)
    _overlap_or_raise(np.log10(ar), np.log10(tr), "rate")
    import bjontegaard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_psnr(
            ar, av, tr, tv, method, require_matching_points=False, min_overlap=min_overlap
        )
    if not math.isfinite(value):
        raise InputError(f"BD-{metric} is undefined for these curves")
    return float(value)


def overlap_fraction(a: Sequence[float], b: Sequence[float]) -> float:
    """Share of the union of two value ranges that both cover (the package's overlap measure)."""
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    lo, hi = max(a_arr.min(), b_arr.min()), min(a_arr.max(), b_arr.max())
    span = max(a_arr.max(), b_arr.max()) - min(a_arr.min(), b_arr.min())
    return float(max(hi - lo, 0.0) / span) if span > 0 else 1.0
