"""Training data: face crops of real clips with their FaceMesh landmarks, cached on disk.

``build_cache`` runs the codec's own frame preparation (the same face crop as ``gfvc
encode``) and FaceMesh over each clip once and stores, per clip, ``frames.npy`` (N, S, S, 3)
uint8 and ``landmarks.npy`` (N, 478, 3) float32 in pixels (NaN where no face was found).
Training then memory-maps these files instead of decoding video.

Splits are by identity (``identity_groups``): clips of one person never straddle train and
validation.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gfvc.errors import InputError


def identity_groups(faces_dir: Path) -> dict[str, str]:
    """clip stem -> identity label, read from the data README (one group per line).

    Clips the README does not group (batch 1) are their own identity.
    """
    groups: dict[str, str] = {}
    readme = faces_dir / "README.md"
    if readme.exists():
        for line in readme.read_text().splitlines():
            m = re.match(r"^- ([A-Za-z0-9_]+): (.+)$", line.strip())
            if m:
                for clip in m.group(2).split(","):
                    groups[clip.strip()] = m.group(1)
    for p in faces_dir.glob("*.mp4"):
        groups.setdefault(p.stem, p.stem)
    return groups


@dataclass
class ClipCache:
    name: str
    frames: np.ndarray  # (N, S, S, 3) uint8, memory-mapped
    landmarks: np.ndarray  # (N, 478, 3) float32, NaN rows where no face

    @property
    def valid(self) -> np.ndarray:
        return ~np.isnan(self.landmarks[:, 0, 0])


def build_clip(src: Path, dst: Path, size: int = 256, max_frames: int = 300) -> None:
    """Crop + landmarks of one clip into ``dst/`` (skipped when already complete)."""
    from gfvc.codec import EncodeSettings, FramePreparer
    from gfvc.io import FaceLandmarker

    if (dst / "meta.json").exists():
        return
    dst.mkdir(parents=True, exist_ok=True)
    prep = FramePreparer(src, EncodeSettings(size=size, frames=max_frames))
    frames, lms = [], []
    with FaceLandmarker() as lm:
        for f in prep:
            frames.append(f)
            pts = lm(f)
            lms.append(
                np.full((478, 3), np.nan, np.float32) if pts is None else pts.astype(np.float32)
            )
    prep.close()
    np.save(dst / "frames.npy", np.stack(frames))
    np.save(dst / "landmarks.npy", np.stack(lms))
    (dst / "meta.json").write_text(
        json.dumps(
            {"source": str(src), "frames": len(frames), "fps": float(prep.fps), "size": size}
        )
    )


def build_cache(
    clips: Iterable[Path],
    cache: Path,
    size: int = 256,
    max_frames: int = 300,
    progress: Callable[[str], None] | None = None,
) -> None:
    for src in clips:
        if progress:
            progress(src.stem)
        try:
            build_clip(src, cache / src.stem, size, max_frames)
        except InputError as e:  # a clip without a usable face is skipped, not fatal
            if progress:
                progress(f"skipped {src.stem}: {e}")


def load_clip(cache: Path, name: str) -> ClipCache:
    d = cache / name
    if not (d / "meta.json").exists():
        raise InputError(f"{d} is not a finished clip cache; run build_cache first")
    return ClipCache(name, np.load(d / "frames.npy", mmap_mode="r"), np.load(d / "landmarks.npy"))


def cached_clips(cache: Path) -> list[str]:
    return sorted(p.parent.name for p in cache.glob("*/meta.json"))


if __name__ == "__main__":  # python -m gfvc.train.data FACES_DIR CACHE_DIR
    import sys

    faces, cache = Path(sys.argv[1]), Path(sys.argv[2])
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    build_cache(sorted(faces.glob("*.mp4")), cache, progress=lambda s: print(s, flush=True))
