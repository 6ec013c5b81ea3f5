"""A hard case built from ../shared/data/faces: lp_d3, then vr_1, then an expressive held-out
speaker (two cuts, three people, 10 s). The default model under rate control at 4, 8 and 16
kbps (the enhancement layer from 7 kbps) against x265 low delay: MS-SSIM on every frame, dlib
landmark distance, identity and eye-openness error on every 10th, and the mean error two frames
after the first cut. Usage: python benchmarks/bench_hard_case.py"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from pytorch_msssim import ms_ssim

from gfvc.codec import EncodeSettings, build_model, decode_frames, encode_frames, stream_report
from gfvc.eval.anchors import anchor_code
from gfvc.eval.face import dlib_pair_metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import clip_frames  # noqa: E402

SPEAKERS = (("lp_d3.mp4", 80), ("vr_1.mp4", 80), ("dt_W011_front_surprised_level3_001.mp4", 90))


def score(ref: list[np.ndarray], dec: list[np.ndarray]) -> str:
    t = [torch.from_numpy(np.stack(x)).permute(0, 3, 1, 2).float() for x in (ref, dec)]
    ms = float(ms_ssim(*t, data_range=255))
    r = [dlib_pair_metrics(ref[i], dec[i], expression=True) for i in range(0, len(ref), 10)]
    m = {
        k: np.nanmean([x[k] for x in r if x[k] is not None]) for k in ("lmd", "id_dist", "eye_err")
    }
    cut = np.abs(dec[82].astype(int) - ref[82]).mean()
    return f"ms-ssim {ms:.3f} lmd {m['lmd']:.2f} id {m['id_dist']:.3f} eye {m['eye_err']:.3f} cut-err {cut:.1f}"


def main() -> None:
    frames = [f for name, n in SPEAKERS for f in clip_frames(name, n)]
    model = build_model("landmark")
    for kbps in (4, 8, 16):
        model.reset()
        data = encode_frames(frames, EncodeSettings(kbps=kbps), Fraction(25), model=model)
        dec = list(decode_frames(data, model=model))
        print(f"landmark --kbps {kbps}: {stream_report(data).kbps:.2f} kbps", score(frames, dec))
    for qp in (51, 46, 41):
        a = anchor_code(frames, "x265", qp, 25.0)
        kbps = a.bits / len(frames) * 25 / 1000
        print(f"x265 QP {qp}: {kbps:.2f} kbps", score(frames, a.decoded_frames))


if __name__ == "__main__":
    main()
