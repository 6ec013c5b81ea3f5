"""What random access costs: feature bits per key frame when the range coder restarts at every
key unit (format version 2) against carrying its statistics across (version 1).

    python benchmarks/bench_random_access.py [--gop 25] [--frames 250] [CLIP ...]

Prints, per clip, the feature bits of both encodings, the number of key frames and the extra
bits each later key frame costs; the key pictures themselves are identical in both runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from gfvc.bitstream import KEY
from gfvc.codec import Encoder, EncodeSettings, FramePreparer, build_model, settings_keyframe

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
DEFAULT_CLIPS = ["lp_d3.mp4", "vr_1.mp4", "stk_Obama_clip1.mp4", "dpe_d.mp4"]


def feature_bits(frames: list[np.ndarray], gop: int, reset: bool) -> tuple[int, int]:
    """(feature bits, key frames) of ``frames`` coded with the default model."""
    model = build_model("landmark")
    enc = Encoder(model, settings_keyframe(EncodeSettings(), model), gop=gop)
    if not reset:  # version-1 behaviour: statistics carried across key units
        enc.coder.reset = lambda: None  # type: ignore[method-assign]
    bits = keys = 0
    for f in frames:
        unit = enc.encode_unit(f)
        if unit[0] == KEY:
            keys += 1
        else:
            bits += 8 * (len(unit) - 1)
    return bits, keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", default=DEFAULT_CLIPS)
    ap.add_argument("--gop", type=int, default=25)
    ap.add_argument("--frames", type=int, default=250)
    args = ap.parse_args()
    print(f"{'clip':28} {'frames':>6} {'keys':>4} {'v1 bits':>8} {'v2 bits':>8} {'bits/key':>8}")
    extra = []
    for name in args.clips:
        path = Path(name) if Path(name).exists() else FACES / name
        prep = FramePreparer(path, EncodeSettings(frames=args.frames))
        frames = list(prep)
        prep.close()
        v1, keys = feature_bits(frames, args.gop, reset=False)
        v2, _ = feature_bits(frames, args.gop, reset=True)
        per_key = (v2 - v1) / max(keys - 1, 1)
        extra.append(per_key)
        print(f"{path.name:28} {len(frames):>6} {keys:>4} {v1:>8} {v2:>8} {per_key:>8.1f}")
    print(f"mean extra bits per key frame: {np.mean(extra):.1f}")


if __name__ == "__main__":
    main()
