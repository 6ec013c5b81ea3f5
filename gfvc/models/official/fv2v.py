"""FV2V: one-shot free-view talking-head synthesis (face-vid2vid, Wang et al., CVPR 2021) as GFVC codes it.

Per inter frame 57 scalars are sent: the head rotation matrix (3x3, from yaw/pitch/roll
estimated by ``he_estimator``), the translation (3) and the expression deformation of the 15
implicit 3-D keypoints (15x3). The decoder runs the canonical keypoint detector and the head
pose estimator on the decoded key frame only, then moves the canonical keypoints with the
received pose/expression: ``kp = R kp_c + t + exp``. The generator lifts the key frame to a
3-D feature volume, warps it with a dense 3-D motion field and renders it back to 2-D.

Network layout = ``FV2V-256.yaml`` of the GFVC common software (num_kp 15, no Jacobians,
keypoint detector at full resolution); ``state_dict`` names and shapes equal the official
checkpoint. Note that the v1 repository also ships ``config/vox-256.yaml`` with a different
layout, which its scripts do not use.

Reference behaviours kept on purpose (documented, see :class:`Fv2vOptions`):

* ``HEEstimator.forward`` returns ``yaw = fc_roll(x)`` and ``roll = fc_yaw(x)``; checkpoints are
  trained with that naming, so it is reproduced (only the names are swapped).
* degrees -> radians uses ``pi = 3.14`` as in the reference (option ``pi``).
* ``align_corners`` (default False, torch's default that the v1 software runs with).
* masks below 1e-3 are zeroed before the motion fields are blended (``mask_floor``).
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
    heatmap_to_keypoints,
    warp,
)
from gfvc.models.official.keypoints import (
    KP_VARIANCE,
    blend_motions,
    deform_copies,
    heat_difference,
    keypoint_motions,
    optional_downscale,
    softmax_heatmap,
)
from gfvc.models.official.layers import (
    DownBlock2d,
    Fusable,
    Hourglass,
    ResBlock3d,
    SameBlock2d,
    UpBlock2d,
    UpBlock3d,
    apply_occlusion,
    down_block_stack,
    feature_width,
    res_bottleneck,
    run_blocks,
)
from gfvc.models.registry import register_motion_model

__all__ = [
    "Fv2vDenseMotion",
    "Fv2vGenerator",
    "Fv2vKeypointDetector",
    "Fv2vModel",
    "Fv2vOptions",
    "Fv2vOutputs",
    "HeadPose",
    "HeadPoseEstimator",
    "headpose_to_degrees",
    "rotation_matrix",
]


@dataclass(frozen=True)
class Fv2vOptions(ModelOptions):
    """See the module docstring."""

    align_corners: bool = False
    pi: float = 3.14
    mask_floor: float = 1e-3


# --------------------------------------------------------------------------- keypoints
class KeypointHourglass(nn.Module):
    """2-D encoder, 1x1 conv to ``reshape_features`` channels, reshaped to a 3-D volume of
    depth ``reshape_depth``, then 3-D decoder (no skips). Output: (B, block_expansion, D, H, W)."""

    def __init__(
        self,
        block_expansion: int,
        in_features: int,
        reshape_features: int,
        reshape_depth: int,
        num_blocks: int,
        max_features: int,
    ) -> None:
        super().__init__()

        def width(i: int) -> int:
            return min(max_features, block_expansion * 2**i)

        self.down_blocks = nn.Sequential()
        for i in range(num_blocks):
            self.down_blocks.add_module(
                f"down{i}", DownBlock2d(in_features if i == 0 else width(i), width(i + 1))
            )
        self.conv = nn.Conv2d(width(num_blocks), reshape_features, kernel_size=1)
        self.up_blocks = nn.Sequential()
        for i in range(num_blocks):
            self.up_blocks.add_module(
                f"up{i}", UpBlock3d(width(num_blocks - i), width(num_blocks - i - 1))
            )
        self.reshape_depth = reshape_depth
        self.out_filters = width(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.down_blocks(x))
        b, c, h, w = out.shape
        return self.up_blocks(out.view(b, c // self.reshape_depth, self.reshape_depth, h, w))


class Fv2vKeypointDetector(nn.Module):
    """Canonical 3-D keypoints (B, K, 3) by 3-D soft-argmax."""

    def __init__(
        self,
        block_expansion: int,
        feature_channel: int,
        num_kp: int,
        image_channel: int,
        max_features: int,
        reshape_channel: int,
        reshape_depth: int,
        num_blocks: int,
        temperature: float,
        estimate_jacobian: bool = False,
        scale_factor: float = 1,
        single_jacobian_map: bool = False,
    ) -> None:
        super().__init__()
        if estimate_jacobian:
            raise ValueError(
                "FV2V with estimate_jacobian (vox-256.yaml) is not supported; use FV2V-256.yaml"
            )
        self.predictor = KeypointHourglass(
            block_expansion, image_channel, reshape_channel, reshape_depth, num_blocks, max_features
        )
        self.kp = nn.Conv3d(self.predictor.out_filters, num_kp, kernel_size=3, padding=1)
        self.temperature = temperature
        self.scale_factor = scale_factor
        self.down = optional_downscale(image_channel, scale_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down is not None:
            x = self.down(x)
        logits = self.kp(self.predictor(x))
        return heatmap_to_keypoints(softmax_heatmap(logits, self.temperature), 3)


# --------------------------------------------------------------------------- head pose
class ResBottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3 with stride, 1x1) with a projected skip when strided."""

    def __init__(self, in_features: int, stride: int) -> None:
        super().__init__()
        mid = in_features // 4
        self.conv1 = nn.Conv2d(in_features, mid, kernel_size=1)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(mid, in_features, kernel_size=1)
        self.norm1 = nn.BatchNorm2d(mid, affine=True)
        self.norm2 = nn.BatchNorm2d(mid, affine=True)
        self.norm3 = nn.BatchNorm2d(in_features, affine=True)
        self.stride = stride
        if stride != 1:
            self.skip = nn.Conv2d(in_features, in_features, kernel_size=1, stride=stride)
            self.norm4 = nn.BatchNorm2d(in_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.stride != 1:
            x = self.norm4(self.skip(x))
        return F.relu(out + x)


@dataclass
class HeadPose:
    """Head-pose estimator output: angle bin logits ``yaw``/``pitch``/``roll`` (B, bins),
    translation ``t`` (B, 3), expression ``exp`` (B, 3K)."""

    yaw: torch.Tensor
    pitch: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    exp: torch.Tensor


class HeadPoseEstimator(nn.Module):
    """ResNet-50-like head pose / expression regressor (internal widths fixed at 256..2048)."""

    def __init__(
        self,
        block_expansion: int,
        feature_channel: int,
        num_kp: int,
        image_channel: int,
        max_features: int,
        num_bins: int = 66,
        **_: Any,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(image_channel, block_expansion, kernel_size=7, padding=3, stride=2)
        self.norm1 = nn.BatchNorm2d(block_expansion, affine=True)
        self.conv2 = nn.Conv2d(block_expansion, 256, kernel_size=1)
        self.norm2 = nn.BatchNorm2d(256, affine=True)
        self.block1 = self._stage("b1", 256, 3)
        self.conv3 = nn.Conv2d(256, 512, kernel_size=1)
        self.norm3 = nn.BatchNorm2d(512, affine=True)
        self.block2 = ResBottleneck(512, stride=2)
        self.block3 = self._stage("b3", 512, 3)
        self.conv4 = nn.Conv2d(512, 1024, kernel_size=1)
        self.norm4 = nn.BatchNorm2d(1024, affine=True)
        self.block4 = ResBottleneck(1024, stride=2)
        self.block5 = self._stage("b5", 1024, 5)
        self.conv5 = nn.Conv2d(1024, 2048, kernel_size=1)
        self.norm5 = nn.BatchNorm2d(2048, affine=True)
        self.block6 = ResBottleneck(2048, stride=2)
        self.block7 = self._stage("b7", 2048, 2)
        self.fc_roll = nn.Linear(2048, num_bins)
        self.fc_pitch = nn.Linear(2048, num_bins)
        self.fc_yaw = nn.Linear(2048, num_bins)
        self.fc_t = nn.Linear(2048, 3)
        self.fc_exp = nn.Linear(2048, 3 * num_kp)

    @staticmethod
    def _stage(prefix: str, features: int, n: int) -> nn.Sequential:
        seq = nn.Sequential()
        for i in range(n):
            seq.add_module(f"{prefix}_{i}", ResBottleneck(features, stride=1))
        return seq

    def forward(self, x: torch.Tensor) -> HeadPose:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.max_pool2d(out, kernel_size=3, stride=2, padding=1)
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.block1(out)
        out = F.relu(self.norm3(self.conv3(out)))
        out = self.block3(self.block2(out))
        out = F.relu(self.norm4(self.conv4(out)))
        out = self.block5(self.block4(out))
        out = F.relu(self.norm5(self.conv5(out)))
        out = self.block7(self.block6(out))
        out = F.adaptive_avg_pool2d(out, 1).view(out.shape[0], -1)
        # The reference names are crossed (yaw from fc_roll, roll from fc_yaw); kept as trained.
        return HeadPose(
            yaw=self.fc_roll(out),
            pitch=self.fc_pitch(out),
            roll=self.fc_yaw(out),
            t=self.fc_t(out),
            exp=self.fc_exp(out),
        )


def headpose_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Expected angle of 66 bins of 3 degrees starting at -99: (B, bins) -> (B,)."""
    idx = torch.arange(logits.shape[1], dtype=logits.dtype, device=logits.device)
    return torch.sum(F.softmax(logits, dim=1) * idx, dim=1) * 3 - 99


def rotation_matrix(
    x_deg: torch.Tensor, y_deg: torch.Tensor, z_deg: torch.Tensor, pi: float = 3.14
) -> torch.Tensor:
    """R = R_x @ R_y @ R_z from angles in degrees about the x, y, z axes: (B,) x3 -> (B, 3, 3)."""
    ax, ay, az = (a.unsqueeze(1) / 180 * pi for a in (x_deg, y_deg, z_deg))
    one, zero = torch.ones_like(ax), torch.zeros_like(ax)
    r_x = torch.cat(
        [one, zero, zero, zero, torch.cos(ax), -torch.sin(ax), zero, torch.sin(ax), torch.cos(ax)],
        dim=1,
    ).view(-1, 3, 3)
    r_y = torch.cat(
        [torch.cos(ay), zero, torch.sin(ay), zero, one, zero, -torch.sin(ay), zero, torch.cos(ay)],
        dim=1,
    ).view(-1, 3, 3)
    r_z = torch.cat(
        [torch.cos(az), -torch.sin(az), zero, torch.sin(az), torch.cos(az), zero, zero, zero, one],
        dim=1,
    ).view(-1, 3, 3)
    return torch.einsum("bij,bjk,bkm->bim", r_x, r_y, r_z)


def transform_keypoints(
    kp_canonical: torch.Tensor, rot: torch.Tensor, t: torch.Tensor, exp: torch.Tensor
) -> torch.Tensor:
    """``R kp + t + exp``: (B,K,3), (B,3,3), (B,3), (B,3K) -> (B,K,3)."""
    rotated = torch.einsum("bmp,bkp->bkm", rot, kp_canonical)
    return rotated + t.unsqueeze(1) + exp.view(exp.shape[0], -1, 3)


# --------------------------------------------------------------------------- generator
@dataclass
class FftConv3d:
    """A wide-kernel 3-D convolution (stride 1, "same" padding) by FFT over overlapping tiles.

    The input is cut into tiles of ``n - k + 1`` output pixels in H and W (full depth, padded to
    ``depth_fft``); each tile's spectrum is multiplied by the cached weight spectrum and summed
    over the input channels, then transformed back. The transforms run over the *leading* axes
    of a channels-last (depth, H, W, tile, C) layout, so the spectrum comes out frequency-major
    and the per-frequency products are two real batched matrix products (real and imaginary
    weight parts) with no transposition of the volume. (A complex ``bmm`` is avoided on
    purpose: torch runs it as one small product per frequency, 100x slower with 2 threads.)

    For FV2V's 7x7x7 mask convolution (112 -> 16 channels at 16x64x64) this is several times
    faster than the direct form and rounds *less* (~1e-6); the weight spectrum costs
    ``Cin * Cout * depth_fft * n * (n/2 + 1) * 8`` bytes (290 MB there).
    """

    spectrum: torch.Tensor  # (2, bins, Cin, Cout) float32: real, imaginary part of conj(FFT(w))
    bias: torch.Tensor
    kernel: int
    n: int
    depth_fft: int

    @classmethod
    def of(cls, weight: torch.Tensor, bias: torch.Tensor, depth: int, n: int = 40) -> FftConv3d:
        k = weight.shape[-1]
        nd = depth + k - 1
        nd += nd % 2  # an even transform length
        spec = torch.fft.rfftn(weight.double(), s=(nd, n, n), dim=(-3, -2, -1)).conj()
        cout, cin = spec.shape[:2]
        spec = torch.view_as_real(spec.resolve_conj().reshape(cout, cin, -1)).permute(3, 2, 1, 0)
        return cls(spec.float().contiguous(), bias.float(), k, n, nd)

    def applies(self, x: torch.Tensor) -> bool:
        return x.dim() == 5 and x.shape[0] == 1 and x.shape[2] + self.kernel - 1 <= self.depth_fft

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of ``x`` (1, C, D, H, W); channels-last out."""
        k, n, nd = self.kernel, self.n, self.depth_fft
        p, step = k // 2, n - k + 1
        _, c, d, h, w = x.shape
        th, tw = -(-h // step), -(-w // step)
        xp = x.new_zeros(nd, th * step + k - 1, tw * step + k - 1, c, dtype=torch.float32)
        xp[p : p + d, p : p + h, p : p + w] = x[0].permute(1, 2, 3, 0)
        row, col = xp.stride(1), xp.stride(2)
        tiles = xp.as_strided(
            (nd, n, n, th, tw, c), (xp.stride(0), row, col, step * row, step * col, 1)
        )
        spec = torch.fft.rfftn(tiles, dim=(0, 1, 2))  # (nd, n, n/2+1, th, tw, C)
        t = th * tw
        # rows: the real parts of the t tiles, then their imaginary parts
        a = torch.view_as_real(spec).view(-1, t, c, 2).permute(0, 3, 1, 2).reshape(-1, 2 * t, c)
        re = torch.bmm(a, self.spectrum[0])  # (bins, 2t, Cout): (Re, Im) x Re(w)
        im = torch.bmm(a, self.spectrum[1])  # (Re, Im) x Im(w)
        cout = re.shape[2]
        prod = torch.empty(re.shape[0], t, cout, 2, dtype=re.dtype, device=re.device)
        torch.sub(re[:, :t], im[:, t:], out=prod[..., 0])
        torch.add(re[:, t:], im[:, :t], out=prod[..., 1])
        prod = torch.view_as_complex(prod).view(nd, n, n // 2 + 1, th, tw, cout)
        y = torch.fft.irfftn(prod, s=(nd, n, n), dim=(0, 1, 2))[:d, :step, :step]
        y = y.permute(0, 3, 1, 4, 2, 5).reshape(d, th * step, tw * step, cout)[:, :h, :w]
        out = torch.add(y, self.bias)  # (D, H, W, Cout)
        return out.unsqueeze(0).permute(0, 4, 1, 2, 3).to(x.dtype)


@dataclass
class DepthFoldedConv2d:
    """FV2V's occlusion convolution: a k x k 2-D convolution ("same" padding) of the (C*D)-channel
    view of a (1, C, D, H, W) volume, computed as one matrix product per depth plane (the k*k
    tap maps of every output channel) summed over depth, then the tap maps added in place by
    ``F.fold``. ~10x faster on CPU than the 1792-channel direct convolution, and it reads the
    volume in the channels-last layout the 3-D Winograd convolutions leave it in.
    """

    weight: torch.Tensor  # (D, C, Cout * k * k), taps reversed so that fold sums them in place
    bias: torch.Tensor  # (Cout,)
    kernel: int

    @classmethod
    def of(cls, conv: nn.Conv2d, depth: int) -> DepthFoldedConv2d:
        cout, cd, k = conv.weight.shape[:3]
        w = conv.weight.flip(-2, -1).reshape(cout, cd // depth, depth, k * k)
        w = w.permute(2, 1, 0, 3).reshape(depth, cd // depth, cout * k * k).contiguous()
        bias = conv.bias if conv.bias is not None else conv.weight.new_zeros(cout)
        return cls(w, bias.detach().clone(), k)

    def applies(self, x: torch.Tensor) -> bool:
        return x.dim() == 5 and x.shape[0] == 1 and x.shape[1:3] == self.weight.shape[1::-1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _, c, d, h, w = x.shape
        planes = x[0].permute(1, 2, 3, 0).reshape(d, h * w, c)
        taps = torch.bmm(planes, self.weight).sum(0)  # (H * W, Cout * k * k)
        out = F.fold(taps.t().unsqueeze(0), (h, w), self.kernel, padding=self.kernel // 2)
        return out + self.bias.view(1, -1, 1, 1)


class Fv2vDenseMotion(Fusable):
    """3-D dense motion + occlusion from canonical-space keypoint pairs."""

    def __init__(
        self,
        block_expansion: int,
        num_blocks: int,
        max_features: int,
        num_kp: int,
        feature_channel: int,
        reshape_depth: int,
        compress: int,
        estimate_occlusion_map: bool = False,
        kp_variance: float = KP_VARIANCE,
    ) -> None:
        super().__init__()
        self.hourglass = Hourglass(
            block_expansion,
            (num_kp + 1) * (compress + 1),
            num_blocks,
            max_features,
            dims=3,
            final_conv=True,
        )
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress, affine=True)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters * reshape_depth, 1, kernel_size=7, padding=3)
            if estimate_occlusion_map
            else None
        )
        self.num_kp = num_kp
        self.kp_variance = kp_variance
        self.align_corners = False
        self.mask_floor = 1e-3
        self.reshape_depth = reshape_depth
        self.mask_fft: FftConv3d | None = None
        self.occlusion_fast: DepthFoldedConv2d | None = None
        self.inference_form = False

    def fuse(self, enabled: bool, channels_last: bool) -> None:
        k = self.mask.kernel_size[0]
        wide = k >= 5 and self.mask.kernel_size == (k, k, k) and self.mask.padding == (k // 2,) * 3
        self.mask_fft = None
        self.inference_form = enabled
        if enabled and wide:
            self.mask_fft = FftConv3d.of(self.mask.weight, self.mask.bias, self.reshape_depth)
        occ = self.occlusion
        plain = (
            occ is not None
            and occ.stride == (1, 1)
            and 2 * occ.padding[0] + 1 == occ.kernel_size[0]
        )
        self.occlusion_fast = (
            DepthFoldedConv2d.of(occ, self.reshape_depth) if enabled and plain else None
        )

    def mask_logits(self, prediction: torch.Tensor) -> torch.Tensor:
        if self.mask_fft is not None and self.mask_fft.applies(prediction):
            return self.mask_fft(prediction)
        return self.mask(prediction)

    def compress_feature(self, feature: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.compress(feature)))

    def forward(
        self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``feature``: the *compressed* key feature volume (see :meth:`compress_feature`)."""
        b, _, d, h, w = feature.shape
        motions = keypoint_motions(kp_driving, kp_source, (d, h, w))
        deformed = deform_copies(feature, motions, self.align_corners)
        fast = self.inference_form
        heat = heat_difference(kp_driving, kp_source, (d, h, w), self.kp_variance, fast)
        x = torch.cat([heat, deformed], dim=2).view(b, -1, d, h, w)
        if fast:  # the 3-D convolutions run channels-last
            x = x.contiguous(memory_format=torch.channels_last_3d)
        prediction = self.hourglass(x)
        mask = F.softmax(self.mask_logits(prediction), dim=1)
        blend = (
            torch.where(mask < self.mask_floor, torch.zeros_like(mask), mask)
            if self.mask_floor > 0
            else mask
        )
        deformation = blend_motions(motions, blend)
        out = {"mask": mask, "deformation": deformation}
        if self.occlusion_fast is not None and self.occlusion_fast.applies(prediction):
            out["occlusion_map"] = torch.sigmoid(self.occlusion_fast(prediction))
        elif self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction.reshape(b, -1, h, w)))
        return out


@dataclass
class Fv2vSource:
    """Cached key-frame encoding: ``feature_3d`` (B,C,D,H/4,W/4) appearance volume and
    ``compressed`` (B,compress,D,H/4,W/4) its dense-motion input."""

    feature_3d: torch.Tensor
    compressed: torch.Tensor


@dataclass
class Fv2vOutputs:
    """Generator outputs (256x256): ``prediction`` (B,3,256,256); ``deformation``
    (B,16,64,64,3) sampling grid (x,y,z); ``mask`` (B,K+1,16,64,64); ``occlusion_map`` (B,1,64,64)."""

    prediction: torch.Tensor
    deformation: torch.Tensor
    mask: torch.Tensor
    occlusion_map: torch.Tensor | None


class Fv2vGenerator(nn.Module):
    """2-D encoder -> 3-D feature volume -> 3-D warp -> 2-D decoder."""

    def __init__(
        self,
        image_channel: int,
        feature_channel: int,
        num_kp: int,
        block_expansion: int,
        max_features: int,
        num_down_blocks: int,
        reshape_channel: int,
        reshape_depth: int,
        num_resblocks: int,
        estimate_occlusion_map: bool = False,
        dense_motion_params: dict[str, Any] | None = None,
        estimate_jacobian: bool = False,
    ) -> None:
        super().__init__()
        if dense_motion_params is None:
            raise ValueError("FV2V generator needs dense_motion_params")
        self.dense_motion_network = Fv2vDenseMotion(
            num_kp=num_kp,
            feature_channel=feature_channel,
            estimate_occlusion_map=estimate_occlusion_map,
            **dense_motion_params,
        )
        self.first = SameBlock2d(image_channel, block_expansion, kernel_size=7, padding=3)
        self.down_blocks = down_block_stack(block_expansion, max_features, num_down_blocks)
        self.second = nn.Conv2d(
            feature_width(block_expansion, max_features, num_down_blocks),
            max_features,
            kernel_size=1,
        )
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(reshape_channel))
        width = block_expansion * 2**num_down_blocks
        self.third = SameBlock2d(max_features, width, kernel_size=3, padding=1, lrelu=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)
        self.resblocks_2d = res_bottleneck(width, num_resblocks, prefix="2dr")
        self.up_blocks = nn.ModuleList(
            UpBlock2d(
                max(block_expansion, block_expansion * 2 ** (num_down_blocks - i)),
                max(block_expansion, block_expansion * 2 ** (num_down_blocks - i - 1)),
            )
            for i in range(num_down_blocks)
        )
        self.final = nn.Conv2d(block_expansion, image_channel, kernel_size=7, padding=3)
        self.align_corners = False

    def set_align_corners(self, value: bool) -> None:
        self.align_corners = value
        self.dense_motion_network.align_corners = value

    def encode_source(self, source: torch.Tensor) -> Fv2vSource:
        out = self.second(run_blocks(self.first(source), self.down_blocks))
        b, _, h, w = out.shape
        feature_3d = self.resblocks_3d(out.view(b, self.reshape_channel, self.reshape_depth, h, w))
        return Fv2vSource(feature_3d, self.dense_motion_network.compress_feature(feature_3d))

    def decode(
        self, src: Fv2vSource, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> Fv2vOutputs:
        motion = self.dense_motion_network(src.compressed, kp_driving, kp_source)
        out = warp(src.feature_3d, motion["deformation"], self.align_corners)
        b, c, d, h, w = out.shape
        out = self.fourth(self.third(out.view(b, c * d, h, w)))
        out = apply_occlusion(out, motion.get("occlusion_map"), self.align_corners)
        out = run_blocks(self.resblocks_2d(out), self.up_blocks)
        return Fv2vOutputs(
            prediction=torch.sigmoid(self.final(out)),
            deformation=motion["deformation"],
            mask=motion["mask"],
            occlusion_map=motion.get("occlusion_map"),
        )

    def forward(
        self, source_image: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> Fv2vOutputs:
        return self.decode(self.encode_source(source_image), kp_driving, kp_source)


# --------------------------------------------------------------------------- motion model
@dataclass
class Fv2vPose:
    """Transmitted pose/expression: ``rot`` (B,3,3), ``t`` (B,3), ``exp`` (B,3K)."""

    rot: torch.Tensor
    t: torch.Tensor
    exp: torch.Tensor


@dataclass
class Fv2vKey:
    """Key-frame cache entry: canonical keypoints (B,K,3), the key's posed keypoints
    ``kp_source`` (B,K,3) and the generator's source encoding."""

    kp_canonical: torch.Tensor
    kp_source: torch.Tensor
    source: Fv2vSource


@register_motion_model("fv2v")
class Fv2vModel(OfficialModel[Fv2vKey]):
    """FV2V as a gfvc MotionModel (feature: rotation 9 + translation 3 + expression 45 = 57)."""

    model_id: ClassVar[int] = 4
    default_qstep: ClassVar[float] = 256
    family: ClassVar[str] = "fv2v"
    module_names: ClassVar[tuple[str, ...]] = ("kp_detector", "he_estimator", "generator")
    options_class: ClassVar[type[ModelOptions]] = Fv2vOptions
    options: Fv2vOptions

    def build_networks(self, params: dict[str, Any]) -> dict[str, nn.Module]:
        common = params["common_params"]
        gen = Fv2vGenerator(**params["generator_params"], **common)
        kp = Fv2vKeypointDetector(**params["kp_detector_params"], **common)
        he = HeadPoseEstimator(**params["he_estimator_params"], **common)
        gen.set_align_corners(self.options.align_corners)
        gen.dense_motion_network.mask_floor = self.options.mask_floor
        self.num_kp = int(common["num_kp"])
        return {"kp_detector": kp, "he_estimator": he, "generator": gen}

    @property
    def fields(self) -> tuple[FeatureField, ...]:
        return (
            FeatureField("rotation", "matrix", (1, 3, 3)),
            FeatureField("translation", "vector", (3,)),
            FeatureField("expression", "vector", (self.num_kp, 3)),
        )

    # ------------------------------------------------------------------ pose <-> vector
    def pose_from_headpose(self, he: HeadPose) -> Fv2vPose:
        # The reference's matrix turns about x by the angle it calls "roll", about y by
        # "pitch" and about z by "yaw" (HeadPose names, themselves crossed vs. the fc layers).
        rx, ry, rz = (headpose_to_degrees(a) for a in (he.roll, he.pitch, he.yaw))
        return Fv2vPose(rotation_matrix(rx, ry, rz, pi=self.options.pi), he.t, he.exp)

    def to_vector(self, pose: Fv2vPose) -> np.ndarray:
        return self.tensors_vector(pose.rot, pose.t, pose.exp)

    def from_vector(self, vec: np.ndarray) -> Fv2vPose:
        f = self.vector_tensors(vec)
        return Fv2vPose(
            f["rotation"].view(1, 3, 3), f["translation"].view(1, 3), f["expression"].view(1, -1)
        )

    # ------------------------------------------------------------------ coding
    def analyse_tensor(self, x: torch.Tensor) -> tuple[HeadPose, Fv2vPose]:
        with torch.inference_mode():
            he = self.nets["he_estimator"](x)
            return he, self.pose_from_headpose(he)

    def feature_of(self, x: torch.Tensor) -> Fv2vPose:
        return self.analyse_tensor(x)[1]

    def encode_key(self, key: torch.Tensor, key_feature: np.ndarray | None) -> Fv2vKey:
        """Reference semantics: the key's keypoints come from the key frame itself (float32 pose
        from the estimator logits), not from a transmitted vector, so ``key_feature`` is unused."""
        kp_c = self.nets["kp_detector"](key)
        pose = self.pose_from_headpose(self.nets["he_estimator"](key))
        kp_s = transform_keypoints(kp_c, pose.rot, pose.t, pose.exp)
        return Fv2vKey(kp_c, kp_s, self.nets["generator"].encode_source(key))

    def driving_keypoints(self, key: Fv2vKey, pose: Fv2vPose) -> torch.Tensor:
        return transform_keypoints(key.kp_canonical, pose.rot, pose.t, pose.exp)

    def synthesize_tensor(self, key_frame: np.ndarray, pose: Fv2vPose) -> Fv2vOutputs:
        key = self.key_encoding(key_frame)
        with torch.inference_mode():
            return self.nets["generator"].decode(
                key.source, self.driving_keypoints(key, pose), key.kp_source
            )

    def synthesize(
        self, key_frame: np.ndarray, key_feature: np.ndarray, feature: np.ndarray
    ) -> np.ndarray:
        out = self.synthesize_tensor(key_frame, self.from_vector(feature))
        return tensor_to_frame(out.prediction, self.options.rounding)
