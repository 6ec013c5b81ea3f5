"""Entropy coding on real features: coded bits against the empirical entropy of the same symbols.

    python benchmarks/bench_entropy.py [--model mesh] [--clips lp_d3 lp_d0 ...] [--frames 250]

For each clip: mesh (FaceMesh) features of the face crop, closed-loop residuals at the model's
default qstep, coded per frame (one independently decodable payload per frame, as in the
bitstream). Prints, per coder, bits per inter frame and the ratio to
  H0   the zeroth-order empirical entropy of all residual symbols of the clip (one static
       table known in advance: a coder that adapts must pay to learn it),
  Hc   the sum of per-coordinate empirical entropies (an optimistic bound),
and the coder's speed. Numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from gfvc.codec import EncodeSettings, FramePreparer, build_model
from gfvc.features.entropy import feature_coder
from gfvc.features.quant import ClosedLoopPredictor, quantize

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"


def entropy_bits(symbols: np.ndarray) -> float:
    _, c = np.unique(symbols, return_counts=True)
    p = c / c.sum()
    return float(-(c * np.log2(p)).sum())


def residuals(model_name: str, clip: Path, frames: int) -> tuple[np.ndarray, float]:
    s = EncodeSettings(model=model_name, frames=frames)
    model = build_model(model_name)
    prep = FramePreparer(clip, s)
    feats = np.stack([model.analyse(f) for f in prep])
    prep.close()
    qstep = model.default_qstep
    pred = ClosedLoopPredictor.from_ints(quantize(feats[0], qstep), qstep)
    out = []
    for f in feats[1:]:
        q = pred.residual(f)
        pred.update(q)
        out.append(q)
    return np.stack(out), float(prep.fps)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="mesh")
    ap.add_argument(
        "--clips", nargs="*", default=["lp_d3", "lp_d0", "vr_1", "dpe_d", "stk_trump_clip1"]
    )
    ap.add_argument("--frames", type=int, default=250)
    a = ap.parse_args()
    print(
        f"{'clip':18} {'coder':10} {'bits/frame':>10} {'H0/frame':>9} {'Hc/frame':>9} {'vs H0':>7} {'vs Hc':>7} {'kbps@fps':>9} {'enc us':>7} {'dec us':>7}"
    )
    for name in a.clips:
        path = FACES / f"{name}.mp4"
        if not path.exists():
            print(f"{name}: not found, skipped")
            continue
        q, fps = residuals(a.model, path, a.frames)
        n = len(q)
        h0 = entropy_bits(q.ravel()) / n
        hc = sum(entropy_bits(q[:, j]) for j in range(q.shape[1])) / n
        for coder in ("range", "expgolomb"):
            enc, dec = feature_coder(coder, q.shape[1]), feature_coder(coder, q.shape[1])
            t0 = time.perf_counter()
            payloads = [enc.encode(r) for r in q]
            te = time.perf_counter() - t0
            t0 = time.perf_counter()
            ok = all(np.array_equal(dec.decode(p), r) for p, r in zip(payloads, q, strict=True))
            td = time.perf_counter() - t0
            bits = 8 * sum(map(len, payloads)) / n
            print(
                f"{name:18} {coder:10} {bits:10.1f} {h0:9.1f} {hc:9.1f} {bits / h0 - 1:+7.1%} {bits / hc - 1:+7.1%} "
                f"{bits * fps / 1000:9.2f} {1e6 * te / n:7.0f} {1e6 * td / n:7.0f}"
                + ("" if ok else "  DECODE MISMATCH")
            )


if __name__ == "__main__":
    main()
