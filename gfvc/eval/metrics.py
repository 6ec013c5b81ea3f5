"""Per-frame quality metrics and a streaming sequence evaluator.

One import point for every metric (definitions in docs/metrics.md). Pixel metrics are cheap
numpy/torch functions; the face and perceptual metrics load their models once, lazily, and a
metric whose backend is missing is reported as unavailable (null) with a one-line reason
instead of being computed with something else.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from gfvc.errors import BackendUnavailableError, InputError, UnknownNameError
from gfvc.eval._frames import check_pair
from gfvc.eval.bd import LOWER_IS_BETTER
from gfvc.eval.face import dlib_pair_metrics, id_dist, lmd, lmd_mediapipe
from gfvc.eval.perceptual import (
    dists,
    dists_pair,
    load_dists,
    load_lpips,
    load_vgg16_state,
    lpips,
    lpips_pair,
)
from gfvc.eval.pixel import (
    PSNR_IDENTICAL_DB,
    ms_ssim,
    ms_ssim_unavailable_reason,
    psnr_rgb,
    psnr_y,
    rgb_to_y,
    ssim,
)

__all__ = [
    "ALL_METRICS",
    "CTC_DEFAULT_METRICS",
    "FAST_METRICS",
    "HIGHER_IS_BETTER",
    "PSNR_IDENTICAL_DB",
    "SequenceEvaluator",
    "dists",
    "evaluate_sequences",
    "id_dist",
    "lmd",
    "lmd_mediapipe",
    "lpips",
    "ms_ssim",
    "psnr_rgb",
    "psnr_y",
    "rgb_to_y",
    "ssim",
]

#: Every metric name, in report order (also the keys of ``evaluate_sequences``' result).
ALL_METRICS: tuple[str, ...] = (
    "psnr_rgb", "psnr_y", "ssim", "ms_ssim", "lmd", "eye_err", "mouth_err", "lmd_mediapipe",
    "id_dist", "lpips", "dists", "vmaf",
)  # fmt: skip
#: Metrics that cost a few milliseconds per 256x256 frame.
FAST_METRICS: tuple[str, ...] = ("psnr_rgb", "psnr_y", "ssim", "ms_ssim")
#: What `gfvc ctc` measures when a config names no metrics: the fast ones, the dlib geometry
#: (one 68-point fit per frame serves all three, 15-30 ms) and VMAF (about 5 ms per frame).
CTC_DEFAULT_METRICS: tuple[str, ...] = (*FAST_METRICS, "lmd", "eye_err", "mouth_err", "vmaf")
#: Direction of each metric (False: lower is better); ``gfvc.eval.bd.LOWER_IS_BETTER`` is the
#: one list of lower-is-better metrics (BD-rates, plots and report arrows all use it).
HIGHER_IS_BETTER: dict[str, bool] = {m: m not in LOWER_IS_BETTER for m in ALL_METRICS}
#: Metrics computed from the one dlib 68-point fit per frame pair.
_DLIB_METRICS = ("lmd", "eye_err", "mouth_err", "id_dist")
#: Notes for frames left out of a metric's mean, by metric ({n} of {count} frame pairs).
_LEFT_OUT = "in {n} of {count} frame pairs (left out of the mean)"
_SKIP_NOTES = {
    "lmd_mediapipe": "no FaceMesh face " + _LEFT_OUT,
    "eye_err": "no dlib face in the reference " + _LEFT_OUT,
    "mouth_err": "no dlib face in the reference " + _LEFT_OUT,
}

FrameMetric = Callable[[np.ndarray, np.ndarray], "float | None"]
_PIXEL: dict[str, FrameMetric] = {"psnr_rgb": psnr_rgb, "psnr_y": psnr_y, "ssim": ssim}


def check_metric_names(metrics: Iterable[str]) -> tuple[str, ...]:
    """Validated, de-duplicated metric names in ``ALL_METRICS`` order."""
    names = set(metrics)
    unknown = sorted(names - set(ALL_METRICS))
    if unknown:
        raise UnknownNameError(
            f"unknown metric {unknown[0]!r}; choose from {', '.join(ALL_METRICS)}"
        )
    return tuple(m for m in ALL_METRICS if m in names)


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean over frames that have a value; None when none has."""
    good = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(good)) if good else None


class SequenceEvaluator:
    """Accumulates per-frame metrics over a stream of (reference, decoded) frame pairs.

    Backends are loaded at construction; a missing one makes its metric unavailable (reason in
    ``unavailable``) rather than failing the whole evaluation. Feed pairs with ``update`` and
    read the report with ``result``.
    """

    def __init__(self, metrics: Iterable[str] = ALL_METRICS, *, fps: float = 25.0) -> None:
        self.metrics = check_metric_names(metrics)
        self.fps = fps
        self.unavailable: dict[str, str] = {
            m: "not requested" for m in ALL_METRICS if m not in self.metrics
        }
        self.values: dict[str, list[float | None]] = {m: [] for m in self.metrics}
        self.size: tuple[int, int] | None = None
        self.count = 0
        vgg = self._shared_vgg()
        self._lpips = self._try_load("lpips", lambda: load_lpips(vgg_state=vgg))
        self._dists = self._try_load("dists", lambda: load_dists(vgg_state=vgg))
        self._vmaf = self._try_load("vmaf", lambda: _vmaf_sequence(fps))
        self._try_backend(_DLIB_METRICS, _check_dlib)
        self._try_backend(("lmd_mediapipe",), _check_mediapipe)

    # ---------------------------------------------------------------- backends
    def _mark_unavailable(self, name: str, reason: str) -> None:
        if name in self.metrics:
            self.unavailable[name] = reason
            self.values.pop(name, None)

    def _shared_vgg(self) -> dict | None:
        """VGG16 weights loaded once when both LPIPS and DISTS are wanted (None otherwise)."""
        if not {"lpips", "dists"} <= set(self.metrics):
            return None
        try:
            return load_vgg16_state()
        except BackendUnavailableError as exc:
            self._mark_unavailable("lpips", str(exc))
            self._mark_unavailable("dists", str(exc))
            return None

    def _try_load(self, name: str, loader: Callable[[], Any]) -> Any:
        if not self._active(name):  # not requested, or already found unavailable
            return None
        try:
            return loader()
        except BackendUnavailableError as exc:
            self._mark_unavailable(name, str(exc))
            return None

    def _try_backend(self, names: tuple[str, ...], check: Callable[[], None]) -> bool:
        if not any(n in self.metrics for n in names):
            return False
        try:
            check()
            return True
        except BackendUnavailableError as exc:
            for n in names:
                self._mark_unavailable(n, str(exc))
            return False

    def _active(self, name: str) -> bool:
        return name in self.values

    # ---------------------------------------------------------------- streaming
    def update(self, ref: np.ndarray, dec: np.ndarray) -> None:
        """Add one frame pair (same size as every earlier pair)."""
        try:
            ref, dec = check_pair(ref, dec)
        except InputError as exc:
            raise InputError(f"frame {self.count}: {exc}") from exc
        if self.size is None:
            self.size = (ref.shape[0], ref.shape[1])
            reason = ms_ssim_unavailable_reason(*self.size)
            if reason:
                self._mark_unavailable("ms_ssim", reason)
        elif self.size != ref.shape[:2]:
            raise InputError(
                f"frame {self.count} is {ref.shape[1]}x{ref.shape[0]} but earlier frames are {self.size[1]}x{self.size[0]}"
            )
        for name, fn in _PIXEL.items():
            if self._active(name):
                self.values[name].append(fn(ref, dec))
        if self._active("ms_ssim"):
            self.values["ms_ssim"].append(ms_ssim(ref, dec))
        if any(self._active(m) for m in _DLIB_METRICS):
            got = dlib_pair_metrics(
                ref,
                dec,
                landmarks=self._active("lmd"),
                identity=self._active("id_dist"),
                expression=self._active("eye_err") or self._active("mouth_err"),
            )
            for name, value in got.items():
                if self._active(name):
                    self.values[name].append(value)
        if self._active("lmd_mediapipe"):
            self.values["lmd_mediapipe"].append(lmd_mediapipe(ref, dec))
        if self._lpips is not None:
            self.values["lpips"].append(lpips_pair(self._lpips, ref, dec))
        if self._dists is not None:
            self.values["dists"].append(dists_pair(self._dists, ref, dec))
        if self._vmaf is not None:
            self._vmaf.add(ref, dec)
        self.count += 1

    def result(self) -> dict[str, Any]:
        """Report: the metric means (None when unavailable), ``frames`` with per-frame lists,
        ``num_frames``, ``width``, ``height``, ``unavailable`` {metric: reason}, ``skipped``
        {metric: frame pairs left out of its mean, when any} and ``notes``."""
        if self.count == 0:
            raise InputError("no frames to evaluate")
        if self._vmaf is not None:
            try:
                self.values["vmaf"] = list(self._vmaf.run())
            except BackendUnavailableError as exc:
                self._mark_unavailable("vmaf", str(exc))
            self._vmaf = None
        skipped = {
            m: n for m in _SKIP_NOTES if (n := sum(v is None for v in self.values.get(m, [])))
        }
        notes = {m: _SKIP_NOTES[m].format(n=n, count=self.count) for m, n in skipped.items()}
        report: dict[str, Any] = {
            m: (_mean(self.values[m]) if m in self.values else None) for m in ALL_METRICS
        }
        report["frames"] = {
            m: (list(self.values[m]) if m in self.values else None) for m in ALL_METRICS
        }
        assert self.size is not None
        report.update(
            num_frames=self.count,
            height=self.size[0],
            width=self.size[1],
            unavailable=dict(self.unavailable),
            skipped=skipped,
            notes=notes,
        )
        return report


def _check_dlib() -> None:
    from gfvc.eval.face import _dlib_models

    _dlib_models()


def _check_mediapipe() -> None:
    from gfvc.eval.face import _face_mesh

    _face_mesh()


def _vmaf_sequence(fps: float) -> Any:
    from gfvc.eval.vmaf import VmafSequence

    return VmafSequence(fps=fps)


def evaluate_sequences(
    ref_frames: Iterable[np.ndarray],
    dec_frames: Iterable[np.ndarray],
    metrics: Iterable[str] = ALL_METRICS,
    *,
    fps: float = 25.0,
) -> dict[str, Any]:
    """Evaluate a decoded sequence against its reference, streaming frame by frame.

    Returns the ``SequenceEvaluator.result`` report. Sequences of different length or frame
    size raise ``InputError``.
    """
    ev = SequenceEvaluator(metrics, fps=fps)
    end = object()
    for i, (ref, dec) in enumerate(itertools.zip_longest(ref_frames, dec_frames, fillvalue=end)):
        if ref is end or dec is end:
            longer = "decoded" if ref is end else "reference"
            raise InputError(
                f"sequence lengths differ: the {longer} sequence has more than {i} frames, the other {i}"
            )
        ev.update(ref, dec)
    return ev.result()
