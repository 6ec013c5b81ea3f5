"""Bit-rate accounting: every bit of the stream, split by what it carries.

The reference software counted only the first key frame plus per-frame feature files and
ignored metadata and later key frames; here the caller passes every key frame's bits and the
container overhead explicitly, so nothing can be left out silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from gfvc.errors import InputError


@dataclass(frozen=True)
class RateReport:
    """Bits of one coded sequence and the resulting rates (kbps = bits / frames * fps / 1000)."""

    num_frames: int
    fps: float
    key_frame_bits: int
    feature_bits: int
    overhead_bits: int
    num_key_frames: int

    @property
    def total_bits(self) -> int:
        return self.key_frame_bits + self.feature_bits + self.overhead_bits

    def _kbps(self, bits: int) -> float:
        return bits / self.num_frames * self.fps / 1000.0

    @property
    def kbps(self) -> float:
        return self._kbps(self.total_bits)

    @property
    def key_frame_kbps(self) -> float:
        return self._kbps(self.key_frame_bits)

    @property
    def feature_kbps(self) -> float:
        return self._kbps(self.feature_bits)

    @property
    def overhead_kbps(self) -> float:
        return self._kbps(self.overhead_bits)

    def as_dict(self) -> dict[str, float | int]:
        """Plain JSON-able data including the derived totals and rates."""
        out: dict[str, float | int] = asdict(self)
        out.update(
            total_bits=self.total_bits,
            kbps=self.kbps,
            key_frame_kbps=self.key_frame_kbps,
            feature_kbps=self.feature_kbps,
            overhead_kbps=self.overhead_kbps,
        )
        return out


def _bits(value: int | Iterable[int], what: str) -> tuple[int, int]:
    """(sum, count) of a bit count or an iterable of per-item bit counts, all >= 0 integers."""
    items = [value] if isinstance(value, int) else list(value)
    for v in items:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise InputError(f"{what} must be non-negative integers, got {v!r}")
    return sum(items), len(items)


def rate_report(
    key_frame_bits: int | Iterable[int],
    feature_bits: int | Iterable[int],
    overhead_bits: int | Iterable[int] = 0,
    *,
    num_frames: int,
    fps: float,
) -> RateReport:
    """Build a ``RateReport``; ``key_frame_bits`` may list one count per key frame (all counted)."""
    if not isinstance(num_frames, int) or num_frames <= 0:
        raise InputError(f"num_frames must be a positive integer, got {num_frames!r}")
    if not fps > 0:
        raise InputError(f"fps must be positive, got {fps!r}")
    key, n_key = _bits(key_frame_bits, "key_frame_bits")
    feat, _ = _bits(feature_bits, "feature_bits")
    over, _ = _bits(overhead_bits, "overhead_bits")
    if n_key > num_frames:
        raise InputError(f"{n_key} key frames given for a {num_frames}-frame sequence")
    return RateReport(num_frames, float(fps), key, feat, over, n_key)


def kbps(total_bits: int, num_frames: int, fps: float) -> float:
    """kbps of ``total_bits`` spread over ``num_frames`` frames at ``fps``."""
    if num_frames <= 0 or not fps > 0:
        raise InputError(f"need num_frames > 0 and fps > 0, got {num_frames} and {fps}")
    return total_bits / num_frames * fps / 1000.0
