"""Entropy coding of quantized feature residuals.

Two coders behind one interface, chosen by a fixed id in the bitstream header:

* ``expgolomb`` (id 0): order-0 Exp-Golomb of the zigzag-mapped residuals, the binarization
  the GFVC reference software uses (without its per-frame arithmetic coder). Kept as the
  simple baseline to compare against.
* ``range`` (id 1, default): a range coder (constriction) driven by adaptive categorical
  models. Each coordinate is coded in a context chosen from the running mean of its own past
  magnitudes, and each context's symbol counts adapt after every frame. All statistics are
  integers and the probabilities are built from them with plain float division, so encoder
  and decoder build bit-identical models on any machine.

Both are stateful: ``encode``/``decode`` of frame t must follow frames 0..t-1 in the same
order on both sides. ``reset`` starts over; from bitstream format version 2 on, both sides
reset at every key unit, so every key frame is an entry point. ``encode``/``decode`` with
``commit=False`` leave the statistics untouched and ``update`` commits them, so a codec can
change its state only once a whole unit has succeeded.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np

from gfvc.bits import BitReader, BitWriter
from gfvc.errors import BitstreamError, UnknownNameError

FEATURE_CODERS: dict[str, type[FeatureCoder]] = {}


def _register(cls: type[FeatureCoder]) -> type[FeatureCoder]:
    FEATURE_CODERS[cls.name] = cls
    return cls


def feature_coder(name: str, dim: int) -> FeatureCoder:
    try:
        return FEATURE_CODERS[name](dim)
    except KeyError:
        raise UnknownNameError(
            f"unknown feature coder {name!r}; choose one of: {', '.join(FEATURE_CODERS)}"
        ) from None


def feature_coder_by_id(coder_id: int, dim: int) -> FeatureCoder:
    for cls in FEATURE_CODERS.values():
        if cls.coder_id == coder_id:
            return cls(dim)
    raise BitstreamError(f"unknown feature coder id {coder_id} in the bitstream header")


class FeatureCoder(abc.ABC):
    """Codes one integer residual vector of length ``dim`` per frame into bytes."""

    name: ClassVar[str]
    coder_id: ClassVar[int]

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.reset()

    def reset(self) -> None:
        """Forget adapted statistics (both sides must call it at the same point)."""

    def update(self, q: np.ndarray) -> None:
        """Adapt the statistics to a coded frame (stateless coders ignore it)."""

    def encode(self, q: np.ndarray, *, commit: bool = True) -> bytes:
        """Code one frame's residuals; ``commit=False`` leaves the statistics as they were."""
        q = np.asarray(q, dtype=np.int64)
        if q.shape != (self.dim,):
            raise ValueError(f"expected {self.dim} residuals, got shape {q.shape}")
        data = self._encode(q)
        if commit:
            self.update(q)
        return data

    def decode(self, data: bytes, *, commit: bool = True) -> np.ndarray:
        """Decode one frame's residuals; ``commit=False`` leaves the statistics as they were."""
        q = self._decode(data)
        if commit:
            self.update(q)
        return q

    @abc.abstractmethod
    def _encode(self, q: np.ndarray) -> bytes: ...

    @abc.abstractmethod
    def _decode(self, data: bytes) -> np.ndarray: ...


# ----------------------------------------------------------------------------- exp-Golomb


def encode_ints_eg(values: np.ndarray) -> bytes:
    """Signed order-0 Exp-Golomb of every value, byte-aligned at the end."""
    w = BitWriter()
    for v in np.asarray(values, dtype=np.int64).ravel():
        w.se(int(v))
    return w.getvalue()


def decode_ints_eg(data: bytes, n: int, what: str = "feature unit") -> np.ndarray:
    r = BitReader(data, what)
    out = np.fromiter((r.se() for _ in range(n)), dtype=np.int64, count=n)
    if r.remaining >= 8:
        raise BitstreamError(f"{what} has {r.remaining // 8} unexpected trailing bytes")
    return out


@_register
class ExpGolombCoder(FeatureCoder):
    name = "expgolomb"
    coder_id = 0

    def _encode(self, q: np.ndarray) -> bytes:
        return encode_ints_eg(q)

    def _decode(self, data: bytes) -> np.ndarray:
        return decode_ints_eg(data, self.dim)


# ----------------------------------------------------------------------------- range coder

_K = 24  # symbols code values -K..K directly; larger magnitudes go through an escape
_ESC = 2 * _K + 1
_ALPHABET = 2 * _K + 2
_BUCKETS = 8
_START_BUCKET = 4  # context of every coordinate before any statistics exist
_INC = 24  # count added per coded symbol
_MAX_TOTAL = 1 << 16  # halve a table's counts beyond this, so it keeps adapting
_HALF_LIFE = 64  # frames after which a coordinate's magnitude statistics are halved
# Prior decay ratio per context (num, den): narrow for quiet coordinates, wide for busy ones.
_PRIOR_RATIO = [(1, 8), (1, 4), (1, 2), (2, 3), (3, 4), (5, 6), (9, 10), (19, 20)]


def _prior_counts(num: int, den: int) -> np.ndarray:
    """Integer two-sided geometric prior, exact on every machine (Python ints only)."""
    counts = []
    for s in range(_ALPHABET):
        if s == _ESC:
            counts.append(1)
            continue
        a = abs(s - _K)
        counts.append(max(1, (4096 * num**a) // den**a))
    return np.array(counts, dtype=np.int64)


def _bucket_of(sum_abs: np.ndarray, n: int) -> np.ndarray:
    """Context per coordinate from its mean past magnitude (integer arithmetic only)."""
    if n == 0:
        return np.full(sum_abs.shape, _START_BUCKET, dtype=np.int64)
    m = (sum_abs * 8) // n  # 8 x mean |q|, floored
    # number of powers of two <= m: 0 -> 0, 1 -> 1, 2..3 -> 2, 4..7 -> 3, ... (the bit length)
    return sum((m >= (1 << k)).astype(np.int64) for k in range(_BUCKETS - 1))


def _words(data: bytes) -> np.ndarray:
    """Bytes -> the coder's 32-bit words, big-endian so the byte string runs from the most
    to the least significant bits and a shortened string reads as zero-filled."""
    pad = data + b"\0" * (-len(data) % 4)
    return np.frombuffer(pad, dtype=">u4").astype(np.uint32)


def _increment(prefix: bytes) -> bytes | None:
    """prefix + 1 as a big-endian number (None on overflow)."""
    v = int.from_bytes(prefix, "big") + 1
    if v >> (8 * len(prefix)):
        return None
    return v.to_bytes(len(prefix), "big")


@_register
class AdaptiveRangeCoder(FeatureCoder):
    name = "range"
    coder_id = 1

    def reset(self) -> None:
        self._counts = [_prior_counts(*r) for r in _PRIOR_RATIO]
        self._sum_abs = np.zeros(self.dim, dtype=np.int64)
        self._n = 0

    # -- models
    def _models(self) -> list:
        import constriction

        return [
            constriction.stream.model.Categorical(c / c.sum(), perfect=False) for c in self._counts
        ]

    def update(self, q: np.ndarray) -> None:
        q = np.asarray(q, dtype=np.int64)
        buckets = _bucket_of(self._sum_abs, self._n)
        symbols = self._symbols(q)
        for b in range(_BUCKETS):
            sel = symbols[buckets == b]
            if sel.size:
                np.add.at(self._counts[b], sel, _INC)
                if self._counts[b].sum() > _MAX_TOTAL:
                    self._counts[b] = (self._counts[b] + 1) // 2
        self._sum_abs += np.abs(q)
        self._n += 1
        if self._n >= _HALF_LIFE:
            self._sum_abs //= 2
            self._n //= 2

    @staticmethod
    def _symbols(q: np.ndarray) -> np.ndarray:
        return np.where(np.abs(q) <= _K, q + _K, _ESC).astype(np.int32)

    # -- coding
    def _encode_words(
        self, q: np.ndarray, buckets: np.ndarray, symbols: np.ndarray, models: list
    ) -> np.ndarray:
        import constriction

        enc = constriction.stream.queue.RangeEncoder()
        for b in range(_BUCKETS):
            sel = symbols[buckets == b]
            if sel.size:
                enc.encode(sel, models[b])
        esc = q[symbols == _ESC]
        if esc.size:
            bits = self._escape_bits(esc)
            enc.encode(bits, _uniform_bit())
        return enc.get_compressed()

    @staticmethod
    def _escape_bits(esc: np.ndarray) -> np.ndarray:
        w = BitWriter()
        for v in esc:
            w.u(int(v < 0), 1)
            w.ue(int(abs(v)) - _K - 1)
        n = len(w)
        raw = np.unpackbits(np.frombuffer(w.getvalue(), dtype=np.uint8))[:n]
        return raw.astype(np.int32)

    def _decode_from(self, data: bytes, buckets: np.ndarray, models: list) -> np.ndarray:
        import constriction

        dec = constriction.stream.queue.RangeDecoder(_words(data))
        symbols = np.empty(self.dim, dtype=np.int32)
        for b in range(_BUCKETS):
            idx = np.flatnonzero(buckets == b)
            if idx.size:
                symbols[idx] = dec.decode(models[b], idx.size)
        q = symbols.astype(np.int64) - _K
        esc = np.flatnonzero(symbols == _ESC)
        bit = _uniform_bit()
        for i in esc:
            sign = int(dec.decode(bit))
            zeros = 0
            while int(dec.decode(bit)) == 0:
                zeros += 1
                if zeros > 40:
                    raise BitstreamError("corrupt feature unit (escape code too long)")
            rest = 0
            for _ in range(zeros):
                rest = (rest << 1) | int(dec.decode(bit))
            mag = ((1 << zeros) | rest) - 1 + _K + 1
            q[i] = -mag if sign else mag
        return q

    def _encode(self, q: np.ndarray) -> bytes:
        buckets = _bucket_of(self._sum_abs, self._n)
        symbols = self._symbols(q)
        models = self._models()
        full = self._encode_words(q, buckets, symbols, models).astype(">u4").tobytes()
        return self._shortest(full, q, buckets, models, self._ideal_bits(buckets, symbols, q))

    def _ideal_bits(self, buckets: np.ndarray, symbols: np.ndarray, q: np.ndarray) -> float:
        """Information content of the frame under the current models (a lower bound)."""
        bits = 0.0
        for b in range(_BUCKETS):
            sel = symbols[buckets == b]
            if sel.size:
                c = self._counts[b]
                bits -= float(np.log2(c[sel] / c.sum()).sum())
        esc = q[symbols == _ESC]
        return bits + float(sum(1 + 2 * int(abs(v) - _K).bit_length() - 1 for v in esc))

    def _shortest(
        self, full: bytes, q: np.ndarray, buckets: np.ndarray, models: list, ideal_bits: float
    ) -> bytes:
        """Drop the flush bytes the decoder does not need (it reads zeros past the end).

        A range coder's flush writes its whole state, but any number inside the final
        interval decodes the same symbols. A prefix of the flushed value, or that prefix plus
        one, followed by zeros, usually still lies inside it. We keep the shortest such
        candidate that decodes back to ``q``: checked by decoding, so exact by construction.
        """
        # No byte string shorter than the information content can decode: start just below it.
        for n in range(max(0, int(ideal_bits // 8) - 1), len(full)):
            for cand in (full[:n], _increment(full[:n])):
                if cand is None:
                    continue
                try:
                    if np.array_equal(self._decode_from(cand, buckets, models), q):
                        return cand
                except Exception:  # constriction asserts on data that ends too early
                    continue
        return full

    def _decode(self, data: bytes) -> np.ndarray:
        buckets = _bucket_of(self._sum_abs, self._n)
        try:
            return self._decode_from(data, buckets, self._models())
        except BitstreamError:
            raise
        except Exception as e:  # constriction raises plain errors on garbage
            raise BitstreamError(f"corrupt feature unit ({e})") from None


def _uniform_bit():
    import constriction

    return constriction.stream.model.Categorical(np.array([0.5, 0.5]), perfect=False)
