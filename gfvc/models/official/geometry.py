"""Coordinate grids, keypoint <-> heatmap conversions and warping, shared by all official models.

Conventions (those of the official GFVC models, so checkpoints stay valid):

* normalised coordinates span [-1, 1] with the end points on the *centres* of the first and
  last pixel (``-1 + 2 * i / (n - 1)``);
* coordinate tuples are ordered (x, y) in 2-D and (x, y, z) in 3-D, i.e. the reverse of the
  tensor's spatial axes, which is what ``torch.nn.functional.grid_sample`` expects;
* ``align_corners`` is always passed explicitly: the v1 common software (FOMM, CFTE, FV2V) runs
  with torch's default ``False``, the updated software (DAC, HDAC, RDAC) with ``True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "coordinate_grid",
    "flow_warp",
    "heatmap_to_keypoints",
    "keypoints_to_gaussian",
    "separable_gaussian",
    "resize_deformation",
    "warp",
]


#: Coordinate grids by (spatial size, dtype, device): every frame needs the same few.
_GRIDS: dict[tuple[tuple[int, ...], torch.dtype, torch.device], torch.Tensor] = {}


def coordinate_grid(
    spatial_size: tuple[int, ...],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Grid of normalised coordinates, shape (*spatial_size, len(spatial_size)).

    ``spatial_size`` is (h, w) or (d, h, w); the last axis holds (x, y) or (x, y, z). The
    tensor is cached and shared: callers must not modify it in place.
    """
    key = (tuple(int(n) for n in spatial_size), dtype, torch.device(device))
    grid = _GRIDS.get(key)
    if grid is None:
        with torch.inference_mode(False), torch.no_grad():
            axes = [
                2 * (torch.arange(n, dtype=dtype, device=device) / (n - 1)) - 1
                for n in spatial_size
            ]
            mesh = torch.meshgrid(*axes, indexing="ij")  # one tensor per axis, slowest first
            grid = torch.stack(tuple(reversed(mesh)), dim=-1)
        if len(_GRIDS) > 64:
            _GRIDS.clear()
        _GRIDS[key] = grid
    return grid


def keypoints_to_gaussian(
    mean: torch.Tensor, spatial_size: tuple[int, ...], variance: float
) -> torch.Tensor:
    """Unnormalised isotropic gaussians ``exp(-|p - mean|^2 / (2 * variance))``.

    ``mean`` (..., n) in normalised coordinates -> (..., *spatial_size).
    """
    n = mean.shape[-1]
    grid = coordinate_grid(spatial_size, mean.dtype, mean.device)
    lead = mean.shape[:-1]
    grid = grid.view((1,) * len(lead) + grid.shape)
    diff = grid - mean.view(*lead, *([1] * n), n)
    return torch.exp(-0.5 * (diff**2).sum(-1) / variance)


def separable_gaussian(
    mean: torch.Tensor, spatial_size: tuple[int, ...], variance: float
) -> torch.Tensor:
    """:func:`keypoints_to_gaussian` as the product of one 1-D gaussian per axis (equal up to
    float rounding, ~1e-7 relative): n small exponentials instead of one per voxel, which
    matters for FV2V's 15 keypoints on a 16x64x64 volume."""
    n = mean.shape[-1]
    lead = mean.shape[:-1]
    out: torch.Tensor | None = None
    for i, size in enumerate(spatial_size):
        axis = 2 * (torch.arange(size, dtype=mean.dtype, device=mean.device) / (size - 1)) - 1
        shape = [1] * n
        shape[i] = size
        diff = axis.view(*([1] * len(lead)), *shape) - mean[..., n - 1 - i].view(*lead, *([1] * n))
        g = torch.exp(-0.5 * diff**2 / variance)
        out = g if out is None else out * g
    assert out is not None
    return out


def heatmap_to_keypoints(heatmap: torch.Tensor, dims: int) -> torch.Tensor:
    """Expected coordinate of each (already normalised) heatmap: (B, K, *spatial) -> (B, K, dims)."""
    spatial = tuple(heatmap.shape[2:])
    if len(spatial) != dims:
        raise ValueError(f"heatmap has {len(spatial)} spatial axes, expected {dims}")
    grid = coordinate_grid(spatial, heatmap.dtype, heatmap.device).unsqueeze(0).unsqueeze(0)
    return (heatmap.unsqueeze(-1) * grid).sum(dim=tuple(range(2, 2 + dims)))


def resize_deformation(
    deformation: torch.Tensor, spatial_size: tuple[int, ...], align_corners: bool
) -> torch.Tensor:
    """Resample a sampling grid (B, *spatial, n) to another resolution ((bi/tri)linear)."""
    if tuple(deformation.shape[1:-1]) == tuple(spatial_size):
        return deformation
    n = deformation.dim() - 2
    mode = "bilinear" if n == 2 else "trilinear"
    perm_in = (0, n + 1, *range(1, n + 1))
    perm_out = (0, *range(2, n + 2), 1)
    out = F.interpolate(
        deformation.permute(*perm_in), size=spatial_size, mode=mode, align_corners=align_corners
    )
    return out.permute(*perm_out)


def warp(inp: torch.Tensor, deformation: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """Backward-warp ``inp`` (B, C, *spatial) with a sampling grid (B, *spatial', n).

    The grid is first resized to the input's resolution when they differ (as the official
    generators do), then ``grid_sample`` (bilinear, zero padding) is applied.
    """
    deformation = resize_deformation(deformation, tuple(inp.shape[2:]), align_corners)
    return F.grid_sample(
        inp, deformation, mode="bilinear", padding_mode="zeros", align_corners=align_corners
    )


def flow_warp(inp: torch.Tensor, flow: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """Backward-warp ``inp`` (B, C, H, W) by a flow in *pixel* units (B, h, w, 2), (dx, dy).

    CFTE's convention: a flow of another resolution is bilinearly resized to (H, W) with its
    values unchanged (they stay in pixels of the input being warped), then added to the pixel
    grid and normalised with ``2 * p / (n - 1) - 1``.
    """
    h, w = inp.shape[2:]
    flow = resize_deformation(flow, (h, w), align_corners)
    scale = torch.tensor([2.0 / (w - 1), 2.0 / (h - 1)], dtype=flow.dtype, device=flow.device)
    grid = coordinate_grid((h, w), flow.dtype, flow.device).unsqueeze(0) + flow * scale
    return F.grid_sample(
        inp, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners
    )
