"""Measure the range of every editable `landmark` component over the model's training clips.

    python benchmarks/edit_ranges.py [CACHE_DIR] [OUT_JSON]

``gfvc edit`` refuses values the model never saw in training. This script analyses the
FaceMesh landmarks cached by ``gfvc train`` (``~/.cache/gfvc/faces256``: the face crops of
``../shared/data/faces``, up to 300 frames per clip) with the packaged shape model, keeps the
training split of ``configs/train_landmark.yaml`` (validation people left out, as in
training), and writes per component the 0.5th and 99.5th percentiles (the allowed range:
tracking glitches at the extremes excluded), the mean and the standard deviation (the unit of
the edit strips) to ``gfvc/data/landmark_edit_ranges.json``, keyed by the shape model's
digest so a different checkpoint cannot silently use them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import yaml

from gfvc.edit import LANDMARK_EDITABLE, shape_digest
from gfvc.models.faceshape import POINTS
from gfvc.models.landmark import LandmarkModel
from gfvc.train.data import cached_clips, identity_groups, load_clip

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    cache = Path(sys.argv[1] if len(sys.argv) > 1 else "~/.cache/gfvc/faces256").expanduser()
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "gfvc/data/landmark_edit_ranges.json"
    cfg = yaml.safe_load((ROOT / "configs/train_landmark.yaml").read_text())
    groups = identity_groups((ROOT / cfg["faces_dir"]).resolve())
    val = set(cfg["val_identities"])
    clips = [c for c in cached_clips(cache) if groups.get(c, c) not in val]
    model = LandmarkModel.create()
    names = model.feature_names
    feats = []
    for c in clips:
        clip = load_clip(cache, c)
        for pts in clip.landmarks[clip.valid][:, list(POINTS)].astype(np.float64):
            feats.append(model.shape.analyse(pts))
    x = np.stack(feats)
    stats = {}
    for name in LANDMARK_EDITABLE:
        v = x[:, names.index(name)]
        lo, hi = np.percentile(v, [0.5, 99.5])
        stats[name] = {
            "lo": round(float(lo), 2),
            "hi": round(float(hi), 2),
            "mean": round(float(v.mean()), 3),
            "std": round(float(v.std()), 3),
        }
        print(f"{name:14s} {lo:8.2f} .. {hi:8.2f}   mean {v.mean():7.2f}  std {v.std():6.2f}")
    doc = {
        "shape_sha256": shape_digest(model.shape),
        "source": "gfvc training clips (configs/train_landmark.yaml split), FaceMesh landmarks "
        "analysed with the packaged shape model; lo/hi = 0.5th/99.5th percentiles",
        "clips": len(clips),
        "frames": len(x),
        "components": stats,
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{out}: {len(clips)} clips, {len(x)} frames")


if __name__ == "__main__":
    main()
