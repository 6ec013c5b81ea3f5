"""HDAC: Hybrid Deep Animation Codec (Konuko et al., 2023) as the updated GFVC software codes it.

HDAC is DAC plus a *base layer*: a conventional low-quality, low-rate video (HEVC/VVC at a
high QP in the reference) of the whole sequence. Per inter frame the generator fuses the
DAC-warped key-frame features with features of that frame's base-layer picture:
``[deformed reference features, base features] -> 6 residual blocks at 2x width -> 3x3 conv
back to 1x width -> decoder``. The transmitted motion feature is DAC's (10 keypoints).

gfvc's bitstream does not carry a base layer, so :meth:`HdacModel.synthesize` needs one to be
given through :meth:`HdacModel.set_base_layer` before each call (a codec that sends a base
layer does this); without it the model refuses instead of producing a wrong picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from gfvc.errors import InputError
from gfvc.models.official.base import tensor_to_frame
from gfvc.models.official.dac import (
    DacGenerator,
    DacModel,
)
from gfvc.models.official.layers import (
    AntiAliasInterpolation2d,
    ResBlock2d,
    SameBlock2d,
    down_block_stack,
    feature_width,
    run_blocks,
)
from gfvc.models.registry import register_motion_model

__all__ = ["HdacGenerator", "HdacModel", "HdacOutputs"]


class HdacGenerator(DacGenerator):
    """DAC generator + base-layer encoder and a fusion bottleneck (see module docstring)."""

    def __init__(
        self,
        num_channels: int,
        block_expansion: int,
        max_features: int,
        num_down_blocks: int,
        num_bottleneck_blocks: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            num_channels=num_channels,
            block_expansion=block_expansion,
            max_features=max_features,
            num_down_blocks=num_down_blocks,
            num_bottleneck_blocks=0,  # HDAC's bottleneck is the fusion one below
            **kwargs,
        )
        # Registration order defines the state_dict order: rebuild the tail in HDAC's order.
        up_blocks, final = self.up_blocks, self.final
        del self.up_blocks, self.final, self.bottleneck
        width = feature_width(block_expansion, max_features, num_down_blocks)
        self.base = SameBlock2d(num_channels, block_expansion, kernel_size=7, padding=3)
        self.base_down_blocks = down_block_stack(block_expansion, max_features, num_down_blocks)
        self.main_bottleneck = nn.Sequential(
            *(ResBlock2d(2 * width) for _ in range(num_bottleneck_blocks))
        )
        self.bt_output_layer = SameBlock2d(2 * width, width, kernel_size=3, padding=1)
        self.up_blocks = up_blocks
        self.final = final

    def encode_base(self, base_layer: torch.Tensor) -> torch.Tensor:
        return run_blocks(self.base(base_layer), self.base_down_blocks)

    def render(self, features: torch.Tensor) -> torch.Tensor:
        out = self.bt_output_layer(self.main_bottleneck(features))
        return torch.sigmoid(self.final(run_blocks(out, self.up_blocks)))

    def predict_encoded(
        self,
        src: Any,
        kp_reference: torch.Tensor,
        kp_target: torch.Tensor,
        base_layer: torch.Tensor,
    ) -> HdacOutputs:
        feats, motion = self.deform_source(src, kp_reference, kp_target)
        bt_input = torch.cat([feats, self.encode_base(base_layer)], dim=1)
        return HdacOutputs(self.render(bt_input), motion, bt_input)

    def predict(
        self,
        reference: torch.Tensor,
        kp_reference: torch.Tensor,
        kp_target: torch.Tensor,
        base_layer: torch.Tensor,
    ) -> torch.Tensor:
        return self.predict_encoded(
            self.encode_source(reference), kp_reference, kp_target, base_layer
        ).prediction

    def forward(
        self,
        reference: torch.Tensor,
        kp_reference: torch.Tensor,
        kp_target: torch.Tensor,
        base_layer: torch.Tensor,
    ) -> torch.Tensor:  # type: ignore[override]
        return self.predict(reference, kp_reference, kp_target, base_layer)


@dataclass
class HdacOutputs:
    """``prediction`` (B,3,H,W); ``motion`` (see :class:`gfvc.models.official.dac.DacOutputs`);
    ``bottleneck_input`` (B,2C,H/4,W/4): deformed reference features then base features."""

    prediction: torch.Tensor
    motion: dict[str, torch.Tensor]
    bottleneck_input: torch.Tensor


@register_motion_model("hdac")
class HdacModel(DacModel):
    """HDAC as a gfvc MotionModel (feature: 10 keypoints = 20 scalars; needs a base layer)."""

    model_id: ClassVar[int] = 6
    family: ClassVar[str] = "hdac"
    generator_class: ClassVar[type[nn.Module]] = HdacGenerator

    def build_networks(self, params: dict[str, Any]) -> dict[str, nn.Module]:
        nets = super().build_networks(params)
        for net in nets.values():  # HDAC's image down-scaler resizes bilinearly after the blur
            for m in net.modules():
                if isinstance(m, AntiAliasInterpolation2d):
                    m.resample = "bilinear"
        self._base_layer: np.ndarray | None = None
        return nets

    def set_base_layer(self, frame: np.ndarray | None) -> None:
        """The decoded base-layer picture (H, W, 3) uint8 of the frame synthesised next."""
        self._base_layer = None if frame is None else np.ascontiguousarray(frame)

    def synthesize_tensor(  # type: ignore[override]
        self,
        key_frame: np.ndarray,
        kp_key: torch.Tensor,
        kp_current: torch.Tensor,
        base_layer: np.ndarray,
    ) -> HdacOutputs:
        src = self.key_encoding(key_frame)
        base = self.frame_tensor(base_layer, "contiguous")
        with torch.inference_mode():
            return self.nets["generator"].predict_encoded(src, kp_key, kp_current, base)

    def synthesize(
        self, key_frame: np.ndarray, key_feature: np.ndarray, feature: np.ndarray
    ) -> np.ndarray:
        if self._base_layer is None:
            raise InputError(
                "HDAC needs the frame's base-layer picture: call set_base_layer(frame) before synthesize"
            )
        out = self.synthesize_tensor(
            key_frame, self.from_vector(key_feature), self.from_vector(feature), self._base_layer
        )
        return tensor_to_frame(out.prediction, self.options.rounding)
