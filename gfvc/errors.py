"""One exception tree for the whole package.

Library code raises these with a message written for the user (what is wrong, what to do);
the CLI prints the message on one line and exits non-zero. Each class also inherits the
matching builtin so callers can catch either family.
"""

from __future__ import annotations


class GfvcError(Exception):
    """Root of every error gfvc raises on purpose."""


class InputError(GfvcError, ValueError):
    """An input file or argument cannot be used (missing, not a video, wrong size ...)."""


class NoFaceError(InputError):
    """No face was found where one is needed."""


class BitstreamError(GfvcError, ValueError):
    """A .gfv file or unit is corrupt, truncated or from an unsupported version."""


class CheckpointError(GfvcError, ValueError):
    """A checkpoint or model configuration cannot be loaded."""


class UnknownNameError(GfvcError, KeyError):
    """A model, codec or option name is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BackendUnavailableError(GfvcError, RuntimeError):
    """An optional external tool or weight file is not installed."""


class OutputError(GfvcError, OSError):
    """An output path cannot be written."""
