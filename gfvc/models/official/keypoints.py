"""Keypoint heads and keypoint-driven dense motion, shared by the official families.

* :class:`HeatmapKeypointDetector`: hourglass -> 7x7 conv -> softmax heatmaps -> soft-argmax
  (FOMM with its Jacobian head, DAC/HDAC/RDAC with their wrapped, padded convs);
* the steps every keypoint-driven dense-motion network takes, in 2-D (FOMM, the DAC family)
  and 3-D (FV2V): the K+1 sparse motions (identity, then one per keypoint), the source warped
  by each, the gaussian heatmap differences, and the mask-weighted blend of the motions;
* :class:`KeypointDenseMotion`: the 2-D network built from them (FOMM, the DAC family).

Attribute names and registration order are the checkpoints' (``predictor``, ``kp``,
``jacobian``, ``down``; ``hourglass``, ``mask``, ``occlusion``, ``down``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gfvc.models.official.geometry import (
    coordinate_grid,
    heatmap_to_keypoints,
    keypoints_to_gaussian,
    separable_gaussian,
)
from gfvc.models.official.layers import AntiAliasInterpolation2d, ConvOutput, Hourglass

__all__ = [
    "HeatmapKeypointDetector",
    "KeypointDenseMotion",
    "blend_motions",
    "deform_copies",
    "heat_difference",
    "keypoint_motions",
    "optional_downscale",
    "softmax_heatmap",
]

KP_VARIANCE = 0.01  # variance of the keypoint gaussians in normalised coordinates
#: The yaml parameters a :class:`HeatmapKeypointDetector` takes.
DETECTOR_PARAMS = (
    "block_expansion", "num_kp", "num_channels", "max_features", "num_blocks", "temperature",
    "scale_factor",
)  # fmt: skip


def optional_downscale(channels: int, scale: float) -> AntiAliasInterpolation2d | None:
    """The image down-scaler of a network that works at ``scale`` (None at full size)."""
    return AntiAliasInterpolation2d(channels, scale) if scale != 1 else None


def softmax_heatmap(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax over all spatial positions of each (B, K, *spatial) map, at ``temperature``."""
    b, k = logits.shape[:2]
    return F.softmax(logits.view(b, k, -1) / temperature, dim=2).view(logits.shape)


class HeatmapKeypointDetector(nn.Module):
    """Hourglass -> per-keypoint heatmap (7x7 conv) -> soft-argmax keypoints (B, K, 2).

    ``pad``: the heatmap conv's padding (FOMM 0, DAC 3); ``jacobian_maps``: number of 2x2
    Jacobian maps of the optional Jacobian head (0: none); ``wrapped``: convs stored as
    ``<name>.conv.*`` (DAC family); ``up_mode``: the hourglass's upsampling.
    """

    def __init__(
        self,
        block_expansion: int,
        num_kp: int,
        num_channels: int,
        max_features: int,
        num_blocks: int,
        temperature: float,
        scale_factor: float = 1,
        *,
        pad: int = 0,
        jacobian_maps: int = 0,
        wrapped: bool = False,
        up_mode: str = "nearest",
    ) -> None:
        super().__init__()
        self.predictor = Hourglass(
            block_expansion, num_channels, num_blocks, max_features, up_mode=up_mode
        )
        conv = ConvOutput if wrapped else nn.Conv2d
        self.kp = conv(self.predictor.out_filters, num_kp, kernel_size=7, padding=pad)
        self.num_jacobian_maps = jacobian_maps
        if jacobian_maps:
            self.jacobian = conv(
                self.predictor.out_filters, 4 * jacobian_maps, kernel_size=7, padding=pad
            )
        self.temperature = temperature
        self.scale_factor = scale_factor
        self.down = optional_downscale(num_channels, scale_factor)

    def heatmaps_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised heatmaps (B, K, h, w) and the hourglass output they come from."""
        if self.down is not None:
            x = self.down(x)
        feature_map = self.predictor(x)
        return softmax_heatmap(self.kp(feature_map), self.temperature), feature_map

    def heatmaps(self, x: torch.Tensor) -> torch.Tensor:
        return self.heatmaps_and_features(x)[0]

    def jacobians(self, heatmap: torch.Tensor, feature_map: torch.Tensor) -> torch.Tensor:
        """(B, K, 2, 2): each keypoint's Jacobian map averaged under its heatmap."""
        b, k, h, w = heatmap.shape
        jmap = self.jacobian(feature_map).reshape(b, self.num_jacobian_maps, 4, h, w)
        return (heatmap.unsqueeze(2) * jmap).view(b, k, 4, -1).sum(dim=-1).view(b, k, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return heatmap_to_keypoints(self.heatmaps(x), 2)


# --------------------------------------------------------------------------- dense motion steps
def keypoint_motions(
    kp_driving: torch.Tensor,
    kp_source: torch.Tensor,
    spatial: tuple[int, ...],
    jac_driving: torch.Tensor | None = None,
    jac_source: torch.Tensor | None = None,
) -> torch.Tensor:
    """The K+1 sparse motions (B, K+1, *spatial, n): the identity, then per keypoint
    ``kp_s + J_s J_d^-1 (z - kp_d)`` (without Jacobians: ``z - kp_d + kp_s``)."""
    b, k, n = kp_driving.shape
    identity = coordinate_grid(spatial, kp_source.dtype, kp_source.device).view(1, 1, *spatial, n)
    at = (b, k) + (1,) * len(spatial) + (n,)
    grid = identity - kp_driving.view(at)
    if jac_driving is not None and jac_source is not None:
        jac = torch.matmul(jac_source, torch.inverse(jac_driving))
        for _ in spatial:
            jac = jac.unsqueeze(-3)
        grid = torch.matmul(jac, grid.unsqueeze(-1)).squeeze(-1)
    return torch.cat([identity.expand(b, 1, *spatial, n), grid + kp_source.view(at)], dim=1)


def deform_copies(source: torch.Tensor, motions: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """``source`` (B, C, *spatial) warped by each of the K+1 motions: (B, K+1, C, *spatial)."""
    b, c = source.shape[:2]
    spatial = tuple(source.shape[2:])
    k1 = motions.shape[1]
    repeated = source.unsqueeze(1).expand(b, k1, c, *spatial).reshape(b * k1, c, *spatial)
    return F.grid_sample(
        repeated,
        motions.reshape(b * k1, *motions.shape[2:]),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=align_corners,
    ).view(b, k1, c, *spatial)


def heat_difference(
    kp_driving: torch.Tensor,
    kp_source: torch.Tensor,
    spatial: tuple[int, ...],
    variance: float,
    separable: bool = False,
) -> torch.Tensor:
    """Gaussian heatmap differences (driving - source), after an all-zero background map:
    (B, K+1, 1, *spatial). ``separable``: per-axis gaussians (inference form; float rounding)."""
    gaussian = separable_gaussian if separable else keypoints_to_gaussian
    g_d = gaussian(kp_driving, spatial, variance)
    g_s = gaussian(kp_source, spatial, variance)
    zeros = g_d.new_zeros(g_d.shape[0], 1, *spatial)
    return torch.cat([zeros, g_d - g_s], dim=1).unsqueeze(2)


def blend_motions(motions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The dense motion (B, *spatial, n): the K+1 motions (B, K+1, *spatial, n) weighted by
    ``mask`` (B, K+1, *spatial) and summed."""
    n = motions.dim() - 3
    to_channels = (0, 1, n + 2, *range(2, n + 2))
    to_last = (0, *range(2, n + 2), 1)
    return (motions.permute(*to_channels) * mask.unsqueeze(2)).sum(dim=1).permute(*to_last)


class KeypointDenseMotion(nn.Module):
    """Dense backward flow (and occlusion) from K+1 sparse motions (FOMM, the DAC family).

    ``wrapped``: ``mask``/``occlusion`` stored as ``<name>.conv.*`` (DAC family); ``up_mode``:
    the hourglass's upsampling. ``legacy`` (FOMM's older software): zeros instead of the
    heatmap differences and no Jacobians.
    """

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
        *,
        wrapped: bool = False,
        up_mode: str = "nearest",
    ) -> None:
        super().__init__()
        self.hourglass = Hourglass(
            block_expansion,
            (num_kp + 1) * (num_channels + 1),
            num_blocks,
            max_features,
            up_mode=up_mode,
        )
        conv = ConvOutput if wrapped else nn.Conv2d
        self.mask = conv(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.occlusion = (
            conv(self.hourglass.out_filters, 1, kernel_size=7, padding=3)
            if estimate_occlusion_map
            else None
        )
        self.num_kp = num_kp
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        self.down = optional_downscale(num_channels, scale_factor)
        self.align_corners = False
        self.legacy = False

    def downscale(self, image: torch.Tensor) -> torch.Tensor:
        return self.down(image) if self.down is not None else image

    def forward(
        self,
        small_source: torch.Tensor,
        kp_driving: torch.Tensor,
        kp_source: torch.Tensor,
        jac_driving: torch.Tensor | None = None,
        jac_source: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``small_source``: the already downscaled source (see :meth:`downscale`); keypoints
        (B, K, 2), Jacobians (B, K, 2, 2) or None."""
        b, _, h, w = small_source.shape
        if self.legacy:
            heat = small_source.new_zeros(b, self.num_kp + 1, 1, h, w)
            jac_driving = jac_source = None
        else:
            heat = heat_difference(kp_driving, kp_source, (h, w), self.kp_variance)
        motions = keypoint_motions(kp_driving, kp_source, (h, w), jac_driving, jac_source)
        deformed = deform_copies(small_source, motions, self.align_corners)
        prediction = self.hourglass(torch.cat([heat, deformed], dim=2).view(b, -1, h, w))
        mask = F.softmax(self.mask(prediction), dim=1)
        out = {
            "heatmap": heat,
            "sparse_motion": motions,
            "sparse_deformed": deformed,
            "mask": mask,
            "deformation": blend_motions(motions, mask),
        }
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction))
        return out
