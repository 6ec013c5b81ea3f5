"""Real-camera input: does the decoded video keep a recognisable face in view?

    python benchmarks/bench_real_input.py [--frames 125] [--every 3] [--baseline] [--case pan]

Builds clips from the real clips in ../shared/data/faces (tests/realclips.py): a face panning
across a wide canvas, a person leaving and coming back, two people (the other one grows),
a portrait phone file with rotation metadata, a variable-frame-rate file, a 10-bit file.
Each is encoded with the default settings (``encode_file``: face tracking, key frames where
the crop jumps or the face is lost or found) and decoded. On every ``--every``-th frame, dlib
(HOG detector, 1x upsampling) looks for a face in the source crop and in the decoded frame,
and the identity distance (dlib ResNet embeddings, each aligned on its own fit) between the
two is measured where both have one. Prints per case: frames where the source has a face,
the share of those where the decoded frame has one too, mean and 90th-percentile identity
distance, key frames, kbps. ``--baseline`` also codes each clip the old way (one crop from
the first 50 frames, no refresh) for comparison.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from realclips import (  # noqa: E402
    FACES,
    background,
    face_frames,
    leave_and_return,
    pan,
    pan_path,
    paste,
    two_people,
    write_clip,
)

W, H, SIDE = 960, 540, 256


def make_cases(n: int, work: Path) -> dict[str, Path]:
    a = face_frames(FACES / "stk_Obama_clip1.mp4", n)
    b = face_frames(FACES / "stk_feifeili_clip1.mp4", n, side=200)
    xs, ys = pan_path(n, W, H, SIDE)
    panned = pan(a, W, H, xs, ys)
    cases = {
        "pan": write_clip(work / "pan.mp4", panned),
        "leave_return": write_clip(
            work / "leave.mp4", leave_and_return(a, W, H, (int(0.35 * n), int(0.65 * n)))
        ),
        "two_faces": write_clip(work / "two.mp4", two_people(a, b, W, H, grow_b=1.6)),
    }
    portrait = []
    for i, f in enumerate(a):
        c = background(540, 960)
        paste(c, f, 142 + int(60 * np.sin(i / n * 2 * np.pi)), 250 + int(40 * i / n))
        portrait.append(c)
    cases["phone_rotated"] = write_clip(work / "phone.mp4", portrait, rotation=90, audio=True)
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.choice([0.02, 0.04, 0.04, 0.08], n))
    cases["vfr"] = write_clip(work / "vfr.mp4", panned, times=list(times - times[0]))
    cases["ten_bit"] = write_clip(work / "tenbit.mp4", panned, pix_fmt="yuv420p10le")
    return cases


def dlib_faces(frames: list[np.ndarray]) -> list[bool]:
    from gfvc.eval.face import _dlib_models

    det = _dlib_models().detector
    return [len(det(np.ascontiguousarray(f), 1)) > 0 for f in frames]


def measure(ref: list[np.ndarray], dec: list[np.ndarray], every: int) -> dict[str, float]:
    from gfvc.eval.face import _dlib_models, _dlib_shape, _embedding

    det = _dlib_models().detector
    idx = range(0, min(len(ref), len(dec)), every)
    has, found, dists = 0, 0, []
    for i in idx:
        r, d = np.ascontiguousarray(ref[i]), np.ascontiguousarray(dec[i])
        rb = det(r, 1)
        if not rb:
            continue
        has += 1
        db = det(d, 1)
        if not db:
            continue
        found += 1
        big = max(rb, key=lambda x: x.area())
        dbig = max(db, key=lambda x: x.area())
        dists.append(
            float(
                np.linalg.norm(
                    _embedding(r, _dlib_shape(r, big)) - _embedding(d, _dlib_shape(d, dbig))
                )
            )
        )
    return {
        "source_faces": has,
        "found_pct": 100.0 * found / max(has, 1),
        "id_mean": float(np.mean(dists)) if dists else float("nan"),
        "id_p90": float(np.percentile(dists, 90)) if dists else float("nan"),
    }


def run_case(path: Path, work: Path, every: int, baseline: bool) -> dict[str, float]:
    from gfvc.bitstream import KEY, parse_stream
    from gfvc.codec import (
        EncodeSettings,
        FramePreparer,
        decode_frames,
        encode_file,
        encode_frames,
        stream_report,
    )
    from gfvc.io import crop_and_resize, find_face_crop, read_frames

    s = EncodeSettings()
    t0 = time.perf_counter()
    if baseline:  # the old way: one crop from the first 50 frames, no refresh
        src = list(read_frames(path))
        box = find_face_crop(src[:50])
        ref = [crop_and_resize(f, box, 256) for f in src]
        data = encode_frames(ref, EncodeSettings(watch=False), Fraction(25))
    else:
        gfv = work / (path.stem + ".gfv")
        encode_file(path, gfv, s)
        data = gfv.read_bytes()
        prep = FramePreparer(path, s)
        ref = list(prep)
        prep.close()
    dec = list(decode_frames(data))
    secs = time.perf_counter() - t0
    out = measure(ref, dec, every)
    out["key_frames"] = sum(1 for u in parse_stream(data).units if u[0] == KEY)
    out["kbps"] = stream_report(data).kbps
    out["frames"] = len(dec)
    out["seconds"] = secs
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=125)
    ap.add_argument("--every", type=int, default=3, help="measure every N-th frame")
    ap.add_argument("--baseline", action="store_true", help="also the old fixed crop")
    ap.add_argument("--case", action="append", help="only these cases")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cases = make_cases(args.frames, work)
        print(
            f"{'case':<14} {'mode':<9} {'frames':>6} {'src faces':>9} {'found %':>8} "
            f"{'id mean':>8} {'id p90':>7} {'keys':>5} {'kbps':>7} {'s':>5}"
        )
        for name, path in cases.items():
            if args.case and name not in args.case:
                continue
            for mode in ("tracked", "baseline") if args.baseline else ("tracked",):
                try:
                    r = run_case(path, work, args.every, mode == "baseline")
                except Exception as exc:  # noqa: BLE001 - report and go on
                    print(f"{name:<14} {mode:<9} failed: {type(exc).__name__}: {exc}")
                    continue
                print(
                    f"{name:<14} {mode:<9} {r['frames']:>6} {r['source_faces']:>9} "
                    f"{r['found_pct']:>8.1f} {r['id_mean']:>8.3f} {r['id_p90']:>7.3f} "
                    f"{r['key_frames']:>5} {r['kbps']:>7.2f} {r['seconds']:>5.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
