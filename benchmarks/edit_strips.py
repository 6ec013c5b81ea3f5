"""The strips of docs/edit.md: every editable `landmark` component, and motion transfer.

    python benchmarks/edit_strips.py [OUT_DIR]      (default: docs/)

``OUT/edit/<name>.png``: one face (frame 0 of ``lp_d6``) decoded
with ``<name>`` moved by -2, -1, 0, +1, +2 standard deviations of that component over the
training clips (``gfvc/data/landmark_edit_ranges.json``; results clamped into the trained
range as ``gfvc edit`` does). 0 is the face as decoded; every tile is the second frame, a
synthesised one (the first is the key picture itself), so all five went through the refiner.

``OUT/animate/animate_landmark.png``: a source face (``lp_s13``, first frame), the driving
frames (``stk_spata_clip1``, a speaker who starts with a closed mouth) and what the receiver shows with relative motion
(``gfvc animate``) and with ``--absolute``.

Everything goes through the ordinary encoder and decoder (key frame SVT-AV1 QP 40). Tiles
are 128 px and the PNGs palette-quantised, to keep the repository small.
"""

from __future__ import annotations

import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from gfvc.animate import animate_file
from gfvc.codec import EncodeSettings, FramePreparer, build_model, encode_frames
from gfvc.edit import LANDMARK_EDITABLE, FeatureEdit, component_stats, edit_frames
from gfvc.io import crop_and_resize, find_face_crop, read_frames

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "data" / "faces"
TILE = 128
STEPS = (-2, -1, 0, 1, 2)


def face(name: str, n: int = 1, crop: bool = True) -> list[np.ndarray]:
    frames = list(read_frames(FACES / name, n))
    box = find_face_crop(frames[:1]) if crop else None
    return [crop_and_resize(f, box, 256) for f in frames]


def label(img: np.ndarray, text: str) -> np.ndarray:
    """A tile with a caption bar underneath."""
    tile = cv2.resize(img, (TILE, TILE), interpolation=cv2.INTER_AREA)
    bar = np.full((18, TILE, 3), 255, np.uint8)
    cv2.putText(bar, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([tile, bar], 0)


def save(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).quantize(colors=128, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"{path.name}: {path.stat().st_size // 1024} KB")


def edit_strips(out: Path) -> None:
    model = build_model("landmark")
    stats = component_stats(model)
    key = face("lp_d6.mp4")[0]
    data = encode_frames([key, key], fps=Fraction(25), model=model)
    print("| component | sd | realised at -2 sd | realised at +2 sd |")  # re-analysed / requested
    for name in LANDMARK_EDITABLE:
        sd = stats[name]["std"]
        tiles, seen = [], {}
        for k in STEPS:
            edits = [FeatureEdit(name, "add", k * sd)] if k else []
            frame = list(edit_frames(data, edits, model=model))[1]  # synthesised, as every tile
            tiles.append(label(frame, f"{name} {k:+d} sd" if k else f"{name} as decoded"))
            model.reset()
            seen[k] = model.analyse(frame)[model.feature_names.index(name)]
        save(np.concatenate(tiles, 1), out / "edit" / f"{name}.png")
        lo, hi = ((seen[k] - seen[0]) / (k * sd) for k in (-2, 2))
        print(f"| {name} | {sd:.2f} | {lo:.0%} | {hi:.0%} |")


def transfer_numbers(model, tag: str, src, drv: list, got: list) -> None:
    """Identity kept (dlib distance to the source vs to the driving person, every 4th frame)
    and motion followed (correlation of re-analysed jaw_open and yaw with the driving's)."""
    from gfvc.eval.face import id_dist

    def feats(frames):
        model.reset()
        return np.array([model.analyse(f) for f in frames])

    fo, fd = feats(got), feats(drv)
    to_src = np.mean([id_dist(src, g) for g in got[::4]])
    to_drv = np.mean([id_dist(d, g) for d, g in zip(drv[::4], got[::4], strict=True)])
    j = model.feature_names.index("jaw_open")
    cj = np.corrcoef(fo[:, j], fd[:, j])[0, 1]
    cy = np.corrcoef(fo[:, 0], fd[:, 0])[0, 1]
    print(
        f"{tag}: id_dist to source {to_src:.3f}, to driving {to_drv:.3f}; "
        f"corr jaw_open {cj:.2f}, yaw {cy:.2f}; yaw range out {np.ptp(fo[:, 0]):.1f} "
        f"vs driving {np.ptp(fd[:, 0]):.1f} degrees"
    )


def animate_strip(out: Path) -> None:
    picks = (8, 24, 28, 36, 52)
    src_name, drv_name = "lp_s13.mp4", "stk_spata_clip1.mp4"
    src = face(src_name)[0]
    n = max(picks) + 1
    prep = FramePreparer(FACES / drv_name, EncodeSettings(frames=n))
    drv = list(prep)  # the crops animate_file drives with
    prep.close()
    model = build_model("landmark")
    rows = []
    blank = np.full((TILE + 18, TILE, 3), 255, np.uint8)
    rows.append([label(src, "source"), *(label(drv[i], f"driving {i}") for i in picks)])
    with tempfile.TemporaryDirectory() as tmp:
        for absolute in (False, True):
            path = Path(tmp) / f"out{absolute}.y4m"
            animate_file(FACES / src_name, FACES / drv_name, path, frames=n, absolute=absolute)
            got = list(read_frames(path))
            tag = "absolute" if absolute else "relative"
            transfer_numbers(model, tag, src, drv, got[1:])
            rows.append([blank, *(label(got[i + 1], f"{tag} {i}") for i in picks)])
    save(
        np.concatenate([np.concatenate(r, 1) for r in rows], 0),
        out / "animate" / "animate_landmark.png",
    )


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs"
    edit_strips(out)
    animate_strip(out)


if __name__ == "__main__":
    main()
