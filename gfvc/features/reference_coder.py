"""The GFVC reference software's per-frame feature coder, reimplemented bit-exactly.

Why it exists: the official GFVC encoders (FOMM/CFTE/FV2V in the v1 common software, DAC/HDAC/
RDAC in the updated one) write one small file per inter frame. To show that gfvc reproduces
them, and to read such files, we need the identical byte-level scheme. It is *not* gfvc's own
feature coder (that lives elsewhere in ``gfvc.features``); this module only serves conformance
and interoperability.

The scheme (inventory section 1.4):

1. closed-loop DPCM: ``r[t] = round((f[t] - rec[t-1]) * Q)`` (round half to even, float64),
   ``rec[t] = rec[t-1] + r[t] / Q`` (float64); ``rec[0]`` is the key frame's own analysis;
2. signed -> unsigned map: ``v <= 0 -> -2v``, ``v > 0 -> 2v - 1`` (0, 1, -1, 2, -2 -> 0, 1, 2, 3, 4);
3. order-0 Exp-Golomb binarisation of every value (``floor(log2(n+1))`` zeros, then the binary
   digits of ``n+1``), all codes concatenated behind a single leading ``1`` marker bit;
4. every bit coded with a 256-bit-state integer arithmetic coder (the classic "reference
   arithmetic coding" design: low/high registers, E1/E2 shifts, E3 underflow counting) and an
   adaptive order-0 context model over the alphabet {0, 1, EOF=2}: a symbol that has not been
   seen yet is coded as the escape symbol (= EOF symbol, 2) of the adaptive table followed by the
   symbol in a flat 3-symbol table; the end is marked by coding the EOF symbol the same way;
5. ``finish`` writes one ``1`` bit and the output is padded with ``0`` bits to whole bytes.

The model and coder are fresh for every frame (no context is carried between frames).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ArithmeticDecoder",
    "ArithmeticEncoder",
    "DpcmResult",
    "decode_frame",
    "encode_frame",
    "expgolomb_bits",
    "reference_dpcm_loop",
    "signed_to_unsigned",
    "unsigned_to_signed",
]

STATE_BITS = 256
ESCAPE = 2  # also the end-of-frame symbol
NUM_SYMBOLS = 3


# --------------------------------------------------------------------------- value mapping
def signed_to_unsigned(v: int) -> int:
    """0, 1, -1, 2, -2 ... -> 0, 1, 2, 3, 4 ... (the reference's mapping, not zig-zag)."""
    v = int(v)
    return -2 * v if v <= 0 else 2 * v - 1


def unsigned_to_signed(n: int) -> int:
    """Inverse of :func:`signed_to_unsigned`."""
    n = int(n)
    if n < 0:
        raise ValueError("negative code number")
    return (n + 1) // 2 if n % 2 == 1 else -(n // 2)


def expgolomb_bits(n: int) -> str:
    """Order-0 Exp-Golomb code of a non-negative integer as a '0'/'1' string."""
    if n < 0:
        raise ValueError("Exp-Golomb codes non-negative integers only")
    body = bin(n + 1)[2:]
    return "0" * (len(body) - 1) + body


# --------------------------------------------------------------------------- frequency tables
class _AdaptiveTable:
    """Order-0 context of the reference model: counts start at 0 except the escape symbol (1)."""

    def __init__(self) -> None:
        self.freq = [0] * NUM_SYMBOLS
        self.freq[ESCAPE] = 1

    def total(self) -> int:
        return sum(self.freq)

    def low(self, s: int) -> int:
        return sum(self.freq[:s])

    def high(self, s: int) -> int:
        return sum(self.freq[: s + 1])

    def symbol_for(self, value: int) -> int:
        acc = 0
        for s, f in enumerate(self.freq):
            acc += f
            if value < acc:
                return s
        raise ValueError("value outside the table")


class _FlatTable:
    """The order -1 fallback: every symbol has frequency 1."""

    def total(self) -> int:
        return NUM_SYMBOLS

    def low(self, s: int) -> int:
        return s

    def high(self, s: int) -> int:
        return s + 1

    def symbol_for(self, value: int) -> int:
        return value


_Table = _AdaptiveTable | _FlatTable


# --------------------------------------------------------------------------- arithmetic coder
class _CoderState:
    """Interval registers shared by encoder and decoder (``STATE_BITS``-bit integers)."""

    def __init__(self, bits: int = STATE_BITS) -> None:
        self.bits = bits
        self.full = 1 << bits
        self.half = self.full >> 1
        self.quarter = self.half >> 1
        self.mask = self.full - 1
        self.low = 0
        self.high = self.mask

    def _narrow(self, table: _Table, symbol: int) -> None:
        rng = self.high - self.low + 1
        total = table.total()
        lo, hi = table.low(symbol), table.high(symbol)
        if lo == hi:
            raise ValueError("symbol has zero frequency")
        self.high = self.low + hi * rng // total - 1
        self.low = self.low + lo * rng // total

    def _renormalise(self) -> None:
        while ((self.low ^ self.high) & self.half) == 0:
            self._shift()
            self.low = (self.low << 1) & self.mask
            self.high = ((self.high << 1) & self.mask) | 1
        while (self.low & ~self.high & self.quarter) != 0:
            self._underflow()
            self.low = (self.low << 1) ^ self.half
            self.high = ((self.high ^ self.half) << 1) | self.half | 1

    def _shift(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _underflow(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class ArithmeticEncoder(_CoderState):
    """Bit-exact encoder; ``bits`` collects the output bit sequence."""

    def __init__(self, bits: int = STATE_BITS) -> None:
        super().__init__(bits)
        self.out: list[int] = []
        self._pending = 0

    def write(self, table: _Table, symbol: int) -> None:
        self._narrow(table, symbol)
        self._renormalise()

    def _shift(self) -> None:
        bit = self.low >> (self.bits - 1)
        self.out.append(bit)
        self.out.extend([bit ^ 1] * self._pending)
        self._pending = 0

    def _underflow(self) -> None:
        self._pending += 1

    def finish(self) -> bytes:
        """Terminate (one '1' bit) and pad with zeros to whole bytes."""
        self.out.append(1)
        bits = self.out + [0] * (-len(self.out) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


class ArithmeticDecoder(_CoderState):
    """Decoder matching :class:`ArithmeticEncoder`; reads zeros past the end of the data."""

    def __init__(self, data: bytes, bits: int = STATE_BITS) -> None:
        super().__init__(bits)
        self._bits = [(byte >> (7 - i)) & 1 for byte in data for i in range(8)]
        self._pos = 0
        self.code = 0
        for _ in range(bits):
            self.code = (self.code << 1) | self._next_bit()

    def _next_bit(self) -> int:
        bit = self._bits[self._pos] if self._pos < len(self._bits) else 0
        self._pos += 1
        return bit

    def read(self, table: _Table) -> int:
        total = table.total()
        rng = self.high - self.low + 1
        offset = self.code - self.low
        value = ((offset + 1) * total - 1) // rng
        symbol = table.symbol_for(value)
        self._narrow(table, symbol)
        self._renormalise()
        return symbol

    def _shift(self) -> None:
        self.code = ((self.code << 1) & self.mask) | self._next_bit()

    def _underflow(self) -> None:
        self.code = (
            (self.code & self.half) | ((self.code << 1) & (self.mask >> 1)) | self._next_bit()
        )


# --------------------------------------------------------------------------- frame coding
def _encode_symbol(enc: ArithmeticEncoder, ctx: _AdaptiveTable, flat: _FlatTable, s: int) -> None:
    if s != ESCAPE and ctx.freq[s] > 0:
        enc.write(ctx, s)
        return
    enc.write(ctx, ESCAPE)
    enc.write(flat, s)


def encode_frame(values: Iterable[int]) -> bytes:
    """Code one frame's signed integer residuals into the reference ``.bin`` file content."""
    bitstring = "1" + "".join(expgolomb_bits(signed_to_unsigned(v)) for v in values)
    enc = ArithmeticEncoder()
    ctx, flat = _AdaptiveTable(), _FlatTable()
    for ch in bitstring:
        s = 1 if ch == "1" else 0
        _encode_symbol(enc, ctx, flat, s)
        ctx.freq[s] += 1
    _encode_symbol(enc, ctx, flat, ESCAPE)
    return enc.finish()


def _decode_bits(data: bytes) -> list[int]:
    dec = ArithmeticDecoder(data)
    ctx, flat = _AdaptiveTable(), _FlatTable()
    bits: list[int] = []
    while True:
        s = dec.read(ctx)
        if s == ESCAPE:
            s = dec.read(flat)
            if s == ESCAPE:
                return bits
        bits.append(s)
        ctx.freq[s] += 1


def decode_frame(data: bytes, count: int | None = None) -> list[int]:
    """Inverse of :func:`encode_frame`. ``count`` (if given) checks the number of values."""
    bits = _decode_bits(data)
    if not bits or bits[0] != 1:
        raise ValueError("reference feature frame does not start with the '1' marker bit")
    values: list[int] = []
    i = 1
    while i < len(bits):
        zeros = 0
        while i < len(bits) and bits[i] == 0:
            zeros += 1
            i += 1
        word = bits[i : i + zeros + 1]
        if len(word) != zeros + 1:
            raise ValueError("truncated Exp-Golomb code")
        n = int("".join(map(str, word)), 2) - 1
        values.append(unsigned_to_signed(n))
        i += zeros + 1
    if count is not None and len(values) != count:
        raise ValueError(f"decoded {len(values)} values, expected {count}")
    return values


# --------------------------------------------------------------------------- DPCM loop
@dataclass(frozen=True)
class DpcmResult:
    """Output of :func:`reference_dpcm_loop`.

    ``residual``: (T-1, D) int64, the quantised residuals of frames 1..T-1.
    ``reconstruction``: (T, D) float64, ``rec[t]`` (row 0 = the start feature of its chain).
    """

    residual: np.ndarray
    reconstruction: np.ndarray


def reference_dpcm_loop(
    features: np.ndarray,
    qstep: float,
    key_frames: Sequence[int] = (0,),
    key_features: np.ndarray | None = None,
) -> DpcmResult:
    """The reference closed-loop DPCM with its exact float64 semantics.

    ``features`` (T, D) float64 are the per-frame analyses (row 0: the key frame). Every frame
    t >= 1 gets a residual against ``rec[t-1]`` with Python ``round`` (half to even).
    ``key_frames`` lists frames that restart the chain (DAC's adaptive refresh): the residual of
    such a frame is still computed and returned (the reference writes it), but the *next* frame
    predicts from ``key_features[k]`` (k-th key frame) instead. ``rec`` of a key frame t > 0 is
    the discarded reconstruction, as in the reference encoder.
    """
    f = np.asarray(features, dtype=np.float64)
    t_count, dim = f.shape
    keys = list(key_frames)
    if keys[0] != 0:
        raise ValueError("frame 0 must be a key frame")
    kf = f[[0]] if key_features is None else np.asarray(key_features, dtype=np.float64)
    rec = np.zeros_like(f)
    res = np.zeros((t_count - 1, dim), dtype=np.int64)
    rec[0] = kf[0]
    prev = rec[0].copy()
    for t in range(1, t_count):
        r = [round((float(f[t, i]) - float(prev[i])) * qstep) for i in range(dim)]
        res[t - 1] = r
        rec[t] = np.asarray(r, dtype=np.int64) / qstep + prev
        if t in keys:
            prev = kf[keys.index(t)].copy()
        else:
            prev = rec[t]
    return DpcmResult(residual=res, reconstruction=rec)
