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
    Hourglass,
    OcclusionAwareGenerator,
    apply_occlusion,
)
from gfvc.models.registry import register_motion_model

__all__ = [
    "FommDenseMotion",
    "FommGenerator",
    "FommKeypointDetector",
    "FommModel",
    "FommOptions",
    "FommOutputs",
    "Keypoints2d",
]

KP_VARIANCE = 0.01  # variance of the keypoint gaussians in normalised coordinates


@dataclass
class Keypoints2d:
    """2-D keypoints: ``value`` (B, K, 2) normalised (x, y); ``jacobian`` (B, K, 2, 2) or None."""

    value: torch.Tensor
    jacobian: torch.Tensor | None = None


@dataclass(frozen=True)
class FommOptions(ModelOptions):
    """Documented in the module docstring. ``rounding``: "round" (gfvc) or "truncate" (reference)."""

    align_corners: bool = False
    swap_keypoints: bool = False
    legacy_dense_motion: bool = False
    rounding: str = "round"


class FommKeypointDetector(nn.Module):
    """Hourglass -> per-keypoint heatmap (7x7 conv, *no padding*) -> soft-argmax (+ Jacobians)."""

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
        single_jacobian_map: bool = False,
        pad: int = 0,
    ) -> None:
        super().__init__()
        self.predictor = Hourglass(block_expansion, num_channels, num_blocks, max_features)
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, kernel_size=7, padding=pad)
        self.num_jacobian_maps = (1 if single_jacobian_map else num_kp) if estimate_jacobian else 0
        if estimate_jacobian:
            self.jacobian = nn.Conv2d(
                self.predictor.out_filters, 4 * self.num_jacobian_maps, kernel_size=7, padding=pad
            )
        self.temperature = temperature
        self.scale_factor = scale_factor
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)

    def forward(self, x: torch.Tensor) -> Keypoints2d:
        if self.scale_factor != 1:
            x = self.down(x)
        feature_map = self.predictor(x)
        logits = self.kp(feature_map)
        b, k, h, w = logits.shape
        heatmap = F.softmax(logits.view(b, k, -1) / self.temperature, dim=2).view(b, k, h, w)
        value = heatmap_to_keypoints(heatmap, 2)
        jacobian = None
        if self.num_jacobian_maps:
            jmap = self.jacobian(feature_map).reshape(b, self.num_jacobian_maps, 4, h, w)
            jacobian = (heatmap.unsqueeze(2) * jmap).view(b, k, 4, -1).sum(dim=-1).view(b, k, 2, 2)
        return Keypoints2d(value, jacobian)


class FommDenseMotion(nn.Module):
    """Predicts the dense backward flow (and occlusion) from K+1 sparse affine motions."""

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
    ) -> None:
        super().__init__()
        self.hourglass = Hourglass(
            block_expansion, (num_kp + 1) * (num_channels + 1), num_blocks, max_features
        )
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=7, padding=3)
            if estimate_occlusion_map
            else None
        )
        self.num_kp = num_kp
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)
        self.align_corners = False
        self.legacy = False

    def downscale(self, source: torch.Tensor) -> torch.Tensor:
        return self.down(source) if self.scale_factor != 1 else source

    def sparse_motions(
        self, shape: tuple[int, int], kp_driving: Keypoints2d, kp_source: Keypoints2d
    ) -> torch.Tensor:
        """(B, K+1, h, w, 2): identity, then per keypoint ``kp_s + J_s J_d^-1 (z - kp_d)``."""
        b, k = kp_driving.value.shape[:2]
        h, w = shape
        identity = coordinate_grid((h, w), kp_source.value.dtype, kp_source.value.device).view(
            1, 1, h, w, 2
        )
        grid = identity - kp_driving.value.view(b, k, 1, 1, 2)
        if not self.legacy and kp_driving.jacobian is not None and kp_source.jacobian is not None:
            jac = torch.matmul(kp_source.jacobian, torch.inverse(kp_driving.jacobian))
            jac = jac.unsqueeze(-3).unsqueeze(-3).repeat(1, 1, h, w, 1, 1)
            grid = torch.matmul(jac, grid.unsqueeze(-1)).squeeze(-1)
        driving_to_source = grid + kp_source.value.view(b, k, 1, 1, 2)
        return torch.cat([identity.repeat(b, 1, 1, 1, 1), driving_to_source], dim=1)

    def forward(
        self, small_source: torch.Tensor, kp_driving: Keypoints2d, kp_source: Keypoints2d
    ) -> dict[str, torch.Tensor]:
        """``small_source``: the already downscaled key frame (see :meth:`downscale`)."""
        b, c, h, w = small_source.shape
        k1 = self.num_kp + 1
        if self.legacy:
            heat = small_source.new_zeros(b, k1, 1, h, w)
        else:
            g_d = keypoints_to_gaussian(kp_driving.value, (h, w), self.kp_variance)
            g_s = keypoints_to_gaussian(kp_source.value, (h, w), self.kp_variance)
            heat = torch.cat([small_source.new_zeros(b, 1, h, w), g_d - g_s], dim=1).unsqueeze(2)
        motions = self.sparse_motions((h, w), kp_driving, kp_source)
        repeated = small_source.unsqueeze(1).expand(b, k1, c, h, w).reshape(b * k1, c, h, w)
        deformed = F.grid_sample(
            repeated,
            motions.view(b * k1, h, w, 2),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=self.align_corners,
        ).view(b, k1, c, h, w)
        prediction = self.hourglass(torch.cat([heat, deformed], dim=2).view(b, -1, h, w))
        mask = F.softmax(self.mask(prediction), dim=1)
        deformation = (
            (motions.permute(0, 1, 4, 2, 3) * mask.unsqueeze(2)).sum(dim=1).permute(0, 2, 3, 1)
        )
        out = {"sparse_deformed": deformed, "mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction))
        return out


@dataclass
class FommSource:
    """Cached key-frame encoding: ``image`` (B,3,H,W), ``small`` (B,3,h,w) for the dense motion,
    ``features`` (B,C,H/4,W/4) after the encoder's down blocks."""

    image: torch.Tensor
    small: torch.Tensor
    features: torch.Tensor


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
    """Occlusion-aware generator: encode key frame, warp features, bottleneck, decode."""

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
    ) -> None:
        super().__init__()
        self.build_trunk(
            FommDenseMotion,
            dense_motion_params,
            num_kp,
            num_channels,
            estimate_occlusion_map,
            block_expansion,
            max_features,
            num_down_blocks,
            num_bottleneck_blocks,
        )
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=7, padding=3)
        self.align_corners = False

    def encode_source(self, source: torch.Tensor) -> FommSource:
        return FommSource(
            source, self.dense_motion_network.downscale(source), self.encode_features(source)
        )

    def decode(
        self,
        src: FommSource,
        kp_driving: Keypoints2d,
        kp_source: Keypoints2d,
        intermediates: bool = False,
    ) -> FommOutputs:
        motion = self.dense_motion_network(src.small, kp_driving, kp_source)
        deformation = motion["deformation"]
        out = apply_occlusion(
            warp(src.features, deformation, self.align_corners),
            motion.get("occlusion_map"),
            self.align_corners,
        )
        out = self.decode_features(out)
        prediction = torch.sigmoid(self.final(out))
        return FommOutputs(
            prediction=prediction,
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


@dataclass
class FommKey:
    """Key-frame cache entry: the generator's source encoding."""

    source: FommSource


@register_motion_model("fomm")
class FommModel(OfficialModel[FommKey]):
    """FOMM as a gfvc MotionModel (feature: 10 keypoints + 10 Jacobians = 60 scalars)."""

    model_id: ClassVar[int] = 2
    default_qstep: ClassVar[float] = 64
    family: ClassVar[str] = "fomm"
    module_names: ClassVar[tuple[str, ...]] = ("kp_detector", "generator")
    options_class: ClassVar[type[ModelOptions]] = FommOptions
    options: FommOptions

    def build_networks(self, params: dict[str, Any]) -> dict[str, nn.Module]:
        common = params["common_params"]
        kp = FommKeypointDetector(**params["kp_detector_params"], **common)
        gen = FommGenerator(**params["generator_params"], **common)
        gen.set_align_corners(self.options.align_corners)
        gen.dense_motion_network.legacy = self.options.legacy_dense_motion
        self.num_kp = int(common["num_kp"])
        self.has_jacobian = bool(common.get("estimate_jacobian", False))
        return {"kp_detector": kp, "generator": gen}

    @property
    def fields(self) -> tuple[FeatureField, ...]:
        f = [FeatureField("keypoints", "coordinates", (self.num_kp, 2))]
        if self.has_jacobian:
            f.append(FeatureField("jacobians", "matrix", (self.num_kp, 2, 2)))
        return tuple(f)

    # ------------------------------------------------------------------ vectors
    def to_vector(self, kp: Keypoints2d) -> np.ndarray:
        parts = [kp.value[0].reshape(-1)]
        if self.has_jacobian and kp.jacobian is not None:
            parts.append(kp.jacobian[0].reshape(-1))
        return torch.cat(parts).to("cpu", torch.float64).numpy()

    def from_vector(self, vec: np.ndarray) -> Keypoints2d:
        f = self.split_vector(np.asarray(vec, dtype=np.float64))
        value = torch.as_tensor(f["keypoints"], dtype=torch.float32, device=self.device).unsqueeze(
            0
        )
        jac = None
        if self.has_jacobian:
            jac = torch.as_tensor(
                f["jacobians"], dtype=torch.float32, device=self.device
            ).unsqueeze(0)
        return Keypoints2d(value, jac)

    # ------------------------------------------------------------------ coding
    def analyse_tensor(self, x: torch.Tensor) -> Keypoints2d:
        with torch.inference_mode():
            return self.nets["kp_detector"](x)

    def analyse(self, frame: np.ndarray) -> np.ndarray:
        return self.to_vector(self.analyse_tensor(self.frame_tensor(frame)))

    def analyse_key(self, key_frame: np.ndarray) -> np.ndarray:
        return self.to_vector(self.analyse_tensor(self.frame_tensor(key_frame, "contiguous")))

    def encode_key(self, key: torch.Tensor, key_feature: np.ndarray | None) -> FommKey:
        return FommKey(self.nets["generator"].encode_source(key))

    def synthesize_tensor(
        self,
        key_frame: np.ndarray,
        kp_key: Keypoints2d,
        kp_current: Keypoints2d,
        intermediates: bool = False,
    ) -> FommOutputs:
        """Raw generator outputs; ``kp_current`` drives, the key frame is the source."""
        enc = self.key_encoding(key_frame)
        driving, source = (
            (kp_key, kp_current) if self.options.swap_keypoints else (kp_current, kp_key)
        )
        with torch.inference_mode():
            return self.nets["generator"].decode(enc.source, driving, source, intermediates)

    def synthesize(
        self, key_frame: np.ndarray, key_feature: np.ndarray, feature: np.ndarray
    ) -> np.ndarray:
        out = self.synthesize_tensor(
            key_frame, self.from_vector(key_feature), self.from_vector(feature)
        )
        return tensor_to_frame(out.prediction, self.options.rounding)
