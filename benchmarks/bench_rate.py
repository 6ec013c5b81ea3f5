"""Rate control accuracy and what the encoder's watch triggers, on real clips.

    python benchmarks/bench_rate.py [--rates 2,4,8,16] [--frames 250] [CLIP ...]

For each clip and target rate: the rate reached (whole file: header, key frames, features,
framing), its error against the target, the key frames sent and why, and encode speed. Then,
with fixed QP, the key frames the watch adds on each clip as it is and on two clips joined
(a cut to another person), with the frame of the cut, and on three shots A, B, A (the cut
back to A is a recall of A's reference from the bank: its frame, and the key frames' bits).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

from gfvc.codec import (
    Encoder,
    EncodeSettings,
    FramePreparer,
    make_encoder,
    stream_chunks,
    stream_report,
)

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
DEFAULT = ["lp_d3.mp4", "vr_1.mp4", "dpe_d.mp4", "stk_Obama_clip1.mp4", "edt_mouth_source.mp4"]


def frames_of(name: str, n: int):
    path = Path(name) if Path(name).exists() else FACES / name
    prep = FramePreparer(path, EncodeSettings(frames=n))
    out = list(prep)
    prep.close()
    return out


def code(frames, settings: EncodeSettings) -> tuple[Encoder, bytes, float]:
    enc = make_encoder(settings, Fraction(25), frames=len(frames))
    t0 = time.perf_counter()
    data = b"".join(stream_chunks(enc, frames))
    return enc, data, len(frames) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", default=DEFAULT)
    ap.add_argument("--rates", default="2,4,8,16")
    ap.add_argument("--frames", type=int, default=250)
    args = ap.parse_args()
    clips = {c: frames_of(c, args.frames) for c in args.clips}
    print(f"{'clip':24} {'target':>6} {'kbps':>6} {'error':>6}  key frames (why)          fps")
    worst = 0.0
    for name, frames in clips.items():
        for r in (float(x) for x in args.rates.split(",")):
            enc, data, fps = code(frames, EncodeSettings(kbps=r))
            got = stream_report(data).kbps
            worst = max(worst, abs(got / r - 1))
            why = dict(
                Counter(k[1] for k in enc.keys) + Counter(f"recall:{r[1]}" for r in enc.recalls)
            )
            qps = [k[2] for k in enc.keys]
            print(
                f"{name[:24]:24} {r:6g} {got:6.2f} {100 * (got / r - 1):+5.1f}%  {why} QP {qps[:4]} {fps:5.0f}"
            )
    print(f"worst rate error: {100 * worst:.1f} %")
    print("\nwatch, fixed QP: extra key frames per clip")
    for name, frames in clips.items():
        enc, _, fps = code(frames, EncodeSettings())
        print(
            f"{name[:24]:24} {[(i, why) for i, why, _, _ in enc.keys]} recalls {enc.recalls} {fps:5.0f} fps"
        )
    names = list(clips)
    for a, b in zip(names, names[1:], strict=False):
        joined = clips[a][:100] + clips[b][:100]
        enc, _, _ = code(joined, EncodeSettings())
        print(f"{a[:12]}+{b[:12]} (cut at 100): {[(i, why) for i, why, _, _ in enc.keys]}")
    # the reference bank: a cut back to a person seen before is a recall, not a key frame
    for a, b in zip(names, names[1:], strict=False):
        back = clips[a][:100] + clips[b][:100] + clips[a][100:200]
        enc, data, _ = code(back, EncodeSettings())
        print(
            f"{a[:12]}+{b[:12]}+{a[:12]} (cuts at 100, 200): keys "
            f"{[(i, why, bits) for i, why, _, bits in enc.keys]} recalls {enc.recalls}"
        )


if __name__ == "__main__":
    main()
