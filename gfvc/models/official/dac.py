"""DAC: Deep Animation Codec (Konuko et al., ICASSP 2022) as the updated GFVC software codes it.

Per inter frame 20 scalars are sent: 10 keypoints (x, y), no Jacobians. The networks follow
FOMM's design with three differences that matter for conformance: the hourglass upsampling is
bilinear (``align_corners=True``), every ``grid_sample``/``interpolate`` uses
``align_corners=True``, and the keypoint heatmap conv is padded (64x64 heatmaps). The key-name
layout wraps some convs (``kp.conv``, ``final.conv``, ``mask.conv``, ``occlusion.conv``).

The same keypoint detector (:class:`DacKeypointDetector`) and motion network serve HDAC and
RDAC (``hdac.py``, ``rdac.py``).

DAC's reference encoder also refreshes the key frame adaptively (a new intra frame when the
running mean prediction PSNR falls below a threshold); :func:`adaptive_refresh_decisions`
reproduces that rule. The decision itself is a codec policy, not part of this MotionModel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gfvc.models.base import FeatureField
from gfvc.models.official.base import ModelOptions, OfficialModel, tensor_to_frame
from gfvc.models.official.geometry import (
    coordinate_grid,
    heatmap_to_keypoints,
    keypoints_to_gaussian,
    warp,
)
from gfvc.models.official.layers import (
    AntiAliasInterpolation2d,
    ConvOutput,
    Hourglass,
    OcclusionAwareGenerator,
    UpBlock2d,
    apply_occlusion,
)
from gfvc.models.registry import register_motion_model

__all__ = [
    "DacDenseMotion",
    "DacGenerator",
    "DacKeypointDetector",
    "DacModel",
    "DacOptions",
    "DacOutputs",
    "adaptive_refresh_decisions",
]

KP_VARIANCE = 0.01
UP_MODE = "bilinear"  # hourglass/decoder upsampling of the DAC family (align_corners=True)


@dataclass(frozen=True)
class DacOptions(ModelOptions):
    """``align_corners`` (default True, as the reference); ``rounding``: "round" (gfvc) or
    "truncate" (reference)."""

    align_corners: bool = True
    rounding: str = "round"


class DacKeypointDetector(nn.Module):
    """Hourglass -> padded 7x7 conv -> softmax heatmaps (B,K,64,64) -> soft-argmax (B,K,2)."""

    def __init__(
        self,
        block_expansion: int,
        num_kp: int,
        num_channels: int,
        max_features: int,
        num_blocks: int,
        temperature: float,
        estimate_jacobian: bool = False,
        scale_factor: float = 1,
        quantize: bool = False,
        **_: Any,
    ) -> None:
        super().__init__()
        self.predictor = Hourglass(
            block_expansion, num_channels, num_blocks, max_features, up_mode=UP_MODE
        )
        self.kp = ConvOutput(self.predictor.out_filters, num_kp, kernel_size=7, padding=3)
        self.temperature = temperature
        self.scale_factor = scale_factor
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def heatmaps(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale_factor != 1:
            x = self.down(x)
        logits = self.kp(self.predictor(x))
        b, k, h, w = logits.shape
        return F.softmax(logits.view(b, k, -1) / self.temperature, dim=2).view(b, k, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return heatmap_to_keypoints(self.heatmaps(x), 2)


class DacDenseMotion(nn.Module):
    """Dense backward flow + occlusion from K+1 translations (identity + one per keypoint)."""

    def __init__(
        self,
        block_expansion: int,
        num_blocks: int,
        max_features: int,
        num_kp: int,
        num_channels: int,
        estimate_occlusion_map: bool = False,
        scale_factor: float = 1,
        kp_variance: float = KP_VARIANCE,
        **_: Any,
    ) -> None:
        super().__init__()
        self.hourglass = Hourglass(
            block_expansion,
            (num_kp + 1) * (num_channels + 1),
            num_blocks,
            max_features,
            up_mode=UP_MODE,
        )
        self.mask = ConvOutput(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.occlusion = (
            ConvOutput(self.hourglass.out_filters, 1, kernel_size=7, padding=3)
            if estimate_occlusion_map
            else None
        )
        self.num_kp = num_kp
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)
        self.align_corners = True

    def downscale(self, image: torch.Tensor) -> torch.Tensor:
        return self.down(image) if self.scale_factor != 1 else image

    def forward(
        self, small_reference: torch.Tensor, kp_target: torch.Tensor, kp_reference: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``small_reference``: the downscaled reference frame; keypoints (B, K, 2)."""
        b, c, h, w = small_reference.shape
        k1 = self.num_kp + 1
        g_t = keypoints_to_gaussian(kp_target, (h, w), self.kp_variance)
        g_r = keypoints_to_gaussian(kp_reference, (h, w), self.kp_variance)
        heat = torch.cat([small_reference.new_zeros(b, 1, h, w), g_t - g_r], dim=1).unsqueeze(2)
        identity = coordinate_grid((h, w), kp_reference.dtype, kp_reference.device).view(
            1, 1, h, w, 2
        )
        to_ref = (
            identity
            - kp_target.view(b, self.num_kp, 1, 1, 2)
            + kp_reference.view(b, self.num_kp, 1, 1, 2)
        )
        motions = torch.cat([identity.expand(b, 1, h, w, 2), to_ref], dim=1)
        repeated = small_reference.unsqueeze(1).expand(b, k1, c, h, w).reshape(b * k1, c, h, w)
        deformed = F.grid_sample(
            repeated,
            motions.reshape(b * k1, h, w, 2),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=self.align_corners,
        ).view(b, k1, c, h, w)
        prediction = self.hourglass(torch.cat([heat, deformed], dim=2).view(b, -1, h, w))
        mask = F.softmax(self.mask(prediction), dim=1)
        deformation = (
            (motions.permute(0, 1, 4, 2, 3) * mask.unsqueeze(2)).sum(dim=1).permute(0, 2, 3, 1)
        )
        out = {
            "heatmap": heat,
            "sparse_motion": motions,
            "sparse_deformed": deformed,
            "mask": mask,
            "deformation": deformation,
        }
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction))
        return out


@dataclass
class DacSource:
    """Cached reference encoding: ``image`` (B,3,H,W), ``small`` (B,3,h,w) for the dense motion,
    ``features`` (B,C,H/4,W/4)."""

    image: torch.Tensor
    small: torch.Tensor
    features: torch.Tensor


@dataclass
class DacOutputs:
    """``prediction`` (B,3,H,W) in [0,1]; ``motion`` the dense-motion dict (``heatmap``
    (B,K+1,1,h,w), ``sparse_motion`` (B,K+1,h,w,2), ``sparse_deformed`` (B,K+1,3,h,w), ``mask``
    (B,K+1,h,w), ``deformation`` (B,h,w,2), ``occlusion_map`` (B,1,h,w)); ``deformed_features``
    (B,C,H/4,W/4), the warped and occluded reference features (bottleneck input)."""

    prediction: torch.Tensor
    motion: dict[str, torch.Tensor]
    deformed_features: torch.Tensor


class DacGenerator(OcclusionAwareGenerator):
    """Animate a reference frame to target keypoints (FOMM-style occlusion-aware generator)."""

    def __init__(
        self,
        num_channels: int,
        num_kp: int,
        block_expansion: int,
        max_features: int,
        num_down_blocks: int,
        num_bottleneck_blocks: int,
        estimate_occlusion_map: bool = False,
        dense_motion_params: dict[str, Any] | None = None,
        estimate_jacobian: bool = False,
        **_: Any,
    ) -> None:
        super().__init__()
        self.build_trunk(
            DacDenseMotion,
            dense_motion_params,
            num_kp,
            num_channels,
            estimate_occlusion_map,
            block_expansion,
            max_features,
            num_down_blocks,
            num_bottleneck_blocks,
            mode=UP_MODE,
        )
        self.final = ConvOutput(
            block_expansion, num_channels, kernel_size=7, padding=3, activation="sigmoid"
        )
        self.align_corners = True

    def set_align_corners(self, value: bool) -> None:
        super().set_align_corners(value)
        for m in self.modules():
            if isinstance(m, UpBlock2d):
                m.align_corners = value

    def encode_reference(self, reference: torch.Tensor) -> DacSource:
        return DacSource(
            reference,
            self.dense_motion_network.downscale(reference),
            self.encode_features(reference),
        )

    def deform(
        self, src: DacSource, kp_reference: torch.Tensor, kp_target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Warped, occluded reference features and the motion dict."""
        motion = self.dense_motion_network(src.small, kp_target, kp_reference)
        out = apply_occlusion(
            warp(src.features, motion["deformation"], self.align_corners),
            motion.get("occlusion_map"),
            self.align_corners,
        )
        return out, motion

    def render(self, features: torch.Tensor) -> torch.Tensor:
        return self.final(self.decode_features(features))

    def animate_encoded(
        self, src: DacSource, kp_reference: torch.Tensor, kp_target: torch.Tensor
    ) -> DacOutputs:
        feats, motion = self.deform(src, kp_reference, kp_target)
        return DacOutputs(self.render(feats), motion, feats)

    def animate(
        self, reference: torch.Tensor, kp_reference: torch.Tensor, kp_target: torch.Tensor
    ) -> torch.Tensor:
        return self.animate_encoded(
            self.encode_reference(reference), kp_reference, kp_target
        ).prediction

    def forward(
        self, reference: torch.Tensor, kp_reference: torch.Tensor, kp_target: torch.Tensor
    ) -> torch.Tensor:
        return self.animate(reference, kp_reference, kp_target)


@dataclass
class DacKey:
    """Key-frame cache entry: the generator's reference encoding."""

    source: DacSource


class KeypointModelMixin:
    """Feature handling shared by DAC, HDAC and RDAC: 10 keypoints (x, y) = 20 scalars."""

    num_kp: int
    device: torch.device
    nets: dict[str, nn.Module]

    @property
    def fields(self) -> tuple[FeatureField, ...]:
        return (FeatureField("keypoints", "coordinates", (self.num_kp, 2)),)

    def to_vector(self, kp: torch.Tensor) -> np.ndarray:
        return kp[0].reshape(-1).to("cpu", torch.float64).numpy()

    def from_vector(self, vec: np.ndarray) -> torch.Tensor:
        arr = np.asarray(vec, dtype=np.float64).reshape(self.num_kp, 2)
        return torch.as_tensor(arr, dtype=torch.float32, device=self.device).unsqueeze(0)

    def analyse_tensor(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.nets["kp_detector"](x)

    def analyse(self, frame: np.ndarray) -> np.ndarray:
        return self.to_vector(self.analyse_tensor(self.frame_tensor(frame)))  # type: ignore[attr-defined]

    def analyse_key(self, key_frame: np.ndarray) -> np.ndarray:
        return self.to_vector(self.analyse_tensor(self.frame_tensor(key_frame, "contiguous")))  # type: ignore[attr-defined]


@register_motion_model("dac")
class DacModel(KeypointModelMixin, OfficialModel[DacKey]):
    """DAC as a gfvc MotionModel (feature: 10 keypoints = 20 scalars)."""

    model_id: ClassVar[int] = 5
    default_qstep: ClassVar[float] = 64
    family: ClassVar[str] = "dac"
    module_names: ClassVar[tuple[str, ...]] = ("kp_detector", "generator")
    options_class: ClassVar[type[ModelOptions]] = DacOptions
    options: DacOptions
    #: The animation network; RDAC reuses everything else with its own generator.
    generator_class: ClassVar[type[nn.Module]] = DacGenerator

    def build_networks(self, params: dict[str, Any]) -> dict[str, nn.Module]:
        common = params["common_params"]
        gen = self.generator_class(**params["generator_params"], **common)
        kp = DacKeypointDetector(**params["kp_detector_params"], **common)
        gen.set_align_corners(self.options.align_corners)
        self.num_kp = int(common["num_kp"])
        return {"kp_detector": kp, "generator": gen}

    def encode_key(self, key: torch.Tensor, key_feature: np.ndarray | None) -> DacKey:
        return DacKey(self.nets["generator"].encode_reference(key))

    def synthesize_tensor(
        self, key_frame: np.ndarray, kp_key: torch.Tensor, kp_current: torch.Tensor
    ) -> DacOutputs:
        enc = self.key_encoding(key_frame)
        with torch.inference_mode():
            return self.nets["generator"].animate_encoded(enc.source, kp_key, kp_current)

    def synthesize(
        self, key_frame: np.ndarray, key_feature: np.ndarray, feature: np.ndarray
    ) -> np.ndarray:
        out = self.synthesize_tensor(
            key_frame, self.from_vector(key_feature), self.from_vector(feature)
        )
        return tensor_to_frame(out.prediction, self.options.rounding)


def prediction_psnr(target: torch.Tensor, prediction: torch.Tensor) -> float:
    """The reference's refresh metric: ``-10 log10(mse)`` with the mean taken in float32."""
    mse = F.mse_loss(target, prediction).item()
    return math.inf if mse == 0 else -10 * math.log10(mse)


def adaptive_refresh_decisions(
    psnr: Sequence[float], threshold: float
) -> tuple[list[float], list[bool]]:
    """DAC's adaptive key-frame refresh rule, for the PSNRs of inter frames 1..T-1.

    The running mean is over *all* inter frames so far (never reset, refreshed frames
    included); frame t becomes a key frame when that mean is below ``threshold``.
    Returns (running means, refresh flags).
    """
    means: list[float] = []
    flags: list[bool] = []
    total = 0.0
    for i, p in enumerate(psnr):
        total += float(p)
        mean = total / (i + 1)
        means.append(mean)
        flags.append(mean < threshold)
    return means, flags
