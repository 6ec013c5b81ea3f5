"""Training the enhancement layer's fusion network (``gfvc.enhance.fusion.Fuser``) on CPU.

Data (``build_fusion_data``): for each cached clip, the first frames coded the way the
codec codes them: the landmark model's key frame and features, decoded to the mesh warp (the
fusion input), and the clip downscaled to each base-layer size and coded by x265 low delay at
a range of QPs. Training draws (frame, base setting) at random and learns
``Fuser(base_up, warped) -> original`` under L1 + MS-SSIM. Resumable: ``RUN/last.pt`` every
``checkpoint_every`` steps; validation on people never seen in training goes to
``RUN/log.jsonl``.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from gfvc.enhance import to_image
from gfvc.enhance.align import ALIGN_NAME, WarpAligner
from gfvc.enhance.fovea import Fovea, defoveate, fovea_for
from gfvc.enhance.fusion import Fuser, widen_from
from gfvc.models.landmark import GUIDE_CHANNELS
from gfvc.train.trainer import append_log, optimizer_step, warmup_cosine

#: The key-frame QPs (SVT-AV1) the packaged network's training warps were rendered from.
KEY_QPS = (32, 40, 48)
#: Base-layer sizes and the x265 QPs training covers at each.
TRAIN_BASES: dict[int, tuple[int, ...]] = {64: (24, 28, 32, 36, 40), 128: (30, 34, 38, 42, 46)}


@dataclass
class FusionTrainConfig:
    data_dir: str = "~/.cache/gfvc/fusion"
    run_dir: str = "runs/fusion"
    steps: int = 3000
    batch: int = 8
    lr: float = 2e-3
    width: int = 16
    ssim_weight: float = 0.5
    #: L1 on the image gradients: rewards the warp's sharp texture where the target has it
    #: (L1 + SSIM alone let the network settle on the base's blur, which costs identity)
    grad_weight: float = 0.0
    init: str = ""  # start from these fusion weights (fine-tuning) instead of from scratch
    crop: int = 128  # training crop side (the network is fully convolutional)
    checkpoint_every: int = 100
    val_every: int = 250
    threads: int = 2
    seed: int = 0
    time_limit_min: float = 0.0
    val_clips: list[str] = field(default_factory=list)
    #: base sizes to train on (empty: all of ``TRAIN_BASES``)
    base_sizes: list[int] = field(default_factory=list)
    #: train on warps moved onto the base's geometry (``gfvc.enhance.align``); the weights
    #: record it, and the decoder aligns for them
    align: bool = False
    #: the key-frame QPs (SVT-AV1) the training warps are rendered from, one per clip at random
    key_qps: list[int] = field(default_factory=lambda: list(KEY_QPS))
    #: extra L1 weight inside the eye boxes (FaceMesh on the target frames; 0: none): the
    #: network settles on the base's blur there, which costs eye error and identity
    eye_weight: float = 0.0
    #: give the network the motion model's hints (``gfvc.models.landmark.fusion_guide``:
    #: where the warp changed the key's eye and mouth openings); with ``init``, the given
    #: weights are widened so that training starts from exactly what they computed
    guide: bool = False


class Batch(NamedTuple):
    base: torch.Tensor  # (N, 3, S, S) upscaled base pictures
    warped: torch.Tensor  # (N, 3, S, S) mesh warps of the key frame
    target: torch.Tensor  # (N, 3, S, S) camera frames
    eyes: torch.Tensor | None = None  # (N, 1, S, S) eye boxes
    guide: torch.Tensor | None = None  # (N, GUIDE_CHANNELS, S, S) fusion hints


def _to_t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255


class FusionData:
    """All clips of a data folder in memory; batches of (base_up, warped, target)."""

    def __init__(
        self, folder: Path, seed: int = 0, sizes: list[int] | None = None, align: bool = False
    ) -> None:
        self.clips = []
        for f in sorted(folder.glob("*.npz")):
            with np.load(f) as z:
                self.clips.append({k: z[k] for k in z.files if not k.startswith("bits")})
        if not self.clips:
            raise FileNotFoundError(f"no fusion data in {folder}")
        self.keys = [
            k
            for k in self.clips[0]
            if k.startswith("b") and (not sizes or int(k[1:].split("_")[0]) in sizes)
        ]
        self.rng = random.Random(seed)
        self.aligner = WarpAligner() if align else None
        self._eyes: dict[int, np.ndarray] = {}  # clip index -> (T, S, S) eye masks

    def eye_mask(self, i: int, t: int) -> np.ndarray:
        """Frame ``t`` of clip ``i``: 1 inside its eye boxes (each eye ring's bounding box
        grown by half its width each way, brows included), else 0; all 0 without a face."""
        if i not in self._eyes:
            from gfvc.io import FaceLandmarker
            from gfvc.models.landmark import LEFT_EYE_RING, RIGHT_EYE_RING

            gt = self.clips[i]["gt"]
            masks = np.zeros(gt.shape[:3], np.float32)
            with FaceLandmarker() as lm:
                for k, frame in enumerate(gt):
                    pts = lm(frame)
                    if pts is None:
                        continue
                    for ring in (LEFT_EYE_RING, RIGHT_EYE_RING):
                        (x0, y0), (x1, y1) = pts[list(ring), :2].min(0), pts[list(ring), :2].max(0)
                        g = 0.5 * (x1 - x0)
                        ys, xs = (
                            slice(max(0, int(y0 - 1.5 * g)), int(y1 + g) + 1),
                            slice(max(0, int(x0 - g)), int(x1 + g) + 1),
                        )
                        masks[k, ys, xs] = 1.0
            self._eyes[i] = masks
        return self._eyes[i][t]

    @staticmethod
    def _base_up(c: dict[str, np.ndarray], k: str, t: int) -> torch.Tensor:
        """The decoder's upscaling of base picture ``t``, through the clip's sampling map
        (none in data built before maps: uniform)."""
        pic, data = _to_t(c[k][t : t + 1]), c.get(f"fovea{c[k].shape[1]}")
        fovea = None if data is None else Fovea.from_bytes(data.tobytes())
        return defoveate(pic, fovea, c["gt"].shape[1])

    def guide(self, i: int, t: int) -> np.ndarray:
        """Frame ``t`` of clip ``i``: the hints the decoder gives a guided network."""
        from gfvc.models.landmark import fusion_guide

        c = self.clips[i]
        if "drv_pts" not in c:
            raise FileNotFoundError("this fusion data has no landmarks: rebuild it")
        return fusion_guide(c["drv_pts"][t], c["key_pts"][t], c["gt"].shape[1])

    def batch(
        self, n: int, crop: int | None = None, eyes: bool = False, guide: bool = False
    ) -> Batch:
        """(base_up, warped, target), with ``eyes`` the (N, 1, S, S) eye masks and with
        ``guide`` the fusion hints."""
        base, warp, gt, mask, hints = [], [], [], [], []
        for _ in range(n):
            i = self.rng.randrange(len(self.clips))
            c = self.clips[i]
            k = self.rng.choice(self.keys)
            t = self.rng.randrange(1, len(c["gt"]))
            base.append(self._base_up(c, k, t))
            w = c["warp"][t]
            if self.aligner is not None:  # as the decoder does, on the whole frame
                w = self.aligner(w, to_image(base[-1]))
            warp.append(_to_t(w[None]))
            gt.append(_to_t(c["gt"][t : t + 1]))
            lists = [base, warp, gt]
            if eyes:
                mask.append(torch.from_numpy(self.eye_mask(i, t))[None, None])
                lists.append(mask)
            if guide:
                hints.append(torch.from_numpy(self.guide(i, t))[None])
                lists.append(hints)
            if crop:
                size = gt[-1].shape[-1]
                y, x = (
                    self.rng.randrange(0, size - crop + 1),
                    self.rng.randrange(0, size - crop + 1),
                )
                for lst in lists:
                    lst[-1] = lst[-1][..., y : y + crop, x : x + crop]
        cat = [torch.cat(lst) for lst in (base, warp, gt)]
        return Batch(
            *cat,
            eyes=torch.cat(mask) if eyes else None,
            guide=torch.cat(hints) if guide else None,
        )


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def loss_fn(
    y: torch.Tensor,
    t: torch.Tensor,
    ssim_weight: float,
    grad_weight: float = 0.0,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """L1 + SSIM (MS-SSIM needs frames above 160 pixels; training uses crops), plus L1 on
    the horizontal and vertical image gradients with ``grad_weight``. ``weight`` (N, 1, H,
    W): per-pixel L1 weights (the eye boxes weighted up)."""
    from pytorch_msssim import ssim

    err = (y - t).abs()
    l1 = err.mean() if weight is None else (err * weight).mean()
    s = ssim(y, t, data_range=1.0, size_average=True)
    loss = l1 + ssim_weight * (1 - s)
    parts = {"l1": float(l1.detach()), "ssim": float(s.detach())}
    if grad_weight:
        g = sum((a - b).abs().mean() for a, b in zip(_gradients(y), _gradients(t), strict=True))
        loss = loss + grad_weight * g
        parts["grad"] = float(g.detach())
    return loss, parts


@torch.inference_mode()
def validate(net: Fuser, data: FusionData, n: int = 24) -> dict[str, float]:
    from pytorch_msssim import ms_ssim

    net.eval()
    rng_state = data.rng.getstate()
    data.rng.seed(4321)
    fused, base = [], []
    for _ in range(n):
        x = data.batch(1, guide=net.guide > 0)
        fused.append(float(ms_ssim(net(x.base, x.warped, x.guide), x.target, data_range=1.0)))
        base.append(float(ms_ssim(x.base, x.target, data_range=1.0)))
    data.rng.setstate(rng_state)
    net.train()
    return {"val_ms_ssim": float(np.mean(fused)), "val_base_ms_ssim": float(np.mean(base))}


def train_fusion(
    cfg: FusionTrainConfig, val_dir: Path | None = None, log: Callable[[str], None] = print
) -> Path:
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    run = Path(cfg.run_dir).expanduser()
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    data = FusionData(Path(cfg.data_dir).expanduser(), cfg.seed, cfg.base_sizes, cfg.align)
    val = FusionData(val_dir, sizes=cfg.base_sizes, align=cfg.align) if val_dir else None
    net = Fuser(width=cfg.width, guide=GUIDE_CHANNELS if cfg.guide else 0)
    if cfg.init:
        ck = torch.load(Path(cfg.init).expanduser(), map_location="cpu", weights_only=True)
        if cfg.guide and not ck.get("guide"):
            widen_from(net, ck["net"])
        else:
            net.load_state_dict(ck["net"])
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    step = 0
    if (run / "last.pt").exists():
        ck = torch.load(run / "last.pt", weights_only=False)
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        data.rng.seed(cfg.seed * 7919 + step)
        log(f"resumed at step {step}")
    for g in opt.param_groups:
        g.setdefault("initial_lr", cfg.lr)
    sched = warmup_cosine(opt, cfg.steps, warmup=100, step=step)
    t0 = t_last = time.time()
    while step < cfg.steps:
        x = data.batch(cfg.batch, cfg.crop, eyes=cfg.eye_weight > 0, guide=cfg.guide)
        weight = None if x.eyes is None else 1.0 + cfg.eye_weight * x.eyes
        y = net(x.base, x.warped, x.guide)
        loss, parts = loss_fn(y, x.target, cfg.ssim_weight, cfg.grad_weight, weight)
        optimizer_step(net, opt, sched, loss)
        step += 1
        if step % 20 == 0:
            log(
                f"step {step}/{cfg.steps} loss {float(loss.detach()):.4f} {parts} {20 / (time.time() - t_last):.2f} it/s"
            )
            t_last = time.time()
            append_log(run / "log.jsonl", {"step": step, "loss": float(loss.detach()), **parts})
        if val is not None and (step % cfg.val_every == 0 or step == cfg.steps):
            v = validate(net, val)
            log(f"validation at {step}: {v}")
            append_log(run / "log.jsonl", {"step": step, **v})
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            _save(run / "last.pt", {"net": net.state_dict(), "opt": opt.state_dict(), "step": step})
        if cfg.time_limit_min and time.time() - t0 > 60 * cfg.time_limit_min:
            _save(run / "last.pt", {"net": net.state_dict(), "opt": opt.state_dict(), "step": step})
            log(f"time limit at step {step}; rerun to continue")
            break
    out = run / "fusion.pt"
    ck = {"format": "gfvc-fusion-1", "width": cfg.width, "step": step, "net": net.state_dict()}
    if cfg.align:
        ck["align"] = ALIGN_NAME
    if cfg.guide:
        ck["guide"] = GUIDE_CHANNELS
    _save(out, ck)
    return out


def _save(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".part")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _decode_with_landmarks(data: bytes, model: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stream's frames as the decoder renders them (mesh warps), with each frame's
    driving landmarks and its key frame's ((T, P, 2) each; a key frame: its own, twice)."""
    from gfvc.codec import decode_frames

    seen: list[np.ndarray] = []
    synthesize = model.synthesize

    def hooked(key_frame: np.ndarray, key_feature: np.ndarray, feature: np.ndarray) -> Any:
        seen.append(model.driving_points(key_feature, np.asarray(feature, dtype=np.float64)))
        return synthesize(key_frame, key_feature, feature)

    model.synthesize = hooked
    frames, drv, key = [], [], []
    try:
        for frame in decode_frames(data, model=model):
            k = model.key_landmarks
            drv.append((seen.pop() if seen else k)[:, :2])
            key.append(k[:, :2])
            frames.append(frame)
    finally:
        del model.synthesize
    return np.stack(frames), np.stack(drv).astype(np.float32), np.stack(key).astype(np.float32)


def build_fusion_data(
    cache: Path,
    out: Path,
    clips: list[str],
    frames: int = 100,
    seed: int = 0,
    log: Callable[[str], None] = print,
    key_qps: tuple[int, ...] | list[int] = KEY_QPS,
) -> None:
    """One ``out/CLIP.npz`` per cached clip (skipped when present): the original frames, the
    mesh warp the decoder renders from the coded features (the key frame at a random QP of
    ``key_qps``), and the clip coded by x265 low delay at every size and QP of
    ``TRAIN_BASES`` (decoded pictures, ``bN_QP``, and bits per frame, ``bitsN_QP``), sampled
    through the map the encoder picks for the first frame (``foveaN``, its 5 bytes)."""
    from gfvc.codec import EncodeSettings, build_model, encode_frames
    from gfvc.enhance.base_layer import BaseLayerDecoder, BaseLayerEncoder
    from gfvc.train.data import load_clip

    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for name in clips:
        qp = rng.choice(list(key_qps))
        f = out / f"{name}.npz"
        if f.exists():
            continue
        gt = np.asarray(load_clip(cache, name).frames[:frames])
        if len(gt) < 20:
            continue
        model = build_model("landmark")
        data = encode_frames(list(gt), EncodeSettings(qp=qp), Fraction(25), model=model)
        model.refiner = None  # the fusion network takes the mesh warp
        warps, drv, key = _decode_with_landmarks(data, model)
        arrays: dict[str, np.ndarray] = {"gt": gt, "warp": warps, "drv_pts": drv, "key_pts": key}
        model.reset()
        model.analyse(gt[0])
        for size, qps in TRAIN_BASES.items():
            fovea = fovea_for(model.eyes_and_mouth(), model.size, size)
            arrays[f"fovea{size}"] = np.frombuffer(fovea.to_bytes(), np.uint8)
            for q in qps:
                enc = BaseLayerEncoder(size, qp=q, foveated=True)
                dec = BaseLayerDecoder(size, foveated=True)
                chunks = [enc.encode(x, restart=i == 0, fovea=fovea) for i, x in enumerate(gt)]
                arrays[f"b{size}_{q}"] = np.stack(
                    [dec.decode(c, restart=i == 0) for i, c in enumerate(chunks)]
                )
                arrays[f"bits{size}_{q}"] = np.array([8 * len(c) for c in chunks])
        tmp = out / f".{name}.part.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, f)
        log(f"fusion data: {name} ({len(gt)} frames, key QP {qp})")


def train_fusion_from_config(path: str | Path | None, log: Callable[[str], None] = print) -> Path:
    """``gfvc train --fusion CONFIG``: build the data (identity split of the landmark
    trainer: the same people are held out) and train."""
    import yaml

    from gfvc.errors import InputError
    from gfvc.train.trainer import TrainConfig, cache_clips, split_clips

    d = yaml.safe_load(Path(path).read_text()) if path else {}
    if not isinstance(d, dict):
        raise InputError(f"{path} must be a YAML mapping of settings")
    landmark = TrainConfig.load(d.pop("landmark_config", "configs/train_landmark.yaml"))
    unknown = set(d) - set(FusionTrainConfig.__dataclass_fields__)
    if unknown:
        raise InputError(f"unknown keys in {path}: {', '.join(sorted(unknown))}")
    cfg = FusionTrainConfig(**d)
    if cfg.steps < 1:
        raise InputError(f"steps in {path} must be at least 1, got {cfg.steps}")
    cache = cache_clips(landmark, log)
    train, val = split_clips(landmark, cache)
    data = Path(cfg.data_dir).expanduser()
    build_fusion_data(cache, data / "train", train, log=log, key_qps=cfg.key_qps)
    build_fusion_data(cache, data / "val", val, log=log, key_qps=cfg.key_qps)
    cfg.data_dir = str(data / "train")
    return train_fusion(cfg, val_dir=data / "val", log=log)
