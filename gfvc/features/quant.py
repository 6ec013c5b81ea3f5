"""Closed-loop prediction and uniform scalar quantization of feature vectors.

Reference semantics (GFVC software, ``gfvc_software_inventory.md`` §1.4): each inter-frame
feature f_t is coded as the residual against the previous *reconstructed* feature,
q_t = round((f_t - f^_{t-1}) * qstep) (round half to even, no dead zone), and
f^_t = f^_{t-1} + q_t / qstep.

We keep the reconstruction as ``base + acc / qstep`` with an integer accumulator ``acc``.
The integers are what encoder and decoder must agree on bit for bit; they never drift,
because no float is carried from frame to frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def quantize(values: np.ndarray, qstep: float) -> np.ndarray:
    """round(values * qstep) to int64, half to even (Python's ``round``, as the reference)."""
    return np.rint(np.asarray(values, dtype=np.float64) * qstep).astype(np.int64)


def dequantize(ints: np.ndarray, qstep: float) -> np.ndarray:
    return np.asarray(ints, dtype=np.float64) / qstep


@dataclass
class ClosedLoopPredictor:
    """Previous-frame predictor shared by encoder and decoder.

    ``base`` is the float part every reconstruction starts from (the re-derived key-frame
    feature, or zeros when the key feature travels as integers) and ``acc`` the integer
    part, so the reconstruction is ``base + acc / qstep``.
    """

    qstep: float
    base: np.ndarray
    acc: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.base = np.asarray(self.base, dtype=np.float64).copy()
        if self.acc is None:
            self.acc = np.zeros(self.base.shape, dtype=np.int64)
        self.acc = np.asarray(self.acc, dtype=np.int64).copy()

    @classmethod
    def from_ints(cls, key_ints: np.ndarray, qstep: float) -> ClosedLoopPredictor:
        """Start from a key feature sent as integers on the quantization grid."""
        key_ints = np.asarray(key_ints, dtype=np.int64)
        return cls(qstep, np.zeros(key_ints.shape), key_ints)

    @classmethod
    def from_float(cls, key_feature: np.ndarray, qstep: float) -> ClosedLoopPredictor:
        """Start from a key feature both sides re-derive from the decoded key frame."""
        return cls(qstep, key_feature)

    @property
    def reconstruction(self) -> np.ndarray:
        return self.base + dequantize(self.acc, self.qstep)

    def residual(self, feature: np.ndarray, deadzone: float = 0.5) -> np.ndarray:
        """Encoder: integer residual of ``feature`` against the current reconstruction.

        ``deadzone`` (in steps, 0.5 = plain rounding) keeps a value where it is until it has
        moved more than that: landmark jitter then costs no bits. An encoder-only choice; the
        decoder just adds what it receives."""
        d = (np.asarray(feature, dtype=np.float64) - self.reconstruction) * self.qstep
        q = np.rint(d).astype(np.int64)
        return np.where(np.abs(d) <= deadzone, 0, q) if deadzone > 0.5 else q

    def peek(self, q: np.ndarray) -> np.ndarray:
        """The reconstruction ``update(q)`` would give, without changing the state."""
        return self.base + dequantize(self.acc + np.asarray(q, dtype=np.int64), self.qstep)

    def update(self, q: np.ndarray) -> np.ndarray:
        """Both sides: add a decoded residual; returns the new reconstruction."""
        self.acc = self.acc + np.asarray(q, dtype=np.int64)
        return self.reconstruction
