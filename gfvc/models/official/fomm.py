"""FOMM: the First Order Motion Model (Siarohin et al., NeurIPS 2019) as GFVC codes it.

Per inter frame 60 scalars are sent: 10 keypoints (x, y) and their 2x2 local Jacobians. The
decoder re-derives the key frame's keypoints from the decoded key frame, then the generator
warps the key frame's feature map with a dense motion field predicted from the sparse
first-order (affine) motions around each keypoint.

Network layout = ``FOMM-256.yaml`` of the GFVC common software (identical to the paper's
``vox-256`` config); ``state_dict`` names and shapes equal the official checkpoint.

Reference-vs-paper behaviours, as options (:class:`FommOptions`):

* ``align_corners`` (default False): the v1 common software calls ``grid_sample``/``interpolate``
  with torch's default (False); the original FOMM was trained on torch 1.0, which behaved like True.
* ``swap_keypoints`` (default False): GFVC v1's ``make_FOMM_prediction`` swaps its keypoint
  arguments twice, which cancels: the current frame drives and the key frame is the source
  (the paper's semantics). The updated (Goluck) decoder swaps only once; True reproduces that.
* ``legacy_dense_motion`` (default False): the older dense-motion code of the updated software
  feeds zeros instead of keypoint heatmap differences to the hourglass and ignores the Jacobians.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from gfvc.models.base import FeatureField
from gfvc.models.official.base import ModelOptions, OfficialModel
from gfvc.models.official.geometry import heatmap_to_keypoints, warp
from gfvc.models.official.keypoints import HeatmapKeypointDetector, KeypointDenseMotion
from gfvc.models.official.layers import OcclusionAwareGenerator, TrunkSource
from gfvc.models.registry import register_motion_model

__all__ = [
    "FommGenerator",
    "FommKeypointDetector",
    "FommModel",
    "FommOptions",
    "FommOutputs",
    "Keypoints2d",
]


@dataclass
class Keypoints2d:
    """2-D keypoints: ``value`` (B, K, 2) normalised (x, y); ``jacobian`` (B, K, 2, 2) or None."""

    value: torch.Tensor
    jacobian: torch.Tensor | None = None


@dataclass(frozen=True)
class FommOptions(ModelOptions):
    """Documented in the module docstring."""

    align_corners: bool = False
    swap_keypoints: bool = False
    legacy_dense_motion: bool = False


class FommKeypointDetector(HeatmapKeypointDetector):
    """Hourglass -> per-keypoint heatmap (7x7 conv, *no padding*) -> soft-argmax + Jacobians."""

    def __init__(
        self, estimate_jacobian: bool = False, single_jacobian_map: bool = False, **params: Any
    ) -> None:
        maps = (1 if single_jacobian_map else params["num_kp"]) if estimate_jacobian else 0
        super().__init__(**params, jacobian_maps=maps)

    def forward(self, x: torch.Tensor) -> Keypoints2d:  # type: ignore[override]
        heatmap, feature_map = self.heatmaps_and_features(x)
        jacobian = self.jacobians(heatmap, feature_map) if self.num_jacobian_maps else None
        return Keypoints2d(heatmap_to_keypoints(heatmap, 2), jacobian)


@dataclass
class FommOutputs:
    """Generator outputs (shapes for 256x256 and the full-size config).

    ``prediction`` (B,3,256,256) in [0,1]; ``deformation`` (B,64,64,2); ``mask`` (B,K+1,64,64);
    ``sparse_deformed`` (B,K+1,3,64,64); ``occlusion_map`` (B,1,64,64) or None;
    ``deformed`` (B,3,256,256) (the key frame warped by ``deformation``; only with intermediates).
    """

    prediction: torch.Tensor
    deformation: torch.Tensor
    mask: torch.Tensor
    sparse_deformed: torch.Tensor
    occlusion_map: torch.Tensor | None
    deformed: torch.Tensor | None = None


class FommGenerator(OcclusionAwareGenerator):
    """Occlusion-aware generator driven by first-order (keypoint + Jacobian) motion."""

    dense_motion_class = KeypointDenseMotion

    def decode(
        self,
        src: TrunkSource,
        kp_driving: Keypoints2d,
        kp_source: Keypoints2d,
        intermediates: bool = False,
    ) -> FommOutputs:
        motion = self.dense_motion_network(
            src.small, kp_driving.value, kp_source.value, kp_driving.jacobian, kp_source.jacobian
        )
        deformation = motion["deformation"]
        return FommOutputs(
            prediction=self.render(self.deform(src.features, motion)),
            deformation=deformation,
            mask=motion["mask"],
            sparse_deformed=motion["sparse_deformed"],
            occlusion_map=motion.get("occlusion_map"),
            deformed=warp(src.image, deformation, self.align_corners) if intermediates else None,
        )

    def forward(
        self, source_image: torch.Tensor, kp_driving: Keypoints2d, kp_source: Keypoints2d
    ) -> FommOutputs:
        return self.decode(
            self.encode_source(source_image), kp_driving, kp_source, intermediates=True
        )


@register_motion_model("fomm")
class FommModel(OfficialModel[TrunkSource]):
    """FOMM as a gfvc MotionModel (feature: 10 keypoints + 10 Jacobians = 60 scalars)."""

    model_id: ClassVar[int] = 2
    default_qstep: ClassVar[float] = 64
    family: ClassVar[str] = "fomm"
    options_class: ClassVar[type[ModelOptions]] = FommOptions
    options: FommOptions
    detector_class = FommKeypointDetector
    generator_class = FommGenerator

    def build_networks(self, params: dict[str, Any]) -> dict[str, nn.Module]:
        nets = super().build_networks(params)
        nets["generator"].dense_motion_network.legacy = self.options.legacy_dense_motion
        self.has_jacobian = bool(params["common_params"].get("estimate_jacobian", False))
        return nets

    @property
    def fields(self) -> tuple[FeatureField, ...]:
        f = [FeatureField("keypoints", "coordinates", (self.num_kp, 2))]
        if self.has_jacobian:
            f.append(FeatureField("jacobians", "matrix", (self.num_kp, 2, 2)))
        return tuple(f)

    def to_vector(self, kp: Keypoints2d) -> np.ndarray:
        jac = kp.jacobian if self.has_jacobian else None
        return self.tensors_vector(kp.value, *([] if jac is None else [jac]))

    def from_vector(self, vec: np.ndarray) -> Keypoints2d:
        f = self.vector_tensors(vec)
        return Keypoints2d(f["keypoints"], f.get("jacobians"))

    def encode_key(self, key: torch.Tensor, key_feature: np.ndarray | None) -> TrunkSource:
        return self.nets["generator"].encode_source(key)

    def synthesize_tensor(
        self,
        key_frame: np.ndarray,
        kp_key: Keypoints2d,
        kp_current: Keypoints2d,
        intermediates: bool = False,
    ) -> FommOutputs:
        """Raw generator outputs; ``kp_current`` drives, the key frame is the source."""
        src = self.key_encoding(key_frame)
        driving, source = (
            (kp_key, kp_current) if self.options.swap_keypoints else (kp_current, kp_key)
        )
        with torch.inference_mode():
            return self.nets["generator"].decode(src, driving, source, intermediates)
