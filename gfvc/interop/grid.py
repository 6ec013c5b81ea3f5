"""The integer map between a .gfv stream and the SEI: .gfv integers <-> SEI integers.

Feature scalar j of frame t is ``acc[t, j] / qstep`` in model units. Coordinates are carried
in SEI units ``u = x * s + o`` on the 2^-P grid, matrix elements on the 2^-Q grid; P (and Q)
is the smallest precision for which one .gfv step is a whole number of SEI steps and the
offset is whole, so the map is exact both ways (docs/sei.md has the long form).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from gfvc.errors import BitstreamError, InputError
from gfvc.interop.layout import SeiLayout


def _choose_precision(
    scale: Fraction, offset: Fraction, qstep: Fraction, exact_ok: bool
) -> tuple[int, bool]:
    """Smallest P whose grid holds every .gfv step exactly, else the smallest with a >= 2."""
    if exact_ok:
        for p in range(1, 33):
            a = scale * (1 << p) / qstep
            if a.denominator == 1 and (offset * (1 << p)).denominator == 1:
                return p, True
    for p in range(1, 33):
        if scale * (1 << p) / qstep >= 2:
            return p, False
    raise InputError(
        f"qstep {float(qstep)} is too fine for the SEI precision factors (at most 2^-32)"
    )


def _round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


@dataclass
class GridMap:
    """acc (the .gfv integers) <-> SEI integers for one layout, qstep and anchor."""

    layout: SeiLayout
    qstep: Fraction
    coord_precision: int
    matrix_precision: int
    exact: bool
    base: np.ndarray | None = None  # per-scalar anchor (absolute mode), model units

    def __post_init__(self) -> None:
        self._index = self.layout.index_map()

    @classmethod
    def create(
        cls,
        layout: SeiLayout,
        qstep: float,
        base: np.ndarray | None = None,
        coord_precision: int | None = None,
        matrix_precision: int | None = None,
    ) -> GridMap:
        q = Fraction(qstep)
        exact_ok = base is None
        p = (
            coord_precision
            or _choose_precision(layout.coord_scale, layout.coord_offset, q, exact_ok)[0]
        )
        qm = matrix_precision or _choose_precision(Fraction(1), Fraction(0), q, exact_ok)[0]

        def whole(scale: Fraction, offset: Fraction, prec: int) -> bool:
            a = scale * (1 << prec) / q
            return a.denominator == 1 and (offset * (1 << prec)).denominator == 1

        exact = exact_ok
        if layout.coord_field is not None or layout.pupils is not None:
            exact = exact and whole(layout.coord_scale, layout.coord_offset, p)
        if layout.matrices:
            exact = exact and whole(Fraction(1), Fraction(0), qm)
        return cls(
            layout, q, p, qm, exact, None if base is None else np.asarray(base, dtype=np.float64)
        )

    def _to_grid(
        self, acc: np.ndarray, idx: np.ndarray, scale: Fraction, offset: Fraction, p: int
    ) -> np.ndarray:
        a = scale * (1 << p) / self.qstep
        b = offset * (1 << p)
        if self.base is None and a.denominator == 1 and b.denominator == 1:
            return acc[idx] * int(a) + int(b)
        out = np.empty(idx.shape, dtype=object)
        for pos, j in np.ndenumerate(idx):
            x = Fraction(int(acc[j])) / self.qstep
            if self.base is not None:
                x += Fraction(float(self.base[j]))
            out[pos] = _round_half_up((x * scale + offset) * (1 << p))
        return out.astype(np.int64)

    def grids(
        self, acc: np.ndarray
    ) -> tuple[np.ndarray | None, list[tuple[int, np.ndarray]], np.ndarray | None]:
        """SEI integers of one frame: coordinates (K, d), [(type, (N, H, W))], pupils (2, 2)."""
        lay = self.layout
        ci, mi, pi = self._index
        coords = None
        if lay.coord_field is not None:
            coords = self._to_grid(acc, ci, lay.coord_scale, lay.coord_offset, self.coord_precision)
        mats = [
            (s.type_idx, self._to_grid(acc, ix, Fraction(1), Fraction(0), self.matrix_precision))
            for s, ix in zip(lay.matrices, mi, strict=True)
        ]
        pupils = None
        if lay.pupils is not None:
            pupils = self._to_grid(acc, pi, lay.coord_scale, lay.coord_offset, self.coord_precision)
        return coords, mats, pupils

    def acc_from_values(
        self,
        coords: Sequence[Sequence[Fraction]] | None,
        mats: Sequence[Sequence[Fraction]] | None,
        pupils: Sequence[Sequence[Fraction]] | None,
        strict: bool,
    ) -> np.ndarray:
        """Invert: reconstructed SEI values -> the .gfv integers of one frame.

        ``strict``: every value must land exactly on the .gfv grid (our own streams in exact
        mode); otherwise the nearest integer is taken.
        """
        lay = self.layout
        ci, mi, pi = self._index
        acc = np.zeros(lay.dim, dtype=np.int64)
        filled = np.zeros(lay.dim, dtype=bool)

        def put(
            idx: np.ndarray,
            values: Sequence[Sequence[Fraction]] | Sequence[Fraction],
            scale: Fraction,
            offset: Fraction,
        ) -> None:
            flat = [v for row in values for v in (row if isinstance(row, tuple | list) else [row])]
            if len(flat) != idx.size:
                raise BitstreamError(
                    f"SEI message carries {len(flat)} values where the layout expects {idx.size}"
                )
            for j, u in zip(idx.ravel(), flat, strict=True):
                x = (Fraction(u) - offset) / scale
                if self.base is not None:
                    x -= Fraction(float(self.base[j]))
                a = x * self.qstep
                if a.denominator != 1:
                    if strict:
                        raise BitstreamError(
                            f"SEI value {float(u)} is not on the .gfv quantisation grid "
                            f"(qstep {float(self.qstep)})"
                        )
                    a = Fraction(_round_half_up(a))
                acc[j] = int(a)
                filled[j] = True

        if lay.coord_field is not None:
            if coords is None:
                raise BitstreamError(
                    "GFV message has no keypoint coordinates; the layout needs them"
                )
            put(ci, coords, lay.coord_scale, lay.coord_offset)
        if lay.matrices:
            if mats is None or len(mats) != len(lay.matrices):
                raise BitstreamError("GFV message's matrix types do not match the layout")
            for ix, vals in zip(mi, mats, strict=True):
                put(ix, vals, Fraction(1), Fraction(0))
        if lay.pupils is not None:
            if pupils is None:
                raise BitstreamError(
                    "no GFVE pupil coordinates for a layout that carries pupils there"
                )
            put(pi, pupils, lay.coord_scale, lay.coord_offset)
        if not filled.all():
            raise BitstreamError("the SEI messages leave some feature values undefined")
        return acc
