"""``gfvc demo``: the main job end to end on the built-in sample (or any clip).

Encodes to a .gfv file, decodes it, and writes what a person wants to see: the decoded
video, a side-by-side PNG (original crop above, decoded below) and a summary of rate,
quality and speed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from gfvc.codec import (
    EncodeSettings,
    FramePreparer,
    build_model,
    decode_frames,
    make_encoder,
    stream_chunks,
    stream_report,
)
from gfvc.io.atomic import AtomicFile


def sample_path() -> Path:
    """The short face clip that ships inside the package."""
    return Path(str(resources.files("gfvc") / "data" / "sample.mp4"))


@dataclass
class DemoSummary:
    input: str
    model: str
    frames: int
    fps: float
    kbps: float
    keyframe_bits: int
    feature_bits: int
    overhead_bits: int
    psnr_rgb: float
    ms_ssim: float | None
    encode_fps: float
    decode_fps: float
    bitstream: str
    video: str
    side_by_side: str


def side_by_side(
    originals: list[np.ndarray], decoded: list[np.ndarray], count: int = 5
) -> np.ndarray:
    """Original frames on top, decoded below, ``count`` evenly spaced columns."""
    idx = np.linspace(0, len(originals) - 1, min(count, len(originals))).round().astype(int)
    top = np.concatenate([originals[i] for i in idx], axis=1)
    bottom = np.concatenate([decoded[i] for i in idx], axis=1)
    return np.concatenate([top, bottom], axis=0)


def run_demo(
    src: str | Path | None,
    out_dir: str | Path,
    settings: EncodeSettings | None = None,
    progress: Callable[[int], None] | None = None,
    audio_from: str | Path | None = None,
) -> DemoSummary:
    import cv2

    from gfvc.eval.pixel import ms_ssim, psnr_rgb
    from gfvc.io import VideoWriter

    s = settings or EncodeSettings()
    src = Path(src) if src else sample_path()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(
        s.model, checkpoint=s.checkpoint, config=s.config, device=s.device, size=s.size
    )
    prep = FramePreparer(src, s)
    originals: list[np.ndarray] = []

    def keep(frames):
        for f in frames:
            originals.append(f)
            yield f

    t0 = time.perf_counter()
    try:
        enc = make_encoder(s, prep.fps, model)
        prep.prime(enc)
        gfv = out / "demo.gfv"
        with AtomicFile(gfv) as f:
            for chunk in stream_chunks(enc, keep(prep), progress, prep.refresh_at):
                f.write(chunk)
    finally:
        prep.close()
    t_enc = time.perf_counter() - t0
    data = gfv.read_bytes()
    report = stream_report(data)

    model.reset()
    t0 = time.perf_counter()
    decoded = list(decode_frames(data, model))
    t_dec = time.perf_counter() - t0
    if progress:
        progress(len(decoded))

    video = out / "decoded.mp4"
    with VideoWriter(video, fps=prep.fps, width=s.size, height=s.size, audio_from=audio_from) as w:
        for f in decoded:
            w.write(f)
    png = out / "side_by_side.png"
    cv2.imwrite(str(png), cv2.cvtColor(side_by_side(originals, decoded), cv2.COLOR_RGB2BGR))

    msssim = [ms_ssim(a, b) for a, b in zip(originals[1:], decoded[1:], strict=True)]
    summary = DemoSummary(
        input=str(src),
        model=s.model,
        frames=report.frames,
        fps=float(report.fps),
        kbps=round(report.kbps, 3),
        keyframe_bits=report.keyframe_bits,
        feature_bits=report.feature_bits,
        overhead_bits=report.overhead_bits,
        psnr_rgb=round(
            float(np.mean([psnr_rgb(a, b) for a, b in zip(originals, decoded, strict=True)])), 3
        ),
        ms_ssim=None if any(m is None for m in msssim) else round(float(np.mean(msssim)), 4),
        encode_fps=round(len(decoded) / t_enc, 1),
        decode_fps=round(len(decoded) / t_dec, 1),
        bitstream=str(gfv),
        video=str(video),
        side_by_side=str(png),
    )
    (out / "summary.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary
