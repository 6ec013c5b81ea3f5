"""Long inputs in flat memory: peak RSS of `gfvc encode` and `gfvc decode` by input length.

    python benchmarks/bench_long_input.py [--minutes 1 10] [--size 1920x1080] [--keep DIR]

Writes a synthetic call of each length (a real talking-face clip, looped, drifting over a
1080p room; libx264 ultrafast), then runs `gfvc encode` and `gfvc decode` on it, each in its
own process, and prints the peak resident memory of that process (ru_maxrss of the child),
its wall time and frames per second. Memory must not grow with the length: frames are
streamed through tracking, cropping, coding and writing; nothing holds the video.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from realclips import FACES, background, face_frames, paste  # noqa: E402


def write_call(path: Path, minutes: float, width: int, height: int, fps: int = 25) -> int:
    """A long call: a 256-px face clip (looped back and forth) drifting slowly over a room."""
    import av

    face = face_frames(FACES / "stk_Obama_clip1.mp4", 300)
    loop = face + face[::-1]
    n = int(minutes * 60 * fps)
    bg = background(width, height)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(n):
            img = bg.copy()
            t = i / fps
            x = int(width / 2 - 128 + width * 0.2 * np.sin(2 * np.pi * t / 40))
            y = int(height / 2 - 160 + height * 0.05 * np.sin(2 * np.pi * t / 17))
            paste(img, loop[i % len(loop)], x, y)
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            vf.time_base = Fraction(1, fps)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--keep", type=Path, help="keep the generated inputs here (reused)")
    ap.add_argument(
        "--steps", nargs="+", default=["encode", "decode"], choices=["encode", "decode"]
    )
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    gfvc = [sys.executable, "-m", "gfvc"]
    work = args.keep or Path(tempfile.mkdtemp(prefix="gfvc-long-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{'minutes':>7} {'frames':>7} {'step':<7} {'peak MB':>8} {'s':>7} {'fps':>6}")
    for minutes in sorted(args.minutes):
        src = work / f"call_{minutes:g}min_{w}x{h}.mp4"
        n = int(minutes * 60 * 25)
        if not src.exists():
            write_call(src, minutes, w, h)
        gfv, out = work / f"{src.stem}.gfv", work / f"{src.stem}_dec.mp4"
        for step, cmd in (
            ("encode", [*gfvc, "encode", str(src), "-o", str(gfv), "-q"]),
            ("decode", [*gfvc, "decode", str(gfv), "-o", str(out), "-q"]),
        ):
            if step not in args.steps:
                continue
            # each measurement in a fresh interpreter so ru_maxrss is this step's own
            probe = [
                sys.executable,
                "-c",
                "import resource,subprocess,sys;"
                "r=subprocess.run(sys.argv[1:]);"
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);"
                "sys.exit(r.returncode)",
                *cmd,
            ]
            t0 = time.perf_counter()
            env = {**os.environ, "PYTHONPATH": str(ROOT), "GLOG_minloglevel": "2"}
            res = subprocess.run(probe, env=env, capture_output=True, text=True)
            secs = time.perf_counter() - t0
            if res.returncode:
                print(f"{minutes:>7g} {n:>7} {step:<7} failed: {res.stderr.strip()[-300:]}")
                break
            peak = int(res.stdout.strip().splitlines()[-1]) / 1024
            print(
                f"{minutes:>7g} {n:>7} {step:<7} {peak:>8.0f} {secs:>7.0f} {n / secs:>6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
