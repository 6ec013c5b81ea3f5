"""Shared fixtures: paths to the real clips, and a tiny deterministic model for plumbing tests."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from gfvc.models.base import FeatureField, MotionModel
from gfvc.models.registry import MOTION_MODELS

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FACES = SHARED / "data" / "faces"


GOLDEN = SHARED / "reference" / "golden"


def golden_checkpoint(tmp_path: Path, family: str):
    """An official-layout checkpoint and config written from a golden file, with the golden
    record and its input frames (N, 256, 256, 3) uint8; skips when the file is absent."""
    import torch
    import yaml

    src = GOLDEN / f"{family}.pt"
    if not src.exists():
        pytest.skip(f"shared reference data not present: {src}")
    g = torch.load(src, weights_only=True)
    frames = torch.load(GOLDEN / g["inputs_file"], weights_only=True)["frames_uint8"]
    path = tmp_path / f"{family}-checkpoint.pth.tar"
    torch.save({**g["state_dict"], "epoch": 1}, path)
    cfg = tmp_path / f"{family}-256.yaml"
    cfg.write_text(yaml.safe_dump(g["config"]))
    return str(path), str(cfg), g, frames.permute(0, 2, 3, 1).numpy()


def clip(name: str) -> Path:
    """Path of a real clip, or skip the test when the shared data is not here."""
    p = FACES / name
    if not p.exists():
        pytest.skip(f"real clip {p} not available (../shared/data/faces is absent)")
    return p


def clip_frames(name: str, n: int) -> list[np.ndarray]:
    """The first ``n`` face-cropped 256x256 frames of a real clip (skips without the data)."""
    from gfvc.codec import EncodeSettings, FramePreparer

    prep = FramePreparer(clip(name), EncodeSettings(frames=n))
    frames = list(prep)
    prep.close()
    return frames


class ToyModel(MotionModel):
    """Plumbing-test model: the feature is a 4x4 grid of mean brightness; synthesis shifts
    the key frame's brightness by the feature difference. Deterministic and fast."""

    model_id: ClassVar[int] = 250
    default_qstep: ClassVar[float] = 64.0
    send_key_feature: ClassVar[bool] = False

    def __init__(self, size: int = 64) -> None:
        self.size = size

    @classmethod
    def create(cls, *, checkpoint=None, config=None, device="cpu", size=64):
        return cls(size)

    @property
    def fields(self):
        return (FeatureField("grid", "matrix", (1, 4, 4)),)

    def config_dict(self):
        return {"model": "toy", "size": self.size}

    def analyse(self, frame):
        g = frame.astype(np.float64).mean(axis=2) / 255.0
        s = self.size // 4
        return g.reshape(4, s, 4, s).mean(axis=(1, 3)).ravel()

    def synthesize(self, key_frame, key_feature, feature):
        s = self.size // 4
        delta = np.kron((feature - key_feature).reshape(4, 4), np.ones((s, s))) * 255.0
        return np.clip(key_frame + delta[..., None], 0, 255).round().astype(np.uint8)


class ToySentModel(ToyModel):
    """Same, but the key feature travels in the key-frame unit."""

    model_id: ClassVar[int] = 251
    send_key_feature: ClassVar[bool] = True


for _name, _cls in (("toy", ToyModel), ("toy-sent", ToySentModel)):
    if _name not in MOTION_MODELS:
        _cls.name = _name
        MOTION_MODELS[_name] = _cls


def moving_frames(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Synthetic video: a bright square drifting over a gradient, plus a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for t in range(n):
        img = (xx * 2 + yy).astype(np.float64) % 256
        x0 = (5 + 2 * t) % (size - 16)
        img[20:36, x0 : x0 + 16] = 230
        img = img[..., None].repeat(3, axis=2) + rng.normal(0, 2, (size, size, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def write_video(path, frames, fps=25):
    """Write frames with gfvc's own writer (format from the extension); returns the path."""
    from gfvc.io import VideoWriter

    h, w = frames[0].shape[:2]
    with VideoWriter(path, fps=Fraction(fps), width=w, height=h) as out:
        for f in frames:
            out.write(f)
    return path


def run_cli(*args):
    """Invoke the gfvc command line in-process with str() of every argument."""
    from typer.testing import CliRunner

    from gfvc.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(res, pattern):
    """A user error: non-zero exit, exactly one 'error: ...' line mentioning ``pattern``."""
    assert res.exit_code != 0, res.output
    out = res.output.strip()
    assert "Traceback" not in out, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    assert pattern.lower() in out.lower(), out
