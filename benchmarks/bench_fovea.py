"""The base layer alone, uniform against foveated sampling, at one x265 rate.

    python benchmarks/bench_fovea.py [--size 128] [--kbps 11] [--frames 250] [CLIP ...]

Each clip (face-cropped as the codec crops it) is sampled to the base size through each map,
coded by the base layer's x265 low delay at ``--kbps`` (ABR), decoded, mapped back to 256x256
and scored against the crop: no generative layer, no fusion, so the numbers say what the
sampling alone buys. The maps: uniform, the standard map at gains 1 and 2, a wider map, and
the map the encoder picks from the first frame's eyes and mouth. Means over the clips are
printed last (docs/enhance.md, "Foveated base pictures").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from gfvc.codec import EncodeSettings, FramePreparer, build_model
from gfvc.enhance.base_layer import BaseLayerDecoder, BaseLayerEncoder
from gfvc.enhance.fovea import Fovea, defoveate, fovea_for
from gfvc.eval.metrics import evaluate_sequences

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
DEFAULT = ["lp_d3.mp4", "vr_1.mp4", "dpe_d.mp4"]
METRICS = ["ms_ssim", "lmd", "eye_err", "mouth_err", "id_dist"]
MAPS = {
    "uniform": Fovea(gain=0.0),
    "gain 1": Fovea(0.5, 0.56, 0.2, 0.2, 1.0),
    "gain 2": Fovea(0.5, 0.56, 0.2, 0.2, 2.0),
    "wide 1.5": Fovea(0.5, 0.57, 0.25, 0.25, 1.5),
}


def face_map(frame: np.ndarray, size: int) -> Fovea:
    """The map the encoder picks for a key frame (``gfvc.enhance.fovea.fovea_for``)."""
    model = build_model("landmark")
    model.analyse(frame)
    return fovea_for(model.eyes_and_mouth(), model.size, size)


def run(frames: list[np.ndarray], fovea: Fovea, size: int, kbps: float) -> dict[str, float]:
    enc = BaseLayerEncoder(size, qp=None, kbps=kbps, foveated=True)
    dec = BaseLayerDecoder(size, foveated=True)
    out, bits = [], 0
    for i, f in enumerate(frames):
        chunk = enc.encode(f, restart=i == 0, fovea=fovea)
        bits += 8 * len(chunk)
        pic = torch.from_numpy(dec.decode(chunk, restart=i == 0)).permute(2, 0, 1)[None] / 255
        up = defoveate(pic, dec.fovea, f.shape[0])[0].permute(1, 2, 0)
        out.append((up * 255).round().byte().numpy())
    rep = evaluate_sequences(frames, out, METRICS)
    return {"kbps": bits * 25 / len(frames) / 1000, **{m: float(rep[m]) for m in METRICS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", default=DEFAULT)
    ap.add_argument("--size", type=int, default=128, choices=(64, 128))
    ap.add_argument("--kbps", type=float, default=11.0)
    ap.add_argument("--frames", type=int, default=250)
    a = ap.parse_args()
    rows: dict[str, list[dict[str, float]]] = {}
    for clip in a.clips:
        frames = list(FramePreparer(FACES / clip, EncodeSettings(frames=a.frames)))
        for name, fovea in {**MAPS, "face": face_map(frames[0], a.size)}.items():
            r = run(frames, fovea, a.size, a.kbps)
            rows.setdefault(name, []).append(r)
            print(json.dumps({"clip": clip, "map": name, **{k: round(v, 4) for k, v in r.items()}}))
    print(f"means over {len(a.clips)} clips, {a.size}x{a.size} base at {a.kbps} kbps:")
    for name, rs in rows.items():
        means = {k: np.mean([r[k] for r in rs]) for k in rs[0]}
        print(f"  {name:9s} " + " ".join(f"{k} {v:.4f}" for k, v in means.items()))


if __name__ == "__main__":
    main()
