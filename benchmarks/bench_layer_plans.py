"""How a target rate should split between the generative layer and the base layer.

    python benchmarks/bench_layer_plans.py [--rates 8,12] [--frames 250] [CLIP ...]

For each plan (where the enhancement layer starts, the generative layer's share, from which
base rate the 128x128 base replaces the 64x64 one) and each target rate: every clip is
encoded with ``--kbps``, decoded and scored; the means over the clips are printed. The plan
``gfvc.enhance.plan_layers`` uses was chosen with this (docs/enhance.md).
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import numpy as np

import gfvc.enhance as enhance
from gfvc.bitstream import parse_stream
from gfvc.codec import Decoder, EncodeSettings, FramePreparer, encode_frames, stream_report
from gfvc.eval.metrics import evaluate_sequences

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
DEFAULT = ["lp_d3.mp4", "vr_1.mp4", "dpe_d.mp4"]
METRICS = ["ms_ssim", "lmd", "eye_err", "mouth_err", "id_dist", "vmaf"]
#: name: (layer from kbps, generative share (lo, hi) kbps, 128x128 base from kbps)
PLANS = {
    "shipped": (enhance.ENHANCE_FROM_KBPS, enhance.GENERATIVE_KBPS, enhance.LARGE_BASE_FROM_KBPS),
    "base-64-below-10": (10.0, (2.0, 3.0), 10.0),  # shipped until the base coded at slow
    "from-7": (7.0, (2.0, 3.0), 10.0),
    "generative-3": (7.0, (3.0, 4.0), 10.0),
    "base-128-from-7": (7.0, (3.0, 4.0), 6.0),
}


def frames_of(name: str, n: int) -> list[np.ndarray]:
    path = Path(name) if Path(name).exists() else FACES / name
    prep = FramePreparer(path, EncodeSettings(frames=n))
    out = list(prep)
    prep.close()
    return out


def score(frames: list[np.ndarray], kbps: float) -> list[float]:
    data = encode_frames(frames, EncodeSettings(kbps=kbps), Fraction(25))
    parsed = parse_stream(data)
    dec = Decoder(parsed.header)
    out = [dec.decode_unit(u) for u in parsed.units]
    ev = evaluate_sequences(np.stack(frames), np.stack(out), METRICS, fps=25.0)
    return [stream_report(data).kbps] + [ev[m] for m in METRICS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", default=DEFAULT)
    ap.add_argument("--rates", default="8,12")
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--plans", default=",".join(PLANS))
    args = ap.parse_args()
    clips = [frames_of(c, args.frames) for c in args.clips]
    print(f"{'plan':16} {'target':>6} {'kbps':>6} " + " ".join(f"{m:>9}" for m in METRICS))
    for name in args.plans.split(","):
        enhance.ENHANCE_FROM_KBPS, enhance.GENERATIVE_KBPS, enhance.LARGE_BASE_FROM_KBPS = PLANS[
            name
        ]
        for r in (float(x) for x in args.rates.split(",")):
            m = np.mean([score(f, r) for f in clips], axis=0)
            print(
                f"{name:16} {r:6g} {m[0]:6.2f} " + " ".join(f"{x:9.4f}" for x in m[1:]), flush=True
            )


if __name__ == "__main__":
    main()
