"""The side-by-side strips of docs/enhance.md from a finished ``gfvc ctc`` run.

    python benchmarks/enhance_strips.py CTC_OUT [-o docs/results/enhance/strips_2_8_16.png]
        [--ours 2,8,16] [--x265 51,47,41]

One row per sequence: the original frame (the run's strip frame), ours at each target rate,
x265 at each QP, each captioned with the whole sequence's rate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np


def _tile(img: np.ndarray, caption: str) -> np.ndarray:
    out = np.full((img.shape[0] + 22, img.shape[1], 3), 255, np.uint8)
    out[22:] = img
    cv2.putText(out, caption, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument(
        "-o", "--out", type=Path, default=Path("docs/results/enhance/strips_2_8_16.png")
    )
    ap.add_argument("--ours", default="2,8,16")
    ap.add_argument("--x265", default="51,47,41")
    args = ap.parse_args()
    rows = []
    seqs = sorted(p.name.split("__")[0] for p in (args.run / "frames").glob("*__original.png"))
    for seq in seqs:
        tiles = [_tile(cv2.imread(str(args.run / "frames" / f"{seq}__original.png")), seq)]
        jobs = [("landmark", "kbps", r) for r in args.ours.split(",")]
        jobs += [("x265", "qp", q) for q in args.x265.split(",")]
        for codec, point, v in jobs:
            key = f"{seq}__{codec}__{point}{v}"
            kbps = json.loads((args.run / "runs" / f"{key}.json").read_text())["kbps"]
            name = "ours" if codec == "landmark" else f"x265 QP {v}"
            img = cv2.imread(str(args.run / "frames" / f"{key}.png"))
            tiles.append(_tile(img, f"{name} {kbps:.1f} kbps"))
        rows.append(np.concatenate(tiles, axis=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.concatenate(rows, axis=0))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
