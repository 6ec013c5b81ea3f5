"""The enhancement layer: extra rate turned into fidelity (docs/bitstream.md, docs/control.md).

Below about 6 kbps a stream is the generative layer alone (key frame + features). Above, each
unit also carries one picture of a low-resolution x265 low-delay video (``base_layer``), and
the decoder fuses its upscaled picture with the animated key frame (``fusion``): the base
supplies what the camera really saw (eye and mouth openings, background, lighting), the key
frame the sharp texture. ``plan_layers`` splits a target rate between the two layers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from gfvc.enhance.align import ALIGN_NAME, WarpAligner
from gfvc.enhance.base_layer import BASE_SIZES, BaseLayerDecoder, BaseLayerEncoder
from gfvc.enhance.fovea import Fovea, defoveate
from gfvc.enhance.fusion import Fuser, add_detail, take_regions
from gfvc.errors import CheckpointError, InputError
from gfvc.models.landmark import FACE_CHANNEL, data_file

#: From this rate up, ``--kbps`` adds the base layer.
#: Below it the generative layer alone scores better on every metric but MS-SSIM than a 64x64
#: base near its floor (a picture costs at least ~110 bits: 2.8 kbps at 25 fps) fused with a
#: starved key frame (measured at 8 kbps on lp_d3, vr_1, dpe_d: docs/enhance.md).
ENHANCE_FROM_KBPS = 10.0
#: The least a base layer can be asked to spend (kbps): its pictures' floor at 64x64.
ENHANCE_FLOOR_KBPS = 3.0
#: The generative layer's share beside the base layer: a quarter of the rate, within these.
GENERATIVE_KBPS = (2.0, 3.0)
#: Base-layer rate from which the 128x128 base beats the 64x64 one: with the foveated map and
#: x265's preset slow it does from 7.5 kbps on every face metric (10 and 12 kbps targets on
#: lp_d3, vr_1, dpe_d: docs/enhance.md), so ``--kbps`` always picks it; 64x64 stays for
#: ``--base-size 64``.
LARGE_BASE_FROM_KBPS = 7.0


@dataclass(frozen=True)
class LayerPlan:
    """How a target rate is split: the generative layer's budget, and the base layer's size
    and rate (None: no base layer)."""

    generative_kbps: float
    base_size: int | None = None
    base_kbps: float | None = None


@dataclass(frozen=True)
class BaseLayerSettings:
    """A base layer of ``size`` x ``size`` pictures at a fixed x265 ``qp`` or at ``kbps``."""

    size: int
    qp: int | None = None
    kbps: float | None = None

    def __post_init__(self) -> None:
        check_base_size(self.size)
        if (self.qp is None) == (self.kbps is None):
            raise InputError("a base layer needs a QP or a rate, not both")
        if self.qp is not None:
            check_base_qp(self.qp)


def plan_layers(kbps: float) -> LayerPlan:
    """Features only at the bottom; above ``ENHANCE_FROM_KBPS`` the generative layer keeps
    a quarter, 2 to 3 kbps (a good key frame every 10 s and the features), and the base
    layer takes the rest."""
    if kbps < ENHANCE_FROM_KBPS:
        return LayerPlan(kbps)
    lo, hi = GENERATIVE_KBPS
    gen = min(hi, max(lo, kbps / 4))
    base = kbps - gen
    return LayerPlan(gen, 64 if base < LARGE_BASE_FROM_KBPS else 128, base)


#: From this base-layer rate (kbps, what x265 is asked for) up, streams are coded for the
#: fusion that takes the eye and mouth openings from the base (``fusion.pt``); below, for the
#: same network without it and with the face's fine detail from the warp (``fusion-low.pt``).
#: At a 12 kbps target (base asked 8.1 kbps) the base's openings were worse witnesses than
#: the warp's: the hard case's eye error 0.025 -> 0.034, identity 0.399 -> 0.407, and on the
#: ctc clips identity 0.321 -> 0.333 for eye error 0.0328 -> 0.0321; at 16 (11.7 kbps asked)
#: they win (docs/enhance.md, session 15). The warp's detail (``add_detail``) pays where the
#: base is this coarse (ctc clips at 12 kbps: identity 0.321 -> 0.314, landmark distance
#: 1.386 -> 1.383); over a sharper base it cost landmark distance (1.144 -> 1.150 at 16
#: kbps, 1.062 -> 1.074 at 20) for no identity (docs/enhance.md, session 17).
REGIONS_FROM_BASE_KBPS = 10.0


def fusion_weights_path() -> Path:
    """The fusion weights new streams are coded for."""
    return data_file("fusion.pt")


def _fusion_without_regions_path() -> Path:
    """The packaged current network without the openings taken from the base."""
    return data_file("fusion-low.pt")


def fusion_for(base: BaseLayerSettings) -> FusionWeights:
    """The fusion weights a new stream with base layer ``base`` is coded for: the current
    ones, or below ``REGIONS_FROM_BASE_KBPS`` the same network without ``take_regions`` (and
    with ``add_detail``) when the current ones take the openings from the base."""
    current = load_fuser()
    if base.kbps is None or base.kbps >= REGIONS_FROM_BASE_KBPS or current.regions == 0:
        return current
    plain = load_fuser(str(_fusion_without_regions_path()))
    if plain.regions != 0 or plain.align != current.align:
        raise CheckpointError("fusion-low.pt is not the current network without regions")
    return plain


def _older_fusion_weights() -> list[Path]:
    """Fusion weights of earlier releases, shipped so that their streams still decode."""
    return sorted(data_file("").glob("fusion-*.pt"))


class FusionWeights(NamedTuple):
    net: Fuser
    #: 8-byte hash of the weights file: a stream's header names the weights it was coded for
    hash: bytes
    #: the alignment the network was trained with (``ALIGN_NAME``), or "" for none
    align: str
    #: how much of the eye and mouth openings comes from the base (``take_regions``; 0: none)
    regions: float = 0.0
    #: how much of the face's fine detail comes from the warp (``add_detail``; 0: none)
    detail: float = 0.0


@lru_cache(maxsize=4)
def load_fuser(path: str | None = None) -> FusionWeights:
    """The packaged (or given) fusion network, ready for inference, with its hash and the
    warp alignment it expects."""
    p = Path(path) if path else fusion_weights_path()
    if not p.exists():
        raise CheckpointError(f"enhancement-layer fusion weights not found at {p}")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
        net = Fuser(width=int(ck["width"]), guide=int(ck.get("guide", 0)))
        net.load_state_dict(ck["net"])
        align = str(ck.get("align", ""))
        regions = float(ck.get("regions", 0.0))
        detail = float(ck.get("detail", 0.0))
    except Exception as e:
        raise CheckpointError(f"{p} is not a fusion network ({type(e).__name__})") from None
    if align not in ("", ALIGN_NAME):
        raise CheckpointError(f"{p} expects a warp alignment this release lacks ({align})")
    if not 0.0 <= regions <= 1.0:
        raise CheckpointError(f"{p}: regions must be in 0..1, got {regions}")
    if not 0.0 <= detail <= 1.0:
        raise CheckpointError(f"{p}: detail must be in 0..1, got {detail}")
    net = net.eval().to(memory_format=torch.channels_last)
    return FusionWeights(net, _file_hash(p), align, regions, detail)


def _file_hash(p: Path) -> bytes:
    """The 8-byte hash by which a stream's header names its fusion weights."""
    return hashlib.sha256(p.read_bytes()).digest()[:8]


def _packaged_fusion_path(fusion_hash: bytes) -> Path | None:
    """The packaged weights file (current or an earlier release's) with this hash."""
    for p in (fusion_weights_path(), *_older_fusion_weights()):
        if p.exists() and _file_hash(p) == fusion_hash:
            return p
    return None


def fuser_for(fusion_hash: bytes) -> FusionWeights:
    """The packaged fusion weights whose hash a stream's header names: the current ones or
    an earlier release's."""
    current = load_fuser()
    if current.hash == fusion_hash:
        return current
    p = _packaged_fusion_path(fusion_hash)
    if p is None:
        raise CheckpointError(
            "the stream's enhancement layer was coded for fusion weights this release does not "
            "have: decode with the gfvc release that coded it"
        )
    return load_fuser(str(p))


def packaged_fusion_name(fusion_hash: bytes) -> str | None:
    """The file name of the packaged fusion weights a stream's header names (None: weights
    this release does not have), for ``gfvc info``."""
    p = _packaged_fusion_path(fusion_hash)
    return None if p is None else p.name


def check_base_size(size: int) -> int:
    if size not in BASE_SIZES:
        raise InputError(
            f"--base-size must be one of {', '.join(map(str, BASE_SIZES))}, got {size}"
        )
    return size


def check_base_qp(qp: int) -> int:
    if not 0 <= qp <= 51:
        raise InputError(f"--base-qp must be in 0..51 (x265), got {qp}")
    return qp


def _tensor(image: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
    return t.contiguous(memory_format=torch.channels_last)


def to_image(t: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (t[0].permute(1, 2, 0) * 255).round().clamp(0, 255).byte().numpy()


class EnhancementDecoder:
    """Base-layer pictures in, fused frames out. ``key`` restarts the base stream (each key
    unit carries the base stream's IDR picture); a damaged base picture breaks the base
    stream until the next key unit, as in any predictive video. ``fusion_hash``: the
    weights the stream names (None: the current ones)."""

    def __init__(self, size: int, foveated: bool = False, fusion_hash: bytes | None = None) -> None:
        self.base = BaseLayerDecoder(size, foveated)
        weights = load_fuser() if fusion_hash is None else fuser_for(fusion_hash)
        self.fuser = weights.net
        self.aligner = WarpAligner() if weights.align else None
        self.regions = weights.regions
        self.detail = weights.detail

    def key(self, chunk: bytes) -> np.ndarray:
        return self.base.decode(chunk, restart=True)

    @property
    def guided(self) -> bool:
        """The fusion takes the motion model's hints (``MotionModel.fusion_inputs``) beside
        the warp: the network as an input, ``add_detail`` and ``take_regions`` for their
        masks."""
        return self.fuser.guide > 0 or self.regions > 0 or self.detail > 0

    def frame(
        self, chunk: bytes, warped: np.ndarray, guide: np.ndarray | None = None
    ) -> np.ndarray:
        """The fused frame of base picture ``chunk`` and the animated key frame ``warped``
        (with the motion model's hints ``guide`` for a ``guided`` fusion: their first three
        channels are the driving eye and mouth masks, channel ``FACE_CHANNEL`` the face's
        hull)."""
        base = self.base.decode(chunk)
        with torch.inference_mode():
            # channels_last throughout: the bicubic upscale returns NCHW, which would switch
            # the whole network to it (24 ms instead of 18 ms a frame on 2 cores)
            up = defoveate(_tensor(base), self.base.fovea, warped.shape[0]).contiguous(
                memory_format=torch.channels_last
            )
            if self.aligner is not None:
                warped = self.aligner(warped, to_image(up))
            g = None
            if guide is not None:
                g = torch.from_numpy(guide)[None].contiguous(memory_format=torch.channels_last)
            w = _tensor(warped)
            y = self.fuser(up, w, g[:, : self.fuser.guide] if self.fuser.guide else None)
            if (self.regions > 0 or self.detail > 0) and g is None:
                raise ValueError("these fusion weights take the eye and mouth masks")
            if self.detail > 0:
                if g.shape[1] <= FACE_CHANNEL:  # type: ignore[union-attr]
                    raise ValueError("these fusion weights take the face's hull")
                hull = g[:, FACE_CHANNEL : FACE_CHANNEL + 1]  # type: ignore[index]
                y = add_detail(y, w, g[:, :3], hull, self.detail)  # type: ignore[index]
            if self.regions > 0:
                y = take_regions(y, up, g[:, :3], self.regions)  # type: ignore[index]
        return to_image(y)


__all__ = [
    "BASE_SIZES",
    "BaseLayerEncoder",
    "BaseLayerSettings",
    "EnhancementDecoder",
    "FusionWeights",
    "Fovea",
    "LayerPlan",
    "fuser_for",
    "fusion_for",
    "load_fuser",
    "packaged_fusion_name",
    "plan_layers",
]
