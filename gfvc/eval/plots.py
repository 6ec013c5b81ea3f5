"""RD plots and side-by-side frame strips as PNG files (matplotlib, Agg canvas).

Figures are built with ``matplotlib.figure.Figure`` and an Agg canvas directly, so nothing
touches pyplot's global state or needs a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gfvc.errors import InputError, OutputError
from gfvc.eval._frames import check_frame
from gfvc.eval.bd import lower_is_better

#: Axis labels for the known metrics.
METRIC_LABELS = {
    "psnr_rgb": "PSNR-RGB (dB)",
    "psnr_y": "PSNR-Y BT.709 (dB)",
    "ssim": "SSIM (Y)",
    "ms_ssim": "MS-SSIM (Y)",
    "lmd": "LMD dlib (px @256)",
    "eye_err": "eye openness error (EAR)",
    "mouth_err": "mouth openness error",
    "lmd_mediapipe": "LMD FaceMesh (px @256)",
    "id_dist": "identity distance",
    "lpips": "LPIPS-VGG",
    "dists": "DISTS",
    "vmaf": "VMAF",
}


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        FigureCanvasAgg(fig)
        fig.savefig(out, format="png")
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc}") from exc
    return out


def plot_rd(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    metric: str,
    path: str | Path,
    *,
    title: str | None = None,
    log_rate: bool = False,
) -> Path:
    """Write a rate-distortion PNG: one line per codec, {name: (kbps list, metric list)}."""
    if not curves:
        raise InputError("plot_rd needs at least one curve")
    fig = Figure(figsize=(6.0, 4.5), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    for name, (rates, values) in curves.items():
        r, v = np.asarray(rates, dtype=float), np.asarray(values, dtype=float)
        if r.shape != v.shape or r.ndim != 1:
            raise InputError(f"curve {name!r}: {r.size} rates but {v.size} values")
        order = np.argsort(r)
        ax.plot(r[order], v[order], marker="o", label=name)
    ax.set_xlabel("rate (kbps)")
    ax.set_ylabel(
        METRIC_LABELS.get(metric, metric)
        + ("  (lower is better)" if lower_is_better(metric) else "")
    )
    if log_rate:
        ax.set_xscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title or f"{METRIC_LABELS.get(metric, metric)} vs rate")
    fig.tight_layout()
    return _save(fig, path)


def panel_label(
    name: str, kbps: float | None = None, metrics: Mapping[str, float | None] | None = None
) -> str:
    """Caption for one strip panel, e.g. 'GFVC 4.9 kbps\\nDISTS 0.131  PSNR-Y 23.4'."""
    head = name if kbps is None else f"{name}  {kbps:.1f} kbps"
    parts = []
    for key, value in (metrics or {}).items():
        if value is not None:
            short = METRIC_LABELS.get(key, key).split(" (")[0]
            parts.append(f"{short} {value:.3f}" if abs(value) < 10 else f"{short} {value:.2f}")
    return head if not parts else head + "\n" + "  ".join(parts)


def save_strip(
    panels: Sequence[tuple[str, np.ndarray]], path: str | Path, *, panel_inches: float = 3.0
) -> Path:
    """Write frames side by side with a caption above each: [(caption, (H, W, 3) uint8), ...]."""
    if not panels:
        raise InputError("save_strip needs at least one panel")
    frames = [check_frame(f, f"panel {i}") for i, (_, f) in enumerate(panels)]
    fig = Figure(figsize=(panel_inches * len(panels), panel_inches + 0.6), dpi=100)
    for i, ((caption, _), frame) in enumerate(zip(panels, frames, strict=True)):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(frame, interpolation="nearest")
        ax.set_title(caption, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return _save(fig, path)


def closest_rate_index(rates: Sequence[float], target: float) -> int:
    """Index of the point whose rate is closest to ``target`` (on a log scale)."""
    r = np.asarray(rates, dtype=float)
    if r.size == 0 or np.any(r <= 0) or target <= 0:
        raise InputError("rates and target must be positive and non-empty")
    return int(np.argmin(np.abs(np.log(r) - np.log(target))))


def comparison_strip(
    original: np.ndarray,
    gfvc: tuple[np.ndarray, float, Mapping[str, float | None]],
    anchor: tuple[str, np.ndarray, float, Mapping[str, float | None]],
    path: str | Path,
    *,
    gfvc_name: str = "GFVC",
) -> Path:
    """original | GFVC | anchor strip; gfvc = (frame, kbps, metrics), anchor = (name, frame, kbps, metrics)."""
    g_frame, g_kbps, g_metrics = gfvc
    a_name, a_frame, a_kbps, a_metrics = anchor
    return save_strip(
        [
            ("original", original),
            (panel_label(gfvc_name, g_kbps, g_metrics), g_frame),
            (panel_label(a_name, a_kbps, a_metrics), a_frame),
        ],
        path,
    )
