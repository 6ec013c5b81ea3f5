"""gfvc: Generative Face Video Coding.

A talking-face video is coded as one key frame (a conventional intra picture) plus, for every
later frame, a compact motion feature; the decoder animates the key frame with a generative
model. See README.md for the command line and docs/ for the bitstream and metric definitions.
"""

__version__ = "0.1.0"

#: The model `gfvc encode` and `gfvc demo` use when none is named.
DEFAULT_MODEL = "landmark"

__all__ = ["DEFAULT_MODEL", "__version__"]
