"""Reproductions of the official GFVC models (FOMM, CFTE, FV2V, DAC, HDAC, RDAC).

One module per family (what makes that family different) over what they all share:

* ``base``: :class:`OfficialModel` (configs, checkpoint loading, frame <-> tensor conversion
  with the reference memory layouts, the key-frame cache, fast inference set-up);
* ``layers``: the trunk building blocks (hourglass, down/up blocks, the occlusion-aware
  generator trunk, keypoint heads, dense-motion blending);
* ``geometry``: coordinate grids, keypoint <-> heatmap conversions, warps;
* ``checkpoint``: safe, strict loading of the official ``.pth.tar`` files;
* ``conformance``: the check against the reference outputs of ``shared/reference/golden``.

Importing this package registers the six families in :mod:`gfvc.models.registry`.
"""

from gfvc.models.official import cfte, dac, fomm, fv2v, hdac, rdac  # noqa: F401  (registers)
from gfvc.models.official.base import OfficialModel

__all__ = ["OfficialModel"]
