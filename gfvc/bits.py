"""Bit-level reading and writing: fixed-width, Exp-Golomb and Rice codes.

Shared by the exp-Golomb feature coder, the .gfv segment tables and the SEI syntax, so every
variable-length code in the package is written and parsed in one place. Bits are MSB first.
"""

from __future__ import annotations

from gfvc.errors import BitstreamError


def zigzag(v: int) -> int:
    """Signed -> unsigned as the GFVC reference maps it: 0, 1, -1, 2, -2 -> 0, 1, 2, 3, 4."""
    return 2 * v - 1 if v > 0 else -2 * v


def unzigzag(n: int) -> int:
    return (n + 1) // 2 if n & 1 else -(n // 2)


class BitWriter:
    """Append bits MSB first; ``getvalue`` pads the last byte with zero bits."""

    def __init__(self) -> None:
        self._bytes = bytearray()
        self._acc = 0
        self._nbits = 0

    def __len__(self) -> int:
        """Number of bits written so far."""
        return len(self._bytes) * 8 + self._nbits

    def u(self, value: int, n: int) -> None:
        """Unsigned fixed width ``u(n)``."""
        if n == 0:
            return
        if value < 0 or value >> n:
            raise ValueError(f"{value} does not fit in {n} bits")
        self._acc = (self._acc << n) | value
        self._nbits += n
        while self._nbits >= 8:
            self._nbits -= 8
            self._bytes.append((self._acc >> self._nbits) & 0xFF)
        self._acc &= (1 << self._nbits) - 1

    def ue(self, value: int) -> None:
        """Order-0 Exp-Golomb ``ue(v)``: (len-1) zeros then value+1 in binary."""
        if value < 0:
            raise ValueError("ue(v) needs a non-negative value")
        v = value + 1
        n = v.bit_length()
        self.u(0, n - 1)
        self.u(v, n)

    def se(self, value: int) -> None:
        """Signed Exp-Golomb with the reference's zigzag mapping."""
        self.ue(zigzag(value))

    def rice(self, value: int, k: int) -> None:
        """Golomb-Rice code: quotient in unary (ones then a zero), then k low bits."""
        q = value >> k
        for _ in range(q):
            self.u(1, 1)
        self.u(0, 1)
        self.u(value & ((1 << k) - 1), k)

    def align(self) -> None:
        """Pad with zero bits to the next byte boundary."""
        if self._nbits:
            self.u(0, 8 - self._nbits)

    def getvalue(self) -> bytes:
        out = bytearray(self._bytes)
        if self._nbits:
            out.append((self._acc << (8 - self._nbits)) & 0xFF)
        return bytes(out)


class BitReader:
    """Read bits MSB first; reading past the end raises ``BitstreamError``."""

    def __init__(self, data: bytes, what: str = "data") -> None:
        self._data = data
        self._pos = 0  # in bits
        self._what = what

    @property
    def pos(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) * 8 - self._pos

    def _need(self, n: int) -> None:
        if n > self.remaining:
            raise BitstreamError(
                f"truncated {self._what}: needed {n} more bits, {self.remaining} left"
            )

    def u(self, n: int) -> int:
        if n == 0:
            return 0
        self._need(n)
        v = 0
        for _ in range(n):
            byte = self._data[self._pos >> 3]
            v = (v << 1) | ((byte >> (7 - (self._pos & 7))) & 1)
            self._pos += 1
        return v

    def ue(self, max_bits: int = 32) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > max_bits:
                raise BitstreamError(
                    f"invalid Exp-Golomb code in {self._what} (over {max_bits} leading zeros)"
                )
        return ((1 << zeros) | self.u(zeros)) - 1

    def se(self) -> int:
        return unzigzag(self.ue())

    def rice(self, k: int, max_quotient: int = 1 << 16) -> int:
        q = 0
        while self.u(1):
            q += 1
            if q > max_quotient:
                raise BitstreamError(f"invalid Rice code in {self._what}")
        return (q << k) | self.u(k)

    def align(self) -> None:
        self._pos = (self._pos + 7) & ~7

    def byte_pos(self) -> int:
        """Current position in whole bytes (after ``align``)."""
        return (self._pos + 7) >> 3
