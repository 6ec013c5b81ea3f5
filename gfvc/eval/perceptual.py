"""LPIPS (VGG) and DISTS on a VGG16 trunk written here, so torchvision is not needed.

Weights are never invented: the ImageNet VGG16 file and the small learned heads are read from
``$GFVC_WEIGHTS_DIR`` or the torch hub cache (``torch.hub.get_dir()/checkpoints``), and fetched
with ``torch.hub.load_state_dict_from_url`` only when downloads are allowed. A missing file
raises ``BackendUnavailableError`` naming the file, the folder and the URL.

Definitions follow Zhang et al. 2018 (LPIPS v0.1, VGG) and Ding et al. 2020 (DISTS); see
docs/metrics.md.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gfvc.errors import BackendUnavailableError, CheckpointError
from gfvc.eval._frames import check_pair


@dataclass(frozen=True)
class WeightFile:
    """A weight file: name in the cache folder, where to download it, optional sha256 prefix."""

    name: str
    url: str
    sha256_prefix: str = ""


VGG16 = WeightFile(
    "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth", "397923af"
)
LPIPS_VGG_HEADS = WeightFile(
    "lpips_vgg_v0.1.pth",
    "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
)
DISTS_HEADS = WeightFile(
    "dists_weights.pt", "https://github.com/dingkeyan93/DISTS/raw/master/DISTS_pytorch/weights.pt"
)

#: VGG16 "features" layout: conv widths, "M" = 2x2 pooling (torchvision indexing is kept).
_VGG16_LAYOUT: tuple[int | str, ...] = (
    *(64, 64, "M", 128, 128, "M"),
    *(256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
)
#: Feature taps after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (exclusive slice ends).
_TAP_ENDS = (4, 9, 16, 23, 30)
_TAP_CHANNELS = (64, 128, 256, 512, 512)
#: LPIPS input scaling layer (applied to images in [-1, 1]).
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
#: ImageNet normalisation used by DISTS (images in [0, 1]).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_DISTS_C1 = 1e-6
_DISTS_C2 = 1e-6
#: DISTS measures at most 256 px on the short side, like the official ``prepare_image``.
DISTS_MAX_SIDE = 256


# ---------------------------------------------------------------------------- weight files
def weight_dirs() -> list[Path]:
    """Folders searched for weight files, in order: $GFVC_WEIGHTS_DIR, torch hub checkpoints."""
    dirs = []
    if os.environ.get("GFVC_WEIGHTS_DIR"):
        dirs.append(Path(os.environ["GFVC_WEIGHTS_DIR"]))
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def downloads_allowed() -> bool:
    """Downloads happen only on request: GFVC_ALLOW_DOWNLOAD=1 (never by default)."""
    return os.environ.get("GFVC_ALLOW_DOWNLOAD", "") in {"1", "true", "yes"}


def _missing_hint(wf: WeightFile) -> str:
    folder = weight_dirs()[-1]
    return (
        f"weight file {wf.name} not found in {folder} (or $GFVC_WEIGHTS_DIR); "
        f"download {wf.url} to that folder or set GFVC_ALLOW_DOWNLOAD=1"
    )


@functools.lru_cache(maxsize=8)
def _sha256_ok(path: str, size: int, mtime: float, prefix: str) -> bool:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest().startswith(prefix)


def load_weight_file(
    wf: WeightFile, *, allow_download: bool | None = None, verify_hash: bool = True
) -> dict:
    """State dict of ``wf`` from the first folder that has it, else downloaded if allowed."""
    allow = downloads_allowed() if allow_download is None else allow_download
    path = next((d / wf.name for d in weight_dirs() if (d / wf.name).is_file()), None)
    if path is None:
        if not allow:
            raise BackendUnavailableError(_missing_hint(wf))
        try:
            return torch.hub.load_state_dict_from_url(
                wf.url,
                map_location="cpu",
                file_name=wf.name,
                check_hash=bool(wf.sha256_prefix),
                progress=False,
            )
        except Exception as exc:  # network errors come in many types
            raise BackendUnavailableError(f"{_missing_hint(wf)} (download failed: {exc})") from exc
    if verify_hash and wf.sha256_prefix:
        st = path.stat()
        if not _sha256_ok(str(path), st.st_size, st.st_mtime, wf.sha256_prefix):
            raise CheckpointError(
                f"{path} does not match the sha256 prefix {wf.sha256_prefix} in its name"
            )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read weight file {path}: {exc}") from exc


# ---------------------------------------------------------------------------- VGG16 trunk
def vgg16_features(pool: Callable[[int], nn.Module] | None = None) -> nn.Sequential:
    """VGG16 conv trunk up to relu5_3 with torchvision's ``features.N`` indexing.

    ``pool(channels)`` replaces max pooling (DISTS uses L2 pooling).
    """
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG16_LAYOUT:
        if item == "M":
            layers.append(pool(channels) if pool else nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU()]
            channels = int(item)
    return nn.Sequential(*layers)


def load_vgg16_trunk(trunk: nn.Sequential, state: dict) -> None:
    """Copy ``features.*`` conv weights of a torchvision VGG16 state dict into ``trunk``."""
    wanted = {f"features.{k}": v for k, v in trunk.state_dict().items()}
    missing = [k for k in wanted if k not in state]
    if missing:
        raise CheckpointError(
            f"VGG16 weights lack {len(missing)} trunk tensors (first: {missing[0]})"
        )
    for key, ref in wanted.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"VGG16 tensor {key} has shape {tuple(state[key].shape)}, expected {tuple(ref.shape)}"
            )
    trunk.load_state_dict({k[len("features.") :]: state[k].float() for k in wanted})


def _tapped(trunk: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """Features after each of the five ReLU taps."""
    out, start = [], 0
    for end in _TAP_ENDS:
        x = trunk[start:end](x)
        out.append(x)
        start = end
    return out


def frames_to_tensor(*frames: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) frames -> float32 (N, 3, H, W) batch in [0, 1]."""
    arr = np.stack([np.ascontiguousarray(f) for f in frames])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).to(torch.float32) / 255.0


def _const(values: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


# ---------------------------------------------------------------------------- LPIPS
def _lpips_heads(state: dict) -> list[torch.Tensor]:
    """The five non-negative 1x1 head weights (1, C, 1, 1), found by shape in layer order."""
    heads = []
    for i, channels in enumerate(_TAP_CHANNELS):
        keys = [
            k for k, v in state.items() if f"lin{i}" in k and tuple(v.shape) == (1, channels, 1, 1)
        ]
        if len(keys) != 1:
            raise CheckpointError(
                f"LPIPS head file: expected one lin{i} weight of shape (1, {channels}, 1, 1)"
            )
        heads.append(state[keys[0]].float())
    return heads


def _unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (torch.sqrt(torch.sum(x * x, dim=1, keepdim=True)) + eps)


class Lpips(nn.Module):
    """LPIPS v0.1, VGG variant: sum over 5 layers of the spatial mean of the head-weighted
    squared difference of channel-normalised features."""

    def __init__(self, vgg_state: dict, head_state: dict) -> None:
        super().__init__()
        self.trunk = vgg16_features()
        load_vgg16_trunk(self.trunk, vgg_state)
        self.heads = [h for h in _lpips_heads(head_state)]
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS of two (N, 3, H, W) batches in [0, 1]."""
        shift, scale = _const(_LPIPS_SHIFT), _const(_LPIPS_SCALE)
        both = ((torch.cat([x, y]) * 2.0 - 1.0) - shift) / scale
        total = torch.zeros(x.shape[0])
        for feat, head in zip(_tapped(self.trunk, both), self.heads, strict=True):
            fx, fy = _unit_normalize(feat[: x.shape[0]]), _unit_normalize(feat[x.shape[0] :])
            total += ((fx - fy) ** 2 * head).sum(dim=1).mean(dim=(1, 2))
        return total


# ---------------------------------------------------------------------------- DISTS
def _hann_l2_pool(channels: int) -> nn.Module:
    return L2Pool(channels)


class L2Pool(nn.Module):
    """sqrt of a 3x3 Hann-weighted (0.5, 1, 0.5) average of x**2, stride 2 (DISTS pooling)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([0.5, 1.0, 0.5])
        k = torch.outer(a, a)
        k = k / k.sum()
        self.register_buffer("kernel", k.expand(channels, 1, 3, 3).contiguous(), persistent=False)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x * x, self.kernel, stride=2, padding=1, groups=self.channels)
        return torch.sqrt(out + 1e-12)


def _dists_heads(state: dict) -> tuple[torch.Tensor, torch.Tensor]:
    total = 3 + sum(_TAP_CHANNELS)
    try:
        alpha, beta = state["alpha"].float(), state["beta"].float()
    except KeyError as exc:
        raise CheckpointError("DISTS weight file must hold 'alpha' and 'beta'") from exc
    if alpha.numel() != total or beta.numel() != total:
        raise CheckpointError(
            f"DISTS alpha/beta must have {total} values, got {alpha.numel()}/{beta.numel()}"
        )
    return alpha.view(1, total), beta.view(1, total)


class Dists(nn.Module):
    """DISTS: 1 - weighted sum over the raw image and 5 VGG stages of per-channel texture
    (mean) and structure (covariance) similarities; alpha and beta are normalised to sum 1."""

    def __init__(self, vgg_state: dict, head_state: dict) -> None:
        super().__init__()
        self.trunk = vgg16_features(pool=_hann_l2_pool)
        load_vgg16_trunk(self.trunk, vgg_state)
        alpha, beta = _dists_heads(head_state)
        norm = alpha.sum() + beta.sum()
        self.alpha, self.beta = alpha / norm, beta / norm
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image DISTS of two (N, 3, H, W) batches in [0, 1]."""
        n = x.shape[0]
        raw = torch.cat([x, y])
        # stage 0 is the raw [0, 1] image; the trunk sees it ImageNet-normalised
        feats = [raw, *_tapped(self.trunk, (raw - _const(_IMAGENET_MEAN)) / _const(_IMAGENET_STD))]
        score = torch.zeros(n)
        at = 0
        for feat in feats:
            c = feat.shape[1]
            fx, fy = feat[:n], feat[n:]
            mx, my = fx.mean(dim=(2, 3)), fy.mean(dim=(2, 3))
            vx = ((fx - mx[..., None, None]) ** 2).mean(dim=(2, 3))
            vy = ((fy - my[..., None, None]) ** 2).mean(dim=(2, 3))
            cov = (fx * fy).mean(dim=(2, 3)) - mx * my
            texture = (2 * mx * my + _DISTS_C1) / (mx**2 + my**2 + _DISTS_C1)
            structure = (2 * cov + _DISTS_C2) / (vx + vy + _DISTS_C2)
            score += (
                self.alpha[:, at : at + c] * texture + self.beta[:, at : at + c] * structure
            ).sum(dim=1)
            at += c
        return 1.0 - score


def dists_input_size(height: int, width: int) -> tuple[int, int]:
    """Size DISTS measures at: the short side is brought down to 256 px (never enlarged)."""
    short = min(height, width)
    if short <= DISTS_MAX_SIDE:
        return height, width
    s = DISTS_MAX_SIDE / short
    return max(1, round(height * s)), max(1, round(width * s))


# ---------------------------------------------------------------------------- loaders
def load_lpips(
    *, allow_download: bool | None = None, verify_hash: bool = True, vgg_state: dict | None = None
) -> Lpips:
    """LPIPS-VGG with real weights, or ``BackendUnavailableError`` with a one-line hint.

    ``vgg_state`` reuses an already loaded VGG16 state dict (it is 528 MB on disk).
    """
    if vgg_state is None:
        vgg_state = load_weight_file(VGG16, allow_download=allow_download, verify_hash=verify_hash)
    heads = load_weight_file(LPIPS_VGG_HEADS, allow_download=allow_download)
    return Lpips(vgg_state, heads)


def load_dists(
    *, allow_download: bool | None = None, verify_hash: bool = True, vgg_state: dict | None = None
) -> Dists:
    """DISTS with real weights, or ``BackendUnavailableError`` with a one-line hint."""
    if vgg_state is None:
        vgg_state = load_weight_file(VGG16, allow_download=allow_download, verify_hash=verify_hash)
    heads = load_weight_file(DISTS_HEADS, allow_download=allow_download)
    return Dists(vgg_state, heads)


def load_vgg16_state(*, allow_download: bool | None = None, verify_hash: bool = True) -> dict:
    """The verified ImageNet VGG16 state dict (for sharing between LPIPS and DISTS)."""
    return load_weight_file(VGG16, allow_download=allow_download, verify_hash=verify_hash)


@functools.lru_cache(maxsize=1)
def _default_lpips() -> Lpips:
    return load_lpips()


@functools.lru_cache(maxsize=1)
def _default_dists() -> Dists:
    return load_dists()


def lpips_pair(model: Lpips, ref: np.ndarray, dec: np.ndarray) -> float:
    """LPIPS of one frame pair with a given model (at the frames' own resolution)."""
    ref, dec = check_pair(ref, dec)
    return float(model(frames_to_tensor(ref), frames_to_tensor(dec))[0])


def dists_pair(model: Dists, ref: np.ndarray, dec: np.ndarray) -> float:
    """DISTS of one frame pair with a given model (short side brought to <= 256 px)."""
    ref, dec = check_pair(ref, dec)
    x, y = frames_to_tensor(ref), frames_to_tensor(dec)
    size = dists_input_size(*ref.shape[:2])
    if size != tuple(ref.shape[:2]):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        y = F.interpolate(y, size=size, mode="bilinear", antialias=True, align_corners=False)
    return float(model(x, y)[0])


def lpips(ref: np.ndarray, dec: np.ndarray) -> float:
    """LPIPS-VGG of one pair; raises ``BackendUnavailableError`` when weights are absent."""
    return lpips_pair(_default_lpips(), ref, dec)


def dists(ref: np.ndarray, dec: np.ndarray) -> float:
    """DISTS of one pair; raises ``BackendUnavailableError`` when weights are absent."""
    return dists_pair(_default_dists(), ref, dec)
