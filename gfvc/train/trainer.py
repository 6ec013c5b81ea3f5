"""``gfvc train``: train the default ``landmark`` model's refiner on CPU (or GPUs).

Resumable: ``RUN/last.pt`` holds weights, optimiser, step and RNG state, written every
``checkpoint_every`` steps; rerunning the same command continues from it. Validation on
held-out people (never seen in training) every ``val_every`` steps goes to ``RUN/log.jsonl``
and ``RUN/curves.png``. ``export`` writes the release file (shape model + refiner weights,
no optimiser) that ``--checkpoint`` or the packaged default loads.

Runs under ``torchrun --nproc_per_node N`` with DistributedDataParallel (gloo on CPU, nccl
on GPUs): each rank samples its own pairs; rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gfvc.errors import CheckpointError, InputError
from gfvc.models.faceshape import POINTS, ShapeModel, fit_shape_model
from gfvc.models.landmark import KEY_POINT_STEP, Refiner, network_input, to_tensor, warp_inputs
from gfvc.train.data import build_cache, cached_clips, identity_groups, load_clip


@dataclass
class TrainConfig:
    faces_dir: str = "../shared/data/faces"
    cache_dir: str = "~/.cache/gfvc/faces256"
    run_dir: str = "runs/landmark"
    val_identities: list[str] = field(
        default_factory=lambda: [
            "lp_d3",
            "vr_1",
            "dpe_d_man",
            "amy_klobuchar",
            "donald_trump",
            "theresa_may",
            "mead_W011",
        ]
    )
    clips: list[str] = field(default_factory=list)  # clip stems to use; empty: every *.mp4
    max_frames: int = 300  # per clip, in the cache
    steps: int = 20000
    batch: int = 8
    lr: float = 1e-3
    width: int = 24
    n_pca: int = 12
    qstep: float = 1.0
    crop: int = 256  # training crop side (the model is fully convolutional)
    max_offset: int = 150  # frames between key and driving frame
    alpha_cost: float = 0.002  # loss per unit of mean refiner blending weight (0.02 shut it off)
    flow_weight: float = 0.02  # loss per pixel of error against the optical-flow teacher
    #: L1 weight of the driving eye openings grown by ``eye_grow`` px (the lids around a
    #: closing eye), and the share of training crops centred on the eyes instead of the mouth
    eye_weight: float = 2.0
    eye_grow: int = 0
    eye_crops: float = 0.0
    checkpoint_every: int = 200
    val_every: int = 500
    val_pairs: int = 48
    seed: int = 0
    threads: int = 2
    time_limit_min: float = 0.0  # stop (after a checkpoint) when exceeded; 0 = none

    @classmethod
    def load(cls, path: str | Path | None, **overrides: Any) -> TrainConfig:
        import yaml

        d: dict[str, Any] = {}
        if path:
            p = Path(path)
            if not p.is_file():
                raise InputError(f"training config {p} does not exist")
            try:
                d = yaml.safe_load(p.read_text()) or {}
            except (yaml.YAMLError, UnicodeDecodeError) as e:
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise InputError(f"training config {p} is not valid YAML: {first}") from None
            if not isinstance(d, dict):
                raise InputError(f"training config {p} must be a YAML mapping of settings")
            unknown = set(map(str, d)) - set(cls.__dataclass_fields__)
            if unknown:
                raise InputError(f"unknown keys in {p}: {', '.join(sorted(unknown))}")
            for k, v in d.items():
                _check_setting(cls(), k, v, p)
        d.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**d)


def _check_setting(default: TrainConfig, key: str, value: Any, path: Path) -> None:
    """``value`` has the type of the default of ``key`` (ints allowed for floats) and a
    number is finite and not negative."""
    want = type(getattr(default, key))
    ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if want is list:
        ok = isinstance(value, list) and all(isinstance(x, str) for x in value)
    if ok and want in (int, float):
        ok = math.isfinite(value) and value >= 0
    if not ok:
        raise InputError(
            f"{path}: {key} must be a {want.__name__} (>= 0 for numbers), got {value!r}"
        )


# ----------------------------------------------------------------------------- data


class PairSampler:
    """Random (key, driving) training pairs with their network inputs, built like the decoder.

    The key frame is degraded by JPEG at a random quality (as a stand-in for the key-frame
    codec), features are quantized at ``qstep`` and key landmarks on the half-pixel grid, so
    the refiner sees what it will see at decode time.
    """

    def __init__(
        self, cache: Path, clips: list[str], shape: ShapeModel, cfg: TrainConfig, seed: int
    ) -> None:
        self.clips = [load_clip(cache, c) for c in clips]
        self.valid = [np.flatnonzero(c.valid) for c in self.clips]
        keep = [i for i, v in enumerate(self.valid) if len(v) >= 2]
        self.clips = [self.clips[i] for i in keep]
        self.valid = [self.valid[i] for i in keep]
        self.shape, self.cfg = shape, cfg
        self.rng = np.random.default_rng(seed)

    def pair(self) -> tuple[np.ndarray, ...]:
        import cv2

        rng, cfg = self.rng, self.cfg
        c = int(rng.integers(len(self.clips)))
        clip, valid = self.clips[c], self.valid[c]
        i = int(rng.choice(valid))
        near = valid[np.abs(valid - i) <= cfg.max_offset]
        j = int(rng.choice(near[near != i])) if len(near) > 1 else i
        key = np.ascontiguousarray(clip.frames[i])
        target = np.ascontiguousarray(clip.frames[j])
        if rng.random() < 0.5:
            # mild: x265 key frames at QP 32-42 look like JPEG ~60-90; harsher settings
            # taught an earlier run to blur everything (v0: sharpness lost, MS-SSIM up)
            q = int(rng.integers(60, 95))
            ok, buf = cv2.imencode(
                ".jpg", cv2.cvtColor(key, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q]
            )
            key = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        kp = clip.landmarks[i][list(POINTS)].astype(np.float64)
        dp = clip.landmarks[j][list(POINTS)].astype(np.float64)
        fk = np.rint(self.shape.analyse(kp) * cfg.qstep) / cfg.qstep
        fd = np.rint(self.shape.analyse(dp) * cfg.qstep) / cfg.qstep
        kq = np.rint(kp / KEY_POINT_STEP) * KEY_POINT_STEP
        drv = self.shape.animate(kq, fk, fd)
        warped, masks, grid = warp_inputs(key, kq, drv)
        teacher = flow_teacher(warped, target, grid)
        # same colour change on input and target, so the net does not learn a colour cast
        if rng.random() < 0.5:
            gain, bias = rng.uniform(0.8, 1.2), rng.uniform(-20, 20)
            key, warped, target = (
                np.clip(a.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
                for a in (key, warped, target)
            )
        return warped, key, masks, grid, target, teacher

    def batch(self, n: int) -> dict[str, torch.Tensor]:
        """``n`` pairs: network input ``x``, target ``t`` and loss weight ``w`` (training crops),
        the whole key frame ``key``, the warp's sampling ``grid`` for the crop's pixels and the
        teacher's grid correction ``flow``."""
        rows: dict[str, list[np.ndarray]] = {k: [] for k in ("x", "t", "w", "key", "grid", "flow")}
        for _ in range(n):
            warped, key, masks, grid, target, teacher = self.pair()
            x = network_input(warped, key, masks, grid)
            t = target.transpose(2, 0, 1).astype(np.float32) / 255
            eyes = masks[1:2] + masks[2:3]
            if self.cfg.eye_grow:
                import cv2

                side = 2 * self.cfg.eye_grow + 1
                eyes = cv2.dilate(eyes[0], np.ones((side, side), np.uint8))[None]
            w = 1 + 4 * masks[0:1] + self.cfg.eye_weight * eyes
            g, f = grid.transpose(2, 0, 1), teacher.transpose(2, 0, 1)
            if self.cfg.crop < x.shape[-1]:
                y0, x0 = self._crop_origin(masks[0], x.shape[-1], eyes[0])
                k = self.cfg.crop
                x, t, w, g, f = (a[:, y0 : y0 + k, x0 : x0 + k] for a in (x, t, w, g, f))
            for name, a in (
                ("x", x),
                ("t", t),
                ("w", w),
                ("grid", g.transpose(1, 2, 0)),
                ("flow", f.transpose(1, 2, 0)),
            ):
                rows[name].append(np.ascontiguousarray(a))
            rows["key"].append(to_tensor(key).numpy())
        return {k: torch.from_numpy(np.stack(v)) for k, v in rows.items()}

    def _crop_origin(
        self, mouth: np.ndarray, size: int, eyes: np.ndarray | None = None
    ) -> tuple[int, int]:
        """Training crop: around the mouth (where the work is) most of the time, or around
        the eyes for a share ``eye_crops`` of the crops."""
        k, rng = self.cfg.crop, self.rng
        ys, xs = np.nonzero(mouth > 0.5)
        if self.cfg.eye_crops and eyes is not None and rng.random() < self.cfg.eye_crops:
            ys, xs = np.nonzero(eyes > 0.5)
        if len(ys) and rng.random() < 0.6:
            cy, cx = ys.mean() + rng.normal(0, k / 6), xs.mean() + rng.normal(0, k / 6)
        else:
            cy, cx = rng.uniform(k / 2, size - k / 2, 2)
        y0 = int(np.clip(round(cy - k / 2), 0, size - k))
        x0 = int(np.clip(round(cx - k / 2), 0, size - k))
        return y0, x0


def flow_teacher(
    warped: np.ndarray, target: np.ndarray, grid: np.ndarray, sigma: float = 4.0
) -> np.ndarray:
    """The grid correction that would align the warp with the real frame: dense optical flow
    (Farneback) from target to warp, smoothed to what the refiner's quarter-resolution flow
    can express, composed with the mesh grid. (H, W, 2) in normalised grid units.

    A photometric loss alone teaches the flow little (bilinear sampling has a 1-pixel reach;
    run v2 gained 0.002 MS-SSIM in 900 steps); a smoothed flow that knew the target lifts
    validation MS-SSIM from 0.871 to 0.945, so the refiner learns its predictable part."""
    import cv2

    gw, gt = (cv2.cvtColor(a, cv2.COLOR_RGB2GRAY) for a in (warped, target))
    flow = cv2.calcOpticalFlowFarneback(gt, gw, None, 0.5, 4, 21, 3, 7, 1.5, 0)
    flow = cv2.GaussianBlur(flow, (0, 0), sigma)
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    moved = cv2.remap(
        grid,
        xs + flow[..., 0],
        ys + flow[..., 1],
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return (moved - grid).astype(np.float32)


def loss_fn(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted L1 (mouth x5, eyes x3) + (1 - MS-SSIM), or 1 - SSIM on crops too small for
    MS-SSIM's five scales. Needs no downloaded weights."""
    from pytorch_msssim import ms_ssim, ssim

    l1 = (weight * (pred - target).abs()).mean() / weight.mean()
    if pred.shape[-1] > 160:
        st = 1 - ms_ssim(pred, target, data_range=1.0, size_average=True)
    else:
        st = 1 - ssim(pred, target, data_range=1.0, size_average=True)
    total = l1 + 0.5 * st
    return total, {"l1": float(l1.detach()), "ssim_loss": float(st.detach())}


# ----------------------------------------------------------------------------- training


def cache_clips(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Build (or complete) the face-crop cache of the clips ``cfg`` trains on; its folder."""
    cache = Path(cfg.cache_dir).expanduser()
    sources = sorted(Path(cfg.faces_dir).glob("*.mp4"))
    if cfg.clips:
        sources = [p for p in sources if p.stem in cfg.clips]
    build_cache(sources, cache, max_frames=cfg.max_frames, progress=lambda s: log(f"cache: {s}"))
    return cache


def split_clips(cfg: TrainConfig, cache: Path) -> tuple[list[str], list[str]]:
    groups = identity_groups(Path(cfg.faces_dir))
    clips = [c for c in cached_clips(cache) if not cfg.clips or c in cfg.clips]
    val = [c for c in clips if groups.get(c, c) in cfg.val_identities]
    train = [c for c in clips if c not in val]
    if len(val) == 0 or len(train) == 0:
        raise InputError("the split left no training or no validation clips; check val_identities")
    return train, val


def shape_model(cfg: TrainConfig, cache: Path, train: list[str], run: Path) -> ShapeModel:
    f = run / "faceshape.npz"
    if f.exists():
        return ShapeModel.load(f)
    pts = []
    for c in train:
        clip = load_clip(cache, c)
        pts.append(clip.landmarks[clip.valid][::3][:, list(POINTS)])
    sm = fit_shape_model(np.concatenate(pts).astype(np.float64), n_pca=cfg.n_pca)
    sm.save(f)
    return sm


def _dist() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def sharpness(img: torch.Tensor) -> torch.Tensor:
    """Mean absolute horizontal + vertical gradient: falls when a network blurs."""
    return (img[..., 1:, :] - img[..., :-1, :]).abs().mean() + (
        img[..., :, 1:] - img[..., :, :-1]
    ).abs().mean()


@torch.no_grad()
def validate(net: torch.nn.Module, pairs: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Refined vs warp-only on held-out people: L1, MS-SSIM, and sharpness relative to the
    real frame (1.0 = as sharp as the target; the blurring runs v0/v1 fell below the warp)."""
    from pytorch_msssim import ms_ssim

    net.eval()
    rows = []
    for b in pairs:
        y = net(b["x"], b["key"], b["grid"]).frame
        warp, t = b["x"][:, :3], b["t"]
        rows.append(
            (
                float((y - t).abs().mean()),
                float((warp - t).abs().mean()),
                float(ms_ssim(y, t, data_range=1.0)),
                float(ms_ssim(warp, t, data_range=1.0)),
                float(sharpness(y) / sharpness(t)),
                float(sharpness(warp) / sharpness(t)),
            )
        )
    net.train()
    m = np.mean(rows, axis=0)
    names = ("val_l1", "val_l1_warp_only", "val_ms_ssim", "val_ms_ssim_warp_only")
    names += ("val_sharpness", "val_sharpness_warp_only")
    return {k: float(v) for k, v in zip(names, m, strict=True)}


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Train (or resume) and export; returns the exported weights path."""
    rank, world = _dist()
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed + rank)
    run = Path(cfg.run_dir).expanduser()
    cache = Path(cfg.cache_dir).expanduser()
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        cache_clips(cfg, log)
        (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if world > 1:
        torch.distributed.barrier()
    train_clips, val_clips = split_clips(cfg, cache)
    if rank == 0:
        log(
            f"train on {len(train_clips)} clips, validate on {len(val_clips)} clips of {len(cfg.val_identities)} unseen people"
        )
        shape = shape_model(cfg, cache, train_clips, run)
    if world > 1:
        torch.distributed.barrier()
    shape = ShapeModel.load(run / "faceshape.npz")
    sampler = PairSampler(cache, train_clips, shape, cfg, cfg.seed * 1000 + rank)
    net = Refiner(width=cfg.width).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    step = 0
    last = run / "last.pt"
    if last.exists():
        ck = _load_state(last)
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        sampler.rng = np.random.default_rng(ck["rng_seed"] + rank)
        log(f"resumed at step {step}")
    model: torch.nn.Module = net
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(net)
    val_pairs = []
    if rank == 0:
        vs = PairSampler(
            cache, val_clips, shape, replace(cfg, crop=10**6), seed=12345
        )  # whole frames
        val_pairs = [vs.batch(1) for _ in range(cfg.val_pairs)]
    for g in opt.param_groups:
        g.setdefault("initial_lr", cfg.lr)
    sched = warmup_cosine(opt, cfg.steps, warmup=200, step=step)
    t_start, t_last, seen = time.time(), time.time(), 0
    while step < cfg.steps:
        b = sampler.batch(cfg.batch)
        x = b["x"].contiguous(memory_format=torch.channels_last)
        y, alpha_map, correction = model(x, b["key"], b["grid"])
        loss, parts = loss_fn(y, b["t"], b["w"])
        # pixels of disagreement with the flow teacher (grid units are 2/width)
        flow_err = (correction - b["flow"]).abs().mean() * b["key"].shape[-1] / 2
        loss = loss + cfg.flow_weight * flow_err
        parts["flow_px"] = float(flow_err.detach())
        # painting is confined to mouth and eyes; inside them it still pays a little
        alpha = alpha_map.mean()
        loss = loss + cfg.alpha_cost * alpha
        parts["alpha"] = float(alpha.detach())
        optimizer_step(net, opt, sched, loss)
        step += 1
        seen += cfg.batch
        if rank == 0:
            if step % 20 == 0:
                dt = time.time() - t_last
                log(
                    f"step {step}/{cfg.steps} loss {float(loss.detach()):.4f} l1 {parts['l1']:.4f} ssim-loss {parts['ssim_loss']:.4f} alpha {parts['alpha']:.3f} flow {parts['flow_px']:.2f}px lr {sched.get_last_lr()[0]:.2e} {seen / dt:.1f} samples/s"
                )
                append_log(
                    run / "log.jsonl",
                    {"step": step, "loss": float(loss.detach()), **parts, "time": time.time()},
                )
                t_last, seen = time.time(), 0
            if step % cfg.val_every == 0 or step == cfg.steps:
                v = validate(net, val_pairs)
                append_log(run / "log.jsonl", {"step": step, **v, "time": time.time()})
                log(f"validation at {step}: {v}")
                plot_curves(run)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_checkpoint(run, net, opt, step, cfg)
        if cfg.time_limit_min and time.time() - t_start > 60 * cfg.time_limit_min:
            if rank == 0:
                save_checkpoint(run, net, opt, step, cfg)
                log(f"time limit reached at step {step}; rerun the same command to continue")
            break
    out = run / "landmark.pt"
    if rank == 0:
        export(net, shape, cfg, out, step)
        log(f"exported {out}")
    return out


def warmup_cosine(
    opt: torch.optim.Optimizer, steps: int, warmup: int, step: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``; resumes at
    ``step`` (the optimiser's groups need ``initial_lr``)."""
    return torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)) * min(1.0, (s + 1) / warmup),
        last_epoch=step - 1,
    )


def optimizer_step(
    net: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, loss: torch.Tensor
) -> None:
    """Backward, gradient norm clipped to 1, optimiser and schedule steps."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    sched.step()


def _load_state(path: Path) -> dict[str, Any]:
    """A run's resumable state, read without running code (numpy scalars allowed)."""
    from gfvc.models.official.checkpoint import read_checkpoint

    ck = read_checkpoint(path)
    if not {"net", "step"} <= set(ck):
        raise CheckpointError(f"{path} is not a training state (no 'net' and 'step')")
    return ck


def append_log(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def save_checkpoint(
    run: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, step: int, cfg: TrainConfig
) -> None:
    tmp = run / "last.pt.part"
    torch.save(
        {
            "net": net.state_dict(),
            "opt": opt.state_dict(),
            "step": step,
            "rng_seed": cfg.seed * 7919 + step,
        },
        tmp,
    )
    os.replace(tmp, run / "last.pt")


def export(
    net: torch.nn.Module | None, shape: ShapeModel, cfg: TrainConfig, out: Path, step: int
) -> None:
    """Release file: plain tensors and lists only (loads with weights_only=True).

    ``net=None`` writes a warp-only release (shape model, no refiner)."""
    ck = {
        "format": "gfvc-landmark-1",
        "step": step,
        "refiner_config": {"width": cfg.width},
        "refiner": None
        if net is None
        else {k: v.detach().clone() for k, v in net.state_dict().items()},
        "shape": {
            "mean": torch.from_numpy(shape.mean),
            "basis": torch.from_numpy(shape.basis),
            "names": list(shape.names),
        },
    }
    tmp = out.with_suffix(".part")
    torch.save(ck, tmp)
    os.replace(tmp, out)


def export_run(cfg: TrainConfig, out: Path | None = None, warp_only: bool = False) -> Path:
    """Export the release file from a run's last checkpoint (e.g. after stopping it early);
    ``warp_only`` keeps just the shape model."""
    run = Path(cfg.run_dir).expanduser()
    if not (run / "faceshape.npz").exists() or (not warp_only and not (run / "last.pt").exists()):
        raise InputError(f"no checkpoint in {run}: train first")
    net, step = None, 0
    if not warp_only:
        ck = _load_state(run / "last.pt")
        net = Refiner(width=cfg.width)
        net.load_state_dict(ck["net"])
        step = ck["step"]
    out = out or run / "landmark.pt"
    export(net, ShapeModel.load(run / "faceshape.npz"), cfg, out, step)
    return out


def plot_curves(run: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    tr = [r for r in rows if "loss" in r]
    va = [r for r in rows if "val_l1" in r]
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    if tr:
        ax[0].plot([r["step"] for r in tr], [r["loss"] for r in tr], lw=0.8, label="train loss")
        ax[0].set_xlabel("step")
        ax[0].legend()
    steps = [r["step"] for r in va]
    for a, key, label in (
        (ax[1], "val_ms_ssim", "validation MS-SSIM (unseen people)"),
        (ax[2], "val_sharpness", "sharpness / real frame's (unseen people)"),
    ):
        if va and key in va[0]:
            a.plot(steps, [r[key] for r in va], marker="o", label="refined")
            a.plot(steps, [r[key + "_warp_only"] for r in va], ls="--", label="warp only")
            a.set_xlabel("step")
            a.set_ylabel(label)
            a.legend()
    fig.tight_layout()
    fig.savefig(run / "curves.png", dpi=100)
    plt.close(fig)
