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
from gfvc.models.official.base import ModelOptions, OfficialModel
from gfvc.models.official.keypoints import (
    DETECTOR_PARAMS,
    HeatmapKeypointDetector,
    KeypointDenseMotion,
)
from gfvc.models.official.layers import OcclusionAwareGenerator, TrunkSource
from gfvc.models.registry import register_motion_model

__all__ = [
    "DacGenerator",
    "DacKeypointDetector",
    "DacModel",
    "DacOptions",
    "DacOutputs",
    "adaptive_refresh_decisions",
]

UP_MODE = "bilinear"  # hourglass/decoder upsampling of the DAC family (align_corners=True)


@dataclass(frozen=True)
class DacOptions(ModelOptions):
    """``align_corners`` (default True, as the reference)."""

    align_corners: bool = True


class DacKeypointDetector(HeatmapKeypointDetector):
    """Hourglass -> padded 7x7 conv -> softmax heatmaps (B,K,64,64) -> soft-argmax (B,K,2)."""

    def __init__(self, **params: Any) -> None:
        # the reference ignores the yaml's other keys (estimate_jacobian, quantize ...)
        known = {k: params[k] for k in DETECTOR_PARAMS if k in params}
        super().__init__(**known, pad=3, wrapped=True, up_mode=UP_MODE)


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

    dense_motion_class = KeypointDenseMotion
    dense_motion_kwargs = {"wrapped": True, "up_mode": UP_MODE}
    up_mode = UP_MODE
    wrapped_final = True
    default_align_corners = True
    ignores_extra_params = True

    def deform_source(
        self, src: TrunkSource, kp_reference: torch.Tensor, kp_target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Warped, occluded reference features and the motion dict."""
        motion = self.dense_motion_network(src.small, kp_target, kp_reference)
        return self.deform(src.features, motion), motion

    def animate_encoded(
        self, src: TrunkSource, kp_reference: torch.Tensor, kp_target: torch.Tensor
    ) -> DacOutputs:
        feats, motion = self.deform_source(src, kp_reference, kp_target)
        return DacOutputs(self.render(feats), motion, feats)

    def animate(
        self, reference: torch.Tensor, kp_reference: torch.Tensor, kp_target: torch.Tensor
    ) -> torch.Tensor:
        return self.animate_encoded(
            self.encode_source(reference), kp_reference, kp_target
        ).prediction

    def forward(
        self, reference: torch.Tensor, kp_reference: torch.Tensor, kp_target: torch.Tensor
    ) -> torch.Tensor:
        return self.animate(reference, kp_reference, kp_target)


class KeypointModelMixin:
    """Feature handling shared by DAC, HDAC and RDAC: 10 keypoints (x, y) = 20 scalars."""

    num_kp: int

    @property
    def fields(self) -> tuple[FeatureField, ...]:
        return (FeatureField("keypoints", "coordinates", (self.num_kp, 2)),)

    def to_vector(self, kp: torch.Tensor) -> np.ndarray:
        return OfficialModel.tensors_vector(kp)

    def from_vector(self, vec: np.ndarray) -> torch.Tensor:
        return self.vector_tensors(vec)["keypoints"]  # type: ignore[attr-defined]


@register_motion_model("dac")
class DacModel(KeypointModelMixin, OfficialModel[TrunkSource]):
    """DAC as a gfvc MotionModel (feature: 10 keypoints = 20 scalars)."""

    model_id: ClassVar[int] = 5
    default_qstep: ClassVar[float] = 64
    family: ClassVar[str] = "dac"
    options_class: ClassVar[type[ModelOptions]] = DacOptions
    options: DacOptions
    detector_class = DacKeypointDetector
    #: The animation network; HDAC and RDAC reuse everything else with their own generator.
    generator_class: ClassVar[type[nn.Module]] = DacGenerator

    def encode_key(self, key: torch.Tensor, key_feature: np.ndarray | None) -> TrunkSource:
        return self.nets["generator"].encode_source(key)

    def synthesize_tensor(
        self, key_frame: np.ndarray, kp_key: torch.Tensor, kp_current: torch.Tensor
    ) -> DacOutputs:
        src = self.key_encoding(key_frame)
        with torch.inference_mode():
            return self.nets["generator"].animate_encoded(src, kp_key, kp_current)


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
