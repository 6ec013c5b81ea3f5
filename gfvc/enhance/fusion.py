"""The fusion network of the enhancement layer: animated key frame + low-resolution base.

The base layer (a low-resolution conventional video, ``base_layer``) carries what is really
in the frame at low detail: where the eyes and mouth are, how open, the background, the
lighting. The animated key frame (the landmark model's mesh warp) carries the person's sharp
texture but can be wrong in expression and moves nothing but the face. A fixed
low/high-frequency split of the two scores no better than the upscaled base (issue 13), so
a small network decides per pixel: it starts from the upscaled base and adds what the
animated key frame can contribute where the two agree.

    out = base_up + alpha * (warped - base_up) + residual

``alpha`` (sigmoid, starting near 0) and ``residual`` come from a U-Net over
[base_up, warped] at half resolution and below, and a light full-resolution head. Networks
built with ``guide`` channels also see the motion model's hints on where the warp is least
to be trusted (the landmark model's ``fusion_guide``: eye and mouth openings it had to
change). Nothing the
decoder computes here feeds back into prediction, so float differences between machines
cannot accumulate.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gfvc.models.landmark import DSConv, DSRes

IN_CHANNELS = 6  # upscaled base RGB, warped key RGB


class Fuser(nn.Module):
    """(B, 3, H, W) base_up and warped in [0, 1] (and (B, ``guide``, H, W) hints) -> fused
    frame in [0, 1]; H, W multiples of 16."""

    def __init__(self, width: int = 16, guide: int = 0) -> None:
        super().__init__()
        self.guide = guide
        cin = IN_CHANNELS + guide
        w = [width, width * 2, width * 3, width * 4]
        self.stem = nn.Sequential(nn.Conv2d(cin, w[0], 3, 2, 1), nn.LeakyReLU(0.1, inplace=True))
        self.down = nn.ModuleList(
            nn.Sequential(DSConv(w[i], w[i + 1], stride=2), DSRes(w[i + 1])) for i in range(3)
        )
        self.mid = DSRes(w[3])
        self.up = nn.ModuleList(
            nn.Sequential(DSConv(w[i + 1] + w[i], w[i]), DSRes(w[i])) for i in (2, 1, 0)
        )
        self.full = DSConv(w[0] + cin, 16)
        self.head = nn.Conv2d(16, 4, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, base_up: torch.Tensor, warped: torch.Tensor, guide: torch.Tensor | None = None
    ) -> torch.Tensor:
        if (guide is None) != (self.guide == 0):
            raise ValueError(f"this fusion network takes {self.guide} guide channels")
        x = torch.cat([base_up, warped] if guide is None else [base_up, warped, guide], 1)
        fmt = (
            torch.channels_last
            if base_up.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format
        )
        x = x.contiguous(memory_format=fmt)
        skips = [self.stem(x)]
        for d in self.down:
            skips.append(d(skips[-1]))
        y = self.mid(skips.pop())
        for u in self.up:
            s = skips.pop()
            y = F.interpolate(y, size=s.shape[-2:], mode="bilinear", align_corners=False)
            y = u(torch.cat([y, s], 1).contiguous(memory_format=fmt))
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        out = self.head(self.full(torch.cat([y, x], 1).contiguous(memory_format=fmt)))
        alpha = torch.sigmoid(out[:, 3:4] - 3.0)
        fused = base_up + alpha * (warped - base_up) + 0.5 * F.hardtanh(out[:, :3])
        return fused.clamp(0, 1)


#: ``take_regions``: the openings' masks are grown by this many pixels (the lids and lips
#: around them) and feathered with this Gaussian sigma.
REGION_GROW = 3
REGION_FEATHER = 2.0


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, H, W), edges replicated."""
    r = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


#: ``add_detail``: the face hull is eroded by ``DETAIL_ERODE`` px (at its outline the warp's
#: geometry is least sure), the eye and mouth openings are grown by ``DETAIL_OPENINGS_GROW``
#: px (lids and lips keep the fused picture) and cut out, the mask is feathered with sigma
#: ``DETAIL_FEATHER``, and "detail" is what a Gaussian of sigma ``DETAIL_SIGMA`` removes.
DETAIL_ERODE = 6
DETAIL_OPENINGS_GROW = 8
DETAIL_FEATHER = 4.0
DETAIL_SIGMA = 2.0


def _square(r: int) -> np.ndarray:
    return np.ones((2 * r + 1, 2 * r + 1), np.uint8)


def detail_mask(hull: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: where ``add_detail`` takes the warp's detail. The face's
    skin, hair line and brows: ``hull`` ((H, W), 1 inside the face) eroded by a square
    (outside the picture counts as outside the face), less the openings of ``masks`` ((3, H,
    W), above 0.3) grown by a square, then a Gaussian (OpenCV's kernel for the sigma,
    borders reflected)."""
    import cv2

    skin = cv2.erode(
        (hull > 0.5).astype(np.uint8),
        _square(DETAIL_ERODE),
        borderType=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    openings = cv2.dilate((masks.max(0) > 0.3).astype(np.uint8), _square(DETAIL_OPENINGS_GROW))
    return cv2.GaussianBlur((skin * (1 - openings)).astype(np.float32), (0, 0), DETAIL_FEATHER)


def _hwc(t: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) tensor -> (H, W, C) float32 array (no copy for channels_last)."""
    return np.ascontiguousarray(t[0].permute(1, 2, 0).numpy(), dtype=np.float32)


def add_detail(
    fused: torch.Tensor,
    warped: torch.Tensor,
    masks: torch.Tensor,
    hull: torch.Tensor,
    weight: float,
) -> torch.Tensor:
    """``fused`` ((1, 3, H, W) in [0, 1]) with its fine detail (what a Gaussian of
    ``DETAIL_SIGMA`` removes) replaced by the ``warped`` picture's inside ``detail_mask``
    of ``hull`` ((1, 1, H, W)) and ``masks`` ((1, 3, H, W)), by ``weight``.

    The network, trained for L1 and SSIM, keeps the base's soft texture on the skin where the
    warp has the person's: on four training people's clips at 12 kbps identity distance
    0.265 -> 0.255 with MS-SSIM, landmark distance and eye error within 0.004 and mouth
    error better (docs/enhance.md, session 17). Only the fine detail moves, so where the
    warp's geometry is off by a few pixels the fused picture's shapes stay. In OpenCV on
    (H, W, 3) arrays: 2 ms a frame at 256x256, where the same in torch convolutions took 17."""
    import cv2

    h = hull[0, 0].numpy()
    if weight == 0 or not (h > 0.5).any():
        return fused
    f, w = _hwc(fused), _hwc(warped)
    m = detail_mask(h, masks[0].numpy()) * np.float32(weight)
    blur = (0, 0), DETAIL_SIGMA
    d = (w - cv2.GaussianBlur(w, *blur)) - (f - cv2.GaussianBlur(f, *blur))
    out = np.clip(f + m[..., None] * d, 0.0, 1.0)
    return torch.from_numpy(out).permute(2, 0, 1)[None]


def take_regions(
    fused: torch.Tensor, base_up: torch.Tensor, masks: torch.Tensor, weight: float
) -> torch.Tensor:
    """``fused`` with the driving eye and mouth openings (``masks``: (B, 3, H, W) in [0, 1],
    the landmark model's ``region_masks``, grown by ``REGION_GROW`` px and feathered) taken
    from the upscaled base by ``weight``.

    There the warp's opening is the key frame's texture stretched or squeezed, and the
    network, trained on whole frames, keeps too much of it: vr_1's eyes at 16 kbps stayed
    nearly shut while the camera's and the base's were open. On the five ctc clips at 16
    kbps: eye error 0.030 -> 0.027, mouth error 0.024 -> 0.020, identity 0.287 -> 0.296
    (docs/enhance.md, session 15)."""
    m = (masks.amax(1, keepdim=True) > 0.3).to(fused.dtype)
    rows, cols = m.amax((0, 1, 3)).nonzero(), m.amax((0, 1, 2)).nonzero()
    if not len(rows):
        return fused
    # only the openings' box (grown by what dilation and blur reach) changes
    reach, (h, w) = REGION_GROW + int(3 * REGION_FEATHER + 0.5) + 1, m.shape[-2:]
    y0, y1 = max(int(rows[0]) - reach, 0), min(int(rows[-1]) + reach + 1, h)
    x0, x1 = max(int(cols[0]) - reach, 0), min(int(cols[-1]) + reach + 1, w)
    g = REGION_GROW
    box = F.pad(m[..., y0:y1, x0:x1], (g, g, g, g))  # outside the box: no opening
    box = F.max_pool2d(box, 2 * g + 1, stride=1)
    box = _gaussian_blur(box, REGION_FEATHER) * weight
    out = fused.clone()
    f = fused[..., y0:y1, x0:x1]
    out[..., y0:y1, x0:x1] = f + box * (base_up[..., y0:y1, x0:x1] - f)
    return out


def widen_from(net: Fuser, state: dict[str, torch.Tensor]) -> None:
    """Load a network without guide channels into ``net`` (which has them) so that it
    computes exactly what the old one did: the new inputs' weights in the stem and in the
    full-resolution head's pointwise conv start at zero (the head's depthwise filters for
    them keep their random start, or no gradient would ever reach either)."""
    own = net.state_dict()
    for name, old in state.items():
        new = own[name]
        if new.shape == old.shape:
            new.copy_(old)
            continue
        lead = tuple(slice(0, n) for n in old.shape)
        if name != "full.dw.weight":
            new.zero_()
        new[lead] = old
    net.load_state_dict(own)
