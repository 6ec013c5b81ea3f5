"""Building blocks shared by the official GFVC networks (FOMM, CFTE, FV2V, DAC, HDAC, RDAC).

Attribute names (``conv``, ``norm``, ``encoder.down_blocks.N`` ...) are part of the checkpoint
format: they must stay exactly as they are so that official ``state_dict`` files load strictly.
Batch norms are plain ``nn.BatchNorm*`` (the upstream synchronised batch norm stores the same
keys and behaves identically in eval mode); every model here is used in eval mode only.

Nearest-neighbour upsampling has no ``align_corners`` argument in torch (it is only defined for
the linear modes), so ``UpBlock2d`` passes none in that mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from gfvc.models.official.geometry import warp

__all__ = [
    "AntiAliasInterpolation2d",
    "ConvOutput",
    "DownBlock2d",
    "DownBlock3d",
    "GDN",
    "Hourglass",
    "HourglassDecoder",
    "HourglassEncoder",
    "OcclusionAwareGenerator",
    "TrunkSource",
    "ResBlock2d",
    "ResBlock3d",
    "SameBlock2d",
    "UpBlock2d",
    "UpBlock3d",
    "apply_occlusion",
    "down_block_stack",
    "feature_width",
    "res_bottleneck",
    "run_blocks",
    "up_block_stack",
]


class AntiAliasInterpolation2d(nn.Module):
    """Gaussian blur then strided subsampling: the models' image down-scaler.

    The kernel is a *persistent* buffer ``weight`` (C, 1, k, k) because the official checkpoints
    contain it; sigma = (1/scale - 1)/2, k = 2*round(4*sigma) + 1. ``resample="subsample"``
    takes every (1/scale)-th pixel (FOMM, CFTE, FV2V, DAC, RDAC); ``"bilinear"`` resizes the
    blurred image bilinearly with ``align_corners=True`` (HDAC; established on its golden data).
    """

    def __init__(self, channels: int, scale: float, resample: str = "subsample") -> None:
        super().__init__()
        sigma = (1 / scale - 1) / 2
        ksize = 2 * round(sigma * 4) + 1
        self.ka = ksize // 2
        self.kb = self.ka - 1 if ksize % 2 == 0 else self.ka
        axis = torch.arange(ksize, dtype=torch.float32)
        mean = (ksize - 1) / 2
        g = torch.exp(-((axis - mean) ** 2) / (2 * sigma**2))
        kernel = g[:, None] * g[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.view(1, 1, ksize, ksize).repeat(channels, 1, 1, 1))
        self.groups = channels
        self.scale = scale
        self.step = int(1 / scale)
        if resample not in ("subsample", "bilinear"):
            raise ValueError(f"unknown resample {resample!r}")
        self.resample = resample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        out = F.conv2d(out, weight=self.weight, groups=self.groups)
        if self.resample == "bilinear":
            return F.interpolate(
                out, scale_factor=(self.scale, self.scale), mode="bilinear", align_corners=True
            )
        return out[:, :, :: self.step, :: self.step]


_CONV: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM: dict[int, type[nn.Module]] = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _weight_format(weight: torch.Tensor, channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last and weight.dim() == 4 else torch.contiguous_format
    return weight.contiguous(memory_format=fmt)


def norm_affine(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode batch norm as ``x * scale + shift``: (scale, shift), per channel."""
    scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    shift = norm.bias.double() - norm.running_mean.double() * scale
    return scale, shift


def fold_conv_norm(
    conv: nn.Module, norm: nn.Module, channels_last: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``norm(conv(x))`` (eval mode) as one convolution: its (weight, bias), computed in float64."""
    scale, shift = norm_affine(norm)
    w = conv.weight.double() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
    b = shift if conv.bias is None else shift + conv.bias.double() * scale
    dtype = conv.weight.dtype
    return _weight_format(w.to(dtype), channels_last), b.to(dtype)


def fuse_for_inference(net: nn.Module, enabled: bool, channels_last: bool = False) -> None:
    """Switch every block of ``net`` that can run faster in inference (batch norms folded into
    their convolutions, nearest upsampling merged into the next convolution) to that form, or
    back. The parameters stay as they are; the folded weights are extra, unsaved tensors."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, Fusable):
                m.fuse(enabled, channels_last)


#: Winograd F(4x4, 3x3) transforms (interpolation points 0, +-1, +-2, infinity): a 3x3
#: convolution of a 6x6 input tile gives a 4x4 output tile with 36 products instead of 144.
_WINO_BT = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
            (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))  # fmt: skip
_WINO_G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
           (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))  # fmt: skip
_WINO_AT = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))  # fmt: skip

#: A 2-D 3x3 convolution runs in Winograd form from this many input pixels and channels on
#: (below it the transforms cost more than they save).
WINOGRAD_MIN_PIXELS = 32 * 32
WINOGRAD_MIN_CHANNELS = 64
#: A 3-D 3x3x3 convolution runs in Winograd form from this many *output* channels on, at every
#: resolution: with depth taps the weights are reused over D planes, so even FV2V's 4x4 levels
#: gain (2-4x on CPU), while a narrow output (FV2V's 128 -> 32 at 64x64) leaves the input
#: transform dominant.
WINOGRAD_3D_MIN_OUT_CHANNELS = 64


@dataclass
class Winograd3x3:
    """A 3x3 (2-D) or 3x3x3 (3-D) convolution, stride 1, padding 1, in Winograd F(4x4, 3x3)
    form over H and W: 1/4 of the multiplications of the direct form, as one batched matrix
    product per tile position (and per depth tap in 3-D, where the 3 depth taps are summed
    directly over the transformed planes).

    Rounding differs from the direct convolution by a few 1e-5 relative (float32), well inside
    the conformance tolerances. ``weight`` (Cout, Cin, 3, 3[, 3]) and ``bias`` (Cout,) are the
    convolution's (already folded) parameters; the transformed weights are computed in float64.
    """

    kernel: torch.Tensor  # (taps, 36, Cin, Cout): G w G^T per depth tap and tile position
    bias: torch.Tensor  # (Cout,)
    input_transform: torch.Tensor  # (36, 36): B^T (x) B^T
    output_transform: torch.Tensor  # (16, 36): A^T (x) A^T

    @classmethod
    def of(cls, weight: torch.Tensor, bias: torch.Tensor) -> Winograd3x3:
        f64 = dict(dtype=torch.float64, device=weight.device)
        g = torch.tensor(_WINO_G, **f64)
        bt = torch.tensor(_WINO_BT, **f64)
        at = torch.tensor(_WINO_AT, **f64)
        w = weight.double() if weight.dim() == 5 else weight.double().unsqueeze(2)
        cout, cin, taps = w.shape[:3]
        u = torch.einsum("ai,ockij,bj->kabco", g, w, g).reshape(taps, 36, cin, cout)
        dtype = weight.dtype
        return cls(
            u.to(dtype).contiguous(),
            bias.to(dtype),
            torch.kron(bt, bt).to(dtype),
            torch.kron(at, at).to(dtype),
        )

    def applies(self, x: torch.Tensor) -> bool:
        h, w = x.shape[-2:]
        if x.shape[0] != 1 or h % 4 or w % 4:
            return False
        if self.kernel.shape[0] == 3:
            return x.dim() == 5 and self.kernel.shape[3] >= WINOGRAD_3D_MIN_OUT_CHANNELS
        return x.dim() == 4 and h * w >= WINOGRAD_MIN_PIXELS and x.shape[1] >= WINOGRAD_MIN_CHANNELS

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of ``x`` (1, Cin, [D,] H, W), H and W multiples of 4; channels-last
        out."""
        return self.finish(self.products(self.transform(x)), x.shape)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The input tiles of ``x`` in the Winograd domain: (36, D + 2 pad, tiles, Cin). Two
        convolutions of one input (FV2V's first hourglass block and its final conv) share it."""
        pd = self.kernel.shape[0] // 2
        c, h, w = x.shape[1], x.shape[-2], x.shape[-1]
        d = x.shape[2] if pd else 1
        th, tw = h // 4, w // 4
        xp = x.new_zeros(d + 2 * pd, h + 2, w + 2, c)  # zero padded, channels last
        xp[pd : pd + d, 1 : h + 1, 1 : w + 1] = x.view(c, d, h, w).permute(1, 2, 3, 0)
        row = (w + 2) * c
        plane = (h + 2) * row
        tiles = xp.as_strided((6, 6, d + 2 * pd, th, tw, c), (row, c, plane, 4 * row, 4 * c, 1))
        return torch.mm(self.input_transform, tiles.reshape(36, -1)).view(36, -1, th * tw, c)

    def products(
        self, v: torch.Tensor, channels: slice = slice(None), acc: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The per-position products (36, D * tiles, Cout) of transformed tiles ``v`` with the
        kernel's input ``channels``, added to ``acc`` when given."""
        taps = self.kernel.shape[0]
        d = v.shape[1] - 2 * (taps // 2)
        c = v.shape[3]
        for k in range(taps):
            a = v[:, k : k + d].reshape(36, -1, c)
            kernel = self.kernel[k, :, channels]
            acc = torch.bmm(a, kernel) if acc is None else acc.baddbmm_(a, kernel)
        assert acc is not None
        return acc

    def finish(self, m: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Products ``m`` -> the output (channels-last) of an input of ``shape``."""
        h, w = shape[-2:]
        d = shape[2] if len(shape) == 5 else 1
        cout = m.shape[2]
        y = torch.mm(self.output_transform, m.view(36, -1)).view(4, 4, d, h // 4, w // 4, cout)
        out = y.permute(2, 3, 0, 4, 1, 5).contiguous().view(d, h, w, cout).add_(self.bias)
        if len(shape) == 5:
            return out.unsqueeze(0).permute(0, 4, 1, 2, 3)
        return out.permute(0, 3, 1, 2)  # D = 1 is the batch axis


def winograd_form(
    conv: nn.Module, folded: tuple[torch.Tensor, torch.Tensor] | None
) -> Winograd3x3 | None:
    """The Winograd form of ``conv`` with its ``folded`` (weight, bias), when it is a plain 3x3
    (3x3x3) convolution, stride 1, padding 1, and folding is on; else None."""
    n = conv.weight.dim() - 2
    plain = conv.kernel_size == (3,) * n and conv.padding == (1,) * n
    if folded is None or not plain or conv.stride != (1,) * n:
        return None
    return Winograd3x3.of(*folded)


class Fusable(nn.Module):
    """A block with an optional inference form (see :func:`fuse_for_inference`)."""

    def fuse(self, enabled: bool, channels_last: bool) -> None:
        raise NotImplementedError


class ConvNormBlock(Fusable):
    """``conv`` then batch norm ``norm`` (2-D or 3-D); the norm folds into the conv."""

    def __init__(
        self, in_features: int, out_features: int, kernel_size: int, padding: int, dims: int = 2
    ) -> None:
        super().__init__()
        self.conv = _CONV[dims](in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = _NORM[dims](out_features, affine=True)
        self.folded: tuple[torch.Tensor, torch.Tensor] | None = None
        self.winograd: Winograd3x3 | None = None

    def fuse(self, enabled: bool, channels_last: bool) -> None:
        self.folded = fold_conv_norm(self.conv, self.norm, channels_last) if enabled else None
        self.winograd = winograd_form(self.conv, self.folded)

    def conv_norm(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded is None:
            return self.norm(self.conv(x))
        if self.winograd is not None and self.winograd.applies(x):
            return self.winograd(x)
        return self.conv._conv_forward(x, *self.folded)


class DownBlock2d(ConvNormBlock):
    """conv -> BN -> ReLU -> 2x2 average pooling (halves H and W)."""

    def __init__(
        self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1
    ) -> None:
        super().__init__(in_features, out_features, kernel_size, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.conv_norm(x)), kernel_size=(2, 2))


#: Row mixing of a 3-tap kernel after nearest x2 upsampling, per output phase (even, odd):
#: phase 0 reads input rows (i-1, i) with taps (w0, w1 + w2), phase 1 rows (i, i+1) with
#: (w0 + w1, w2).
_PHASE_MIX = ((( 1, 0, 0), (0, 1, 1)), ((1, 1, 0), (0, 0, 1)))  # fmt: skip


#: Below this many input pixels a block's cost is reading its weights, which the phase form
#: makes 16/9 as large: small maps keep the upsample-then-convolve form.
PHASE_MIN_PIXELS = 32 * 32


def upsampled_conv_phases(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 kernel applied after nearest x2 upsampling, as four 2x2 kernels on the input
    (one per output phase (a, b), stacked a-major): 4/9 of the multiplications."""
    mix = torch.tensor(_PHASE_MIX, dtype=weight.dtype, device=weight.device)
    return torch.cat(
        [torch.einsum("pk,oikl,ql->oipq", mix[a], weight, mix[b]) for a in (0, 1) for b in (0, 1)]
    )


class UpBlock2d(ConvNormBlock):
    """x2 upsampling -> conv -> BN -> ReLU.

    ``mode="nearest"`` (FOMM, CFTE, FV2V) or ``"bilinear"`` with ``align_corners=True`` (the
    DAC family, established against the golden data). In inference form a nearest block skips
    the upsampled image: each output phase is a 2x2 convolution of the input.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int = 3,
        padding: int = 1,
        mode: str = "nearest",
        align_corners: bool = True,
    ) -> None:
        super().__init__(in_features, out_features, kernel_size, padding)
        self.mode = mode
        self.align_corners = align_corners
        self.phases: tuple[torch.Tensor, torch.Tensor] | None = None

    def fuse(self, enabled: bool, channels_last: bool) -> None:
        super().fuse(enabled, channels_last)
        self.phases = None
        if self.folded is not None and self.mode == "nearest" and self.conv.kernel_size == (3, 3):
            w, b = self.folded
            phases = upsampled_conv_phases(w.double()).to(w.dtype)
            self.phases = (_weight_format(phases, channels_last), b.repeat(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.phases is not None and x.shape[-2] * x.shape[-1] >= PHASE_MIN_PIXELS:
            return self._phase_forward(x)
        if self.mode == "nearest":  # nearest has no align_corners in torch
            out = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            out = F.interpolate(
                x, scale_factor=2.0, mode=self.mode, align_corners=self.align_corners
            )
        return F.relu(self.conv_norm(out))

    def _phase_forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.phases is not None
        b, _, h, w = x.shape
        y = torch.relu_(F.conv2d(x, *self.phases, padding=1))  # (B, 4 * C, H + 1, W + 1)
        c = y.shape[1] // 4
        last = y.is_contiguous(memory_format=torch.channels_last)
        fmt = torch.channels_last if last else torch.contiguous_format
        out = torch.empty(b, c, 2 * h, 2 * w, dtype=y.dtype, device=y.device, memory_format=fmt)
        y = y.view(b, 4, c, h + 1, w + 1)
        for i, (pa, pb) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            out[:, :, pa::2, pb::2] = y[:, i, :, pa : pa + h, pb : pb + w]
        return out


class SameBlock2d(ConvNormBlock):
    """conv -> BN -> ReLU (or LeakyReLU 0.01) at unchanged resolution."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int = 3,
        padding: int = 1,
        lrelu: bool = False,
    ) -> None:
        super().__init__(in_features, out_features, kernel_size, padding)
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_norm(x)
        return F.leaky_relu(out, 0.01) if self.lrelu else F.relu(out)


class _ResBlock(Fusable):
    """Pre-activation residual block (2-D or 3-D by the subclass's ``dims``).

    Inference form: ``norm2`` folds into ``conv1``, ``norm1`` becomes a per-channel affine,
    activations and the residual sum run in place.
    """

    dims: int = 2

    def __init__(self, features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        conv = _CONV[self.dims]
        self.conv1 = conv(features, features, kernel_size=kernel_size, padding=padding)
        self.conv2 = conv(features, features, kernel_size=kernel_size, padding=padding)
        self.norm1 = _NORM[self.dims](features, affine=True)
        self.norm2 = _NORM[self.dims](features, affine=True)
        self.fast: tuple[torch.Tensor, ...] | None = None
        self.winograd: tuple[Winograd3x3, Winograd3x3] | None = None

    def fuse(self, enabled: bool, channels_last: bool) -> None:
        if not enabled:
            self.fast = self.winograd = None
            return
        scale, shift = norm_affine(self.norm1)
        view = (1, -1) + (1,) * self.dims
        dtype = self.conv1.weight.dtype
        self.fast = (
            scale.to(dtype).view(view),
            shift.to(dtype).view(view),
            *fold_conv_norm(self.conv1, self.norm2, channels_last),
            _weight_format(self.conv2.weight, channels_last),
            self.conv2.bias,
        )
        self.winograd = None
        if self.dims == 2 and self.conv1.kernel_size == (3, 3) and self.conv1.padding == (1, 1):
            _, _, w1, b1, w2, b2 = self.fast
            self.winograd = (Winograd3x3.of(w1, b1), Winograd3x3.of(w2, b2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast is not None:
            scale, shift, w1, b1, w2, b2 = self.fast
            out = torch.relu_(torch.addcmul(shift, x, scale))
            if self.winograd is not None and self.winograd[0].applies(x):
                conv1, conv2 = self.winograd
                return conv2(torch.relu_(conv1(out))).add_(x)
            out = torch.relu_(self.conv1._conv_forward(out, w1, b1))
            return self.conv2._conv_forward(out, w2, b2).add_(x)
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class ResBlock2d(_ResBlock):
    """Pre-activation residual block: x + conv2(relu(bn2(conv1(relu(bn1(x))))))."""


class DownBlock3d(ConvNormBlock):
    """3-D conv -> BN -> ReLU -> (1, 2, 2) average pooling (depth kept)."""

    def __init__(
        self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1
    ) -> None:
        super().__init__(in_features, out_features, kernel_size, padding, dims=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.conv_norm(x))

    def activate(self, out: torch.Tensor) -> torch.Tensor:
        """ReLU and pooling of the convolution's output ``out``."""
        out = torch.relu_(out) if self.folded is not None else F.relu(out)
        if out.is_contiguous(memory_format=torch.channels_last_3d) and not out.is_contiguous():
            return avg_pool_hw2_channels_last(out)
        return F.avg_pool3d(out, kernel_size=(1, 2, 2))


def avg_pool_hw2_channels_last(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling over H and W of a channels-last (B, C, D, H, W) tensor, kept
    channels-last (torch's ``avg_pool3d`` returns it contiguous, ~5x slower). Same sum order
    and division as torch: bit-identical."""
    b, c, d, h, w = x.shape
    v = x.permute(0, 2, 3, 4, 1).view(b, d, h // 2, 2, w // 2, 2, c)
    out = v[:, :, :, 0, :, 0] + v[:, :, :, 0, :, 1]
    out += v[:, :, :, 1, :, 0]
    out += v[:, :, :, 1, :, 1]
    return out.mul_(0.25).permute(0, 4, 1, 2, 3)


class UpBlock3d(ConvNormBlock):
    """(1, 2, 2) upsampling -> 3-D conv -> BN -> ReLU.

    FV2V's reference upsamples *trilinearly* (``align_corners`` False unless set); this was
    established against the golden data (nearest is off by ~5e-5 on the keypoints).
    """

    def __init__(
        self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1
    ) -> None:
        super().__init__(in_features, out_features, kernel_size, padding, dims=3)
        self.align_corners = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded is not None:  # torch's channels-last upsampling is ~3x faster
            x = x.contiguous(memory_format=torch.channels_last_3d)
        out = F.interpolate(
            x, scale_factor=(1.0, 2.0, 2.0), mode="trilinear", align_corners=self.align_corners
        )
        return F.relu(self.conv_norm(out))


class ResBlock3d(_ResBlock):
    """3-D version of :class:`ResBlock2d`."""

    dims = 3


def feature_width(block_expansion: int, max_features: int, level: int) -> int:
    return min(max_features, block_expansion * (2**level))


def down_block_stack(block_expansion: int, max_features: int, num_blocks: int) -> nn.ModuleList:
    """The generators' image encoder: ``num_blocks`` :class:`DownBlock2d`, widths doubling from
    ``block_expansion`` (capped at ``max_features``)."""
    return nn.ModuleList(
        DownBlock2d(
            feature_width(block_expansion, max_features, i),
            feature_width(block_expansion, max_features, i + 1),
        )
        for i in range(num_blocks)
    )


def up_block_stack(
    block_expansion: int, max_features: int, num_blocks: int, **kwargs: Any
) -> nn.ModuleList:
    """The mirror of :func:`down_block_stack`: ``num_blocks`` :class:`UpBlock2d` (``kwargs`` go
    to each block)."""
    return nn.ModuleList(
        UpBlock2d(
            feature_width(block_expansion, max_features, num_blocks - i),
            feature_width(block_expansion, max_features, num_blocks - i - 1),
            **kwargs,
        )
        for i in range(num_blocks)
    )


def res_bottleneck(features: int, num_blocks: int, prefix: str = "r") -> nn.Sequential:
    """``num_blocks`` :class:`ResBlock2d` registered as ``{prefix}0``, ``{prefix}1`` ..."""
    out = nn.Sequential()
    for i in range(num_blocks):
        out.add_module(f"{prefix}{i}", ResBlock2d(features))
    return out


def run_blocks(x: torch.Tensor, blocks: nn.ModuleList) -> torch.Tensor:
    """Apply ``blocks`` in order."""
    for block in blocks:
        x = block(x)
    return x


def apply_occlusion(
    features: torch.Tensor, occlusion: torch.Tensor | None, align_corners: bool
) -> torch.Tensor:
    """Multiply ``features`` (B,C,H,W) by the occlusion map (B,1,h,w), resized bilinearly to
    (H,W) when it differs; ``features`` unchanged when there is no map."""
    if occlusion is None:
        return features
    if occlusion.shape[2:] != features.shape[2:]:
        occlusion = F.interpolate(
            occlusion, size=features.shape[2:], mode="bilinear", align_corners=align_corners
        )
    return features * occlusion


@dataclass
class TrunkSource:
    """Key-frame (reference) encoding of the occlusion-aware trunk: ``image`` (B,3,H,W),
    ``small`` (B,3,h,w) the dense-motion network's input, ``features`` (B,C,H/4,W/4)."""

    image: torch.Tensor
    small: torch.Tensor
    features: torch.Tensor


class OcclusionAwareGenerator(nn.Module):
    """The generator FOMM, CFTE and the DAC family share: ``first`` -> ``down_blocks``
    (key-frame encoder), the family's dense motion, warp + occlusion, ``bottleneck`` ->
    ``up_blocks`` -> ``final`` -> sigmoid.

    A family sets the class attributes: its dense motion network, the trunk's upsampling,
    whether ``final`` is stored wrapped (``final.conv.*``) and the default ``align_corners``.
    Registration order (the checkpoints' key order): ``dense_motion_network``, ``first``,
    ``down_blocks``, ``up_blocks``, ``bottleneck``, ``final``.
    """

    dense_motion_class: ClassVar[type[nn.Module]]
    dense_motion_network: nn.Module
    align_corners: bool
    #: Keyword arguments the family's dense motion network takes besides the yaml's.
    dense_motion_kwargs: ClassVar[dict[str, Any]] = {}
    up_mode: ClassVar[str] = "nearest"
    wrapped_final: ClassVar[bool] = False
    default_align_corners: ClassVar[bool] = False
    #: Whether unknown generator_params are ignored (the DAC family's yamls carry extras).
    ignores_extra_params: ClassVar[bool] = False

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
        **extra: Any,
    ) -> None:
        super().__init__()
        if extra and not self.ignores_extra_params:
            raise TypeError(f"{type(self).__name__}: unknown parameters {sorted(extra)}")
        if dense_motion_params is None:
            raise ValueError(f"{type(self).__name__} needs dense_motion_params")
        self.dense_motion_network = self.dense_motion_class(
            num_kp=num_kp,
            num_channels=num_channels,
            estimate_occlusion_map=estimate_occlusion_map,
            **dense_motion_params,
            **self.dense_motion_kwargs,
        )
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=7, padding=3)
        self.down_blocks = down_block_stack(block_expansion, max_features, num_down_blocks)
        self.up_blocks = up_block_stack(
            block_expansion, max_features, num_down_blocks, mode=self.up_mode
        )
        self.bottleneck = res_bottleneck(
            feature_width(block_expansion, max_features, num_down_blocks), num_bottleneck_blocks
        )
        final = ConvOutput if self.wrapped_final else nn.Conv2d
        self.final = final(block_expansion, num_channels, kernel_size=7, padding=3)
        self.set_align_corners(self.default_align_corners)

    def set_align_corners(self, value: bool) -> None:
        self.align_corners = value
        self.dense_motion_network.align_corners = value
        for m in self.modules():
            if isinstance(m, UpBlock2d):
                m.align_corners = value

    def encode_features(self, image: torch.Tensor) -> torch.Tensor:
        """``first`` then ``down_blocks``: (B,C,H,W) -> (B,C',H/2^n,W/2^n)."""
        return run_blocks(self.first(image), self.down_blocks)

    def encode_source(self, source: torch.Tensor) -> TrunkSource:
        """Everything of the key frame the per-frame decoding reuses."""
        return TrunkSource(
            source, self.dense_motion_network.downscale(source), self.encode_features(source)
        )

    def warp_features(self, features: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
        """Backward warp by the dense motion (normalised sampling grid; CFTE: pixel flow)."""
        return warp(features, deformation, self.align_corners)

    def deform(self, features: torch.Tensor, motion: dict[str, torch.Tensor]) -> torch.Tensor:
        """Key features warped by ``motion["deformation"]`` and multiplied by its occlusion."""
        return apply_occlusion(
            self.warp_features(features, motion["deformation"]),
            motion.get("occlusion_map"),
            self.align_corners,
        )

    def decode_features(self, features: torch.Tensor) -> torch.Tensor:
        """``bottleneck`` then ``up_blocks`` (``final`` not applied)."""
        return run_blocks(self.bottleneck(features), self.up_blocks)

    def render(self, features: torch.Tensor) -> torch.Tensor:
        """Deformed features -> the predicted frame (B,3,H,W) in [0, 1]."""
        return torch.sigmoid(self.final(self.decode_features(features)))


class HourglassEncoder(nn.Module):
    """U-Net encoder: ``num_blocks`` down blocks; returns every intermediate map (input first)."""

    def __init__(
        self,
        block_expansion: int,
        in_features: int,
        num_blocks: int,
        max_features: int,
        dims: int = 2,
    ) -> None:
        super().__init__()
        block = DownBlock2d if dims == 2 else DownBlock3d
        self.down_blocks = nn.ModuleList(
            block(
                in_features if i == 0 else feature_width(block_expansion, max_features, i),
                feature_width(block_expansion, max_features, i + 1),
            )
            for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(Fusable):
    """U-Net decoder with skip concatenation; output has ``block_expansion + in_features`` channels.

    ``final_conv`` adds the conv -> BN -> ReLU that the 3-D (FV2V) hourglass applies at the end.
    """

    def __init__(
        self,
        block_expansion: int,
        in_features: int,
        num_blocks: int,
        max_features: int,
        dims: int = 2,
        final_conv: bool = False,
        up_mode: str = "nearest",
    ) -> None:
        super().__init__()
        ups: list[nn.Module] = []
        for i in reversed(range(num_blocks)):
            mult = 1 if i == num_blocks - 1 else 2
            cin, cout = (
                mult * feature_width(block_expansion, max_features, i + 1),
                feature_width(block_expansion, max_features, i),
            )
            ups.append(UpBlock2d(cin, cout, mode=up_mode) if dims == 2 else UpBlock3d(cin, cout))
        self.up_blocks = nn.ModuleList(ups)
        self.out_filters = block_expansion + in_features
        self.final_conv = final_conv
        self.folded: tuple[torch.Tensor, torch.Tensor] | None = None
        self.winograd: Winograd3x3 | None = None
        if final_conv:
            self.conv = _CONV[dims](self.out_filters, self.out_filters, kernel_size=3, padding=1)
            self.norm = _NORM[dims](self.out_filters, affine=True)

    def fuse(self, enabled: bool, channels_last: bool) -> None:
        ok = enabled and self.final_conv
        self.folded = fold_conv_norm(self.conv, self.norm, channels_last) if ok else None
        self.winograd = winograd_form(self.conv, self.folded) if ok else None

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = self.up_path(skips)
        if self.winograd is not None and self.winograd.applies(out):
            out = torch.relu_(self.winograd(out))
        elif self.folded is not None:
            out = torch.relu_(self.conv._conv_forward(out, *self.folded))
        elif self.final_conv:
            out = F.relu(self.norm(self.conv(out)))
        return out

    def up_path(self, skips: list[torch.Tensor], last_skip: bool = True) -> torch.Tensor:
        """The up blocks, each output joined with its skip (the last one only if
        ``last_skip``)."""
        skips = list(skips)
        out = skips.pop()
        for i, block in enumerate(self.up_blocks):
            out = block(out)
            if last_skip or i < len(self.up_blocks) - 1:
                out = torch.cat([out, skips.pop()], dim=1)
        return out


class Hourglass(nn.Module):
    """Encoder-decoder with skips (``encoder.down_blocks.*``, ``decoder.up_blocks.*``)."""

    def __init__(
        self,
        block_expansion: int,
        in_features: int,
        num_blocks: int = 3,
        max_features: int = 256,
        dims: int = 2,
        final_conv: bool = False,
        up_mode: str = "nearest",
    ) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(
            block_expansion, in_features, num_blocks, max_features, dims
        )
        self.decoder = HourglassDecoder(
            block_expansion, in_features, num_blocks, max_features, dims, final_conv, up_mode
        )
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.encoder.down_blocks[0]
        final = self.decoder.winograd
        if (
            isinstance(first, DownBlock3d)
            and first.winograd is not None
            and first.winograd.applies(x)
            and final is not None
            and final.applies(x)
        ):
            return self._forward_shared(x, first, first.winograd, final)
        return self.decoder(self.encoder(x))

    def _forward_shared(
        self, x: torch.Tensor, first: DownBlock3d, conv: Winograd3x3, final: Winograd3x3
    ) -> torch.Tensor:
        """Inference form of a 3-D hourglass whose first and final convolutions both run in
        Winograd form: both read ``x`` (the final one through the skip joined last), so ``x`` is
        transformed once, and the final convolution sums its two inputs' products in the
        Winograd domain instead of convolving their concatenation."""
        v = conv.transform(x)
        skips = [x, first.activate(conv.finish(conv.products(v), x.shape))]
        for block in self.encoder.down_blocks[1:]:
            skips.append(block(skips[-1]))
        up = self.decoder.up_path(skips, last_skip=False)
        split = up.shape[1]
        m = final.products(final.transform(up), slice(0, split))
        m = final.products(v, slice(split, None), m)
        return torch.relu_(final.finish(m, x.shape))


class ConvOutput(nn.Module):
    """A conv wrapped in a module (``<name>.conv.*`` keys, as the DAC family stores them)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class GDN(nn.Module):
    """Generalised divisive normalisation ``x / sqrt(beta + gamma * x^2)`` (Balle et al. 2016).

    ``beta`` and ``gamma`` are stored reparametrised as ``sqrt(value + 2^-36)`` and are bounded
    from below before squaring (beta >= 1e-6, gamma >= 0), which is what the checkpoints hold.
    """

    def __init__(
        self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1
    ) -> None:
        super().__init__()
        self.inverse = inverse
        self.pedestal = 2.0**-36
        self.beta_bound = math.sqrt(beta_min + self.pedestal)
        self.gamma_bound = math.sqrt(self.pedestal)
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels) + self.pedestal))
        self.gamma = nn.Parameter(torch.sqrt(gamma_init * torch.eye(channels) + self.pedestal))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        beta = torch.clamp(self.beta, min=self.beta_bound) ** 2 - self.pedestal
        gamma = torch.clamp(self.gamma, min=self.gamma_bound) ** 2 - self.pedestal
        norm = torch.sqrt(F.conv2d(x * x, gamma.view(c, c, 1, 1), beta))
        return x * norm if self.inverse else x / norm
