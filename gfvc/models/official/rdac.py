"""RDAC: Residual Deep Animation Codec (Konuko et al., 2023) as the updated GFVC software codes it.

RDAC = DAC's animation (same keypoint detector, same generator, 10 keypoints per frame) plus
two learned residual image coders (``sdc``: spatial, for the first inter frame; ``tdc``:
temporal, coding the difference to the previous, motion-compensated residual). Each is a
hyperprior auto-encoder (CompressAI ``EntropyBottleneck`` + ``GaussianConditional``,
variable rate through per-level channel gains) whose latents are written with rANS.

What gfvc implements: the complete checkpoint layout (strict loading; CompressAI >= 1.2.5 key
names ``matrices.N``/``biases.N``/``factors.N`` are remapped to the 1.2.4 names the official
checkpoint uses, and the data-dependent CDF buffers, empty in a training checkpoint, may have
any size), the keypoint analysis and the animation. The residual layer is **not**
implemented: it needs CompressAI's exact rANS coder and CDF tables, and gfvc's bitstream has no
place for it. ``synthesize`` therefore returns the animated frame without the residual
enhancement (RDAC's base prediction).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from gfvc.models.official.dac import (
    DacGenerator,
    DacModel,
)
from gfvc.models.registry import register_motion_model

__all__ = ["RdacGenerator", "RdacModel", "ResidualCoder", "remap_compressai_keys"]

DYNAMIC_BUFFERS = ("_offset", "_quantized_cdf", "_cdf_length", "scale_table")


class _Bound(nn.Module):
    """Holds a lower bound as buffer ``bound`` (CompressAI's ``LowerBound`` state)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.register_buffer("bound", torch.tensor([float(value)]))


class _EntropyModelState(nn.Module):
    """The buffers every CompressAI entropy model has (CDF tables, filled by ``update()``)."""

    def __init__(self, likelihood_bound: float = 1e-9) -> None:
        super().__init__()
        self.register_buffer("_offset", torch.empty(0, dtype=torch.int32))
        self.register_buffer("_quantized_cdf", torch.empty(0, dtype=torch.int32))
        self.register_buffer("_cdf_length", torch.empty(0, dtype=torch.int32))


class EntropyBottleneckState(_EntropyModelState):
    """Parameters of a factorised-prior density (Balle et al. 2018), CompressAI 1.2.4 names."""

    def __init__(
        self, channels: int, filters: tuple[int, ...] = (3, 3, 3, 3), init_scale: float = 10.0
    ) -> None:
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(filters) + 1))
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.register_parameter(
                f"_matrix{i}", nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init))
            )
            self.register_parameter(
                f"_bias{i}", nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5)
            )
            if i < len(filters):
                self.register_parameter(
                    f"_factor{i}", nn.Parameter(torch.zeros(channels, dims[i + 1], 1))
                )
        self.quantiles = nn.Parameter(
            torch.tensor([-init_scale, 0.0, init_scale]).repeat(channels, 1, 1)
        )
        target = math.log(2 / 1e-9 - 1)
        self.register_buffer("target", torch.tensor([-target, 0.0, target]))
        self.likelihood_lower_bound = _Bound(1e-9)


class GaussianConditionalState(_EntropyModelState):
    """State of a Gaussian conditional entropy model (scale table filled by ``update()``)."""

    def __init__(self, scale_bound: float = 0.11) -> None:
        super().__init__()
        self.register_buffer("scale_table", torch.empty(0))
        self.register_buffer("scale_bound", torch.tensor([scale_bound]))
        self.likelihood_lower_bound = _Bound(1e-9)
        self.lower_bound_scale = _Bound(scale_bound)


class _Conv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


class _Deconv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(
            cin, cout, k, stride=stride, padding=k // 2, output_padding=stride - 1
        )


class ResidualCoder(nn.Module):
    """Layout of RDAC's hyperprior residual coder (N = residual_features, M = 1.5 N)."""

    def __init__(
        self,
        residual_features: int = 48,
        levels: int = 7,
        num_intermediate_layers: int = 3,
        num_channels: int = 3,
        **_: Any,
    ) -> None:
        super().__init__()
        n = residual_features
        m = int(1.5 * n)
        self.gain = nn.Parameter(torch.ones(levels, m))
        self.inverse_gain = nn.Parameter(torch.ones(levels, m))
        self.hyper_gain = nn.Parameter(torch.ones(levels, n))
        self.inverse_hyper_gain = nn.Parameter(torch.ones(levels, n))
        self.g_a = nn.Module()
        self.g_a.inp = _Conv(num_channels, n, 5, 2)
        for i in range(num_intermediate_layers):
            setattr(self.g_a, f"conv_{i}", _Conv(n, n, 5, 2))
        self.g_a.out = _Conv(n, m, 5, 2)
        self.g_s = nn.Module()
        self.g_s.inp = _Deconv(m, n, 5, 2)
        for i in range(num_intermediate_layers):
            setattr(self.g_s, f"deconv_{i}", _Deconv(n, n, 5, 2))
        self.g_s.out = _Deconv(n, num_channels, 5, 2)
        self.h_a = nn.Sequential(
            _Conv(m, n, 3, 1), nn.ReLU(), _Conv(n, n, 5, 2), nn.ReLU(), _Conv(n, n, 5, 2)
        )
        self.h_s = nn.Sequential(
            _Deconv(n, m, 5, 2),
            nn.ReLU(),
            _Deconv(m, m * 3 // 2, 5, 2),
            nn.ReLU(),
            _Deconv(m * 3 // 2, 2 * m, 3, 1),
        )
        self.entropy_bottleneck = EntropyBottleneckState(n)
        self.gaussian_conditional = GaussianConditionalState()


class RdacGenerator(DacGenerator):
    """DAC generator + the spatial (``sdc``) and temporal (``tdc``) residual coders."""

    def __init__(
        self, num_channels: int, residual_coder_params: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(num_channels=num_channels, **kwargs)
        params = dict(residual_coder_params or {})
        params.pop("variable_bitrate", None)
        params.pop("scale_factor", None)
        self.sdc = ResidualCoder(num_channels=num_channels, **params)
        self.tdc = ResidualCoder(num_channels=num_channels, **params)


def remap_compressai_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CompressAI >= 1.2.5 names (``entropy_bottleneck.matrices.0``) -> 1.2.4 (``._matrix0``)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        for i in range(len(parts) - 1):
            if (
                parts[i] in ("matrices", "biases", "factors")
                and i > 0
                and parts[i - 1] == "entropy_bottleneck"
            ):
                prefix = {"matrices": "_matrix", "biases": "_bias", "factors": "_factor"}[parts[i]]
                parts = [*parts[:i], prefix + parts[i + 1], *parts[i + 2 :]]
                break
        out[".".join(parts)] = value
    return out


@register_motion_model("rdac")
class RdacModel(DacModel):
    """RDAC as a gfvc MotionModel: keypoints + animation (the residual layer is not coded).

    Everything but the generator (whose residual coder has compressai's key names) is DAC's.
    """

    model_id: ClassVar[int] = 7
    default_qstep: ClassVar[float] = 128
    family: ClassVar[str] = "rdac"
    generator_class: ClassVar[type[nn.Module]] = RdacGenerator

    def remap_state(
        self, module: str, state: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return remap_compressai_keys(state) if module == "generator" else dict(state)

    def resizable_buffer(self, module: str, key: str) -> bool:
        return module == "generator" and key.split(".")[-1] in DYNAMIC_BUFFERS
