"""The reference bank: decoded key frames kept identically by encoder and decoder.

Every key unit of a version-4 stream fills a numbered slot; a *recall* unit switches back to
a slot's reference (a person seen before the cut, an expression the bank already holds) for
the cost of a feature, not a new picture. The encoder chooses the slots (least recently used);
the key unit says which, with a 16-bit tag (a key counter), so a receiver that missed a key
unit notices that its slot holds another reference instead of animating the wrong face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gfvc.bitstream import BANK_SLOTS
from gfvc.errors import BitstreamError
from gfvc.features.quant import ClosedLoopPredictor


@dataclass
class Reference:
    """One bank entry: what animating from it needs, on either side."""

    tag: int
    key_frame: np.ndarray | None  # decoded key picture (None: the encoder cannot render it)
    key_feature: np.ndarray
    start: ClosedLoopPredictor  # the predictor as the key unit left it (copied on use)
    side: bytes  # the model's key side information
    brightness: float | None = None  # encoder: that of the camera frame it was coded from

    def __post_init__(self) -> None:
        self.start = self.predictor()  # a snapshot: the live predictor moves on

    def predictor(self) -> ClosedLoopPredictor:
        """A fresh predictor starting from this reference's key feature."""
        return ClosedLoopPredictor(self.start.qstep, self.start.base, self.start.acc)


class ReferenceBank:
    """Slot number -> ``Reference``, plus the encoder's least-recently-used order."""

    def __init__(self, slots: int = BANK_SLOTS) -> None:
        self.slots = slots
        self._refs: dict[int, Reference] = {}
        self._order: list[int] = []  # least recently used first
        self.next_tag = 0

    def items(self) -> list[tuple[int, Reference]]:
        return sorted(self._refs.items())

    def slot_for_key(self, reset: bool) -> int:
        """Encoder: the slot a new key frame fills (0 after a reset, else an empty slot or
        the least recently used one)."""
        if reset:
            return 0
        free = [s for s in range(self.slots) if s not in self._refs]
        return free[0] if free else self._order[0]

    def store(self, slot: int, ref: Reference, reset: bool) -> None:
        if reset:
            self._refs.clear()
            self._order.clear()
        self._refs[slot] = ref
        self.touch(slot)
        self.next_tag = (ref.tag + 1) & 0xFFFF

    def touch(self, slot: int) -> None:
        if slot in self._order:
            self._order.remove(slot)
        self._order.append(slot)

    def get(self, slot: int, tag: int) -> Reference:
        """The reference a recall names, or BitstreamError when this side does not hold it
        (decoding started after it was sent, or its key unit was lost)."""
        ref = self._refs.get(slot)
        if ref is None or ref.tag != tag:
            raise BitstreamError(
                f"recall of reference {tag} (slot {slot}), which this decoder does not hold: "
                "its key unit was lost or came before the entry point; wait for a key frame"
            )
        return ref
