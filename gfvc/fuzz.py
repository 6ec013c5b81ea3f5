"""Structure-aware fuzzing of everything gfvc reads from outside.

Each *target* builds a small corpus of valid inputs once (real units coded from the built-in
sample, an exported Annex-B stream, a checkpoint, the packaged YAML files ...) and then, per
case, mutates one of them with knowledge of its structure and feeds it to the parser(s):

* ``gfv``: whole .gfv files. Header fields, segment heads, length tables, payloads and the
  end marker are mutated and the CRCs recomputed afterwards (usually), so the parsers behind
  the CRCs are reached; files that still parse are decoded unit by unit.
* ``units``: single units and live packets (CRC-16 recomputed) through one long-lived
  streaming ``Decoder`` (``decode_unit`` and ``receive``).
* ``annexb``: HEVC Annex-B streams with GFV SEI (NAL units, SEI message sizes and payload
  bits mutated, emulation prevention redone) through ``annexb_to_gfv``; the GFV/GFVE
  payload parsers directly.
* ``raw``: ``.rgb`` / ``.yuv`` files whose size (in the name or given) is wrong.
* ``config``: mutated configuration YAML (official model configs, test conditions, training).
* ``checkpoint``: pickles that would run code (must be refused and never executed) and
  damaged torch files, through every checkpoint loader.

A case passes when it succeeds or raises one of gfvc's own errors (``GfvcError``); anything
else, a case slower than ``SLOW_CASE_S`` or one that grows the peak RSS by more than
``MEMORY_CASE_MB``, is a failure. ``run`` is seeded and bounded by cases and by time;
``benchmarks/fuzz.py`` does long runs, ``tests/test_fuzz.py`` short ones.
"""

from __future__ import annotations

import io
import pickle
import resource
import struct
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gfvc.errors import GfvcError

SLOW_CASE_S = 10.0  # one case (one input through its parsers) may take this long at most
MEMORY_CASE_MB = 300  # growth of the peak RSS one case may cause
MAX_DECODED_UNITS = 6  # units decoded per accepted file (keeps a case's cost bounded)

_INTERESTING_U8 = (0, 1, 2, 0x7F, 0x80, 0xFE, 0xFF)
_INTERESTING_U16 = (0, 1, 2, 15, 16, 17, 255, 256, 4095, 4096, 4097, 0x7FFF, 0x8000, 0xFFFF)


# ----------------------------------------------------------------------------- mutators


def mutate_bytes(rng: np.random.Generator, data: bytes, others: list[bytes] | None = None) -> bytes:
    """One to four generic mutations of ``data`` (flips, interesting values, inserts, cuts,
    duplications, splices from ``others``, absurd varints)."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        op = int(rng.integers(9))
        n = len(b)
        if op == 0 and n:  # bit flip
            i = int(rng.integers(n))
            b[i] ^= 1 << int(rng.integers(8))
        elif op == 1 and n:  # interesting byte
            b[int(rng.integers(n))] = _INTERESTING_U8[int(rng.integers(len(_INTERESTING_U8)))]
        elif op == 2:  # insert random bytes
            i = int(rng.integers(n + 1))
            b[i:i] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
        elif op == 3 and n:  # delete a range
            i = int(rng.integers(n))
            del b[i : i + int(rng.integers(1, 17))]
        elif op == 4 and n:  # truncate
            del b[int(rng.integers(n)) :]
        elif op == 5 and n:  # duplicate a range
            i = int(rng.integers(n))
            j = min(n, i + int(rng.integers(1, 33)))
            b[j:j] = b[i:j]
        elif op == 6 and others:  # splice a piece of another input
            o = others[int(rng.integers(len(others)))]
            if o:
                i, j = sorted(int(x) for x in rng.integers(0, len(o) + 1, 2))
                k = int(rng.integers(n + 1))
                b[k : k + (j - i)] = o[i:j]
        elif op == 7 and n:  # a huge varint (absurd length or count)
            i = int(rng.integers(n))
            b[i : i + 1] = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F])[: int(rng.integers(1, 6))]
        elif op == 8 and n >= 2:  # interesting u16
            i = int(rng.integers(n - 1))
            v = _INTERESTING_U16[int(rng.integers(len(_INTERESTING_U16)))]
            b[i : i + 2] = struct.pack(">H", v)
    return bytes(b)


def mutate_bits(rng: np.random.Generator, data: bytes) -> bytes:
    """Bit-level mutations for bit-packed syntax (SEI): flips, and long Exp-Golomb codes
    (values near 2^31) inserted at a random bit position."""
    if not data:
        return bytes(rng.integers(0, 256, 4, dtype=np.uint8))
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.6:
            i = int(rng.integers(len(bits)))
            bits[i] ^= 1
        else:
            n = int(rng.integers(8, 33))
            code = np.concatenate([np.zeros(n, np.uint8), [1], rng.integers(0, 2, n)])
            i = int(rng.integers(len(bits) + 1))
            bits = np.concatenate([bits[:i], code.astype(np.uint8), bits[i:]])
    pad = (-len(bits)) % 8
    return np.packbits(np.concatenate([bits, np.zeros(pad, np.uint8)])).tobytes()


# ----------------------------------------------------------------------------- .gfv structure


@dataclass
class GfvPieces:
    """A .gfv file cut at its CRC boundaries: each piece is the CRC-covered bytes."""

    header: bytearray  # "GFVC" .. body (CRC-32 follows)
    segments: list[bytearray]  # 0x53 .. payloads
    end: bytearray  # 0x45 frames

    @classmethod
    def split(cls, data: bytes) -> GfvPieces:
        from gfvc.bitstream.format import StreamHeader, _parse_segment

        _, at = StreamHeader.parse(data)
        header = bytearray(data[: at - 4])
        segments = []
        while data[at] != 0x45:
            seg, _ = _parse_segment(data, at)
            segments.append(bytearray(data[at : at + seg.total_bytes - 4]))
            at += seg.total_bytes
        return cls(header, segments, bytearray(data[at : at + 5]))

    def join(self, rng: np.random.Generator, crc_ok: float = 0.95) -> bytes:
        """Reassemble, recomputing each CRC-32 with probability ``crc_ok``."""

        def crc(piece: bytes) -> bytes:
            v = zlib.crc32(piece)
            if rng.random() >= crc_ok:
                v ^= 1 << int(rng.integers(32))
            return struct.pack(">I", v)

        out = bytearray()
        for piece in (self.header, *self.segments, self.end):
            out += piece + crc(piece)
        return bytes(out)


def _mutate_gfv(rng: np.random.Generator, seed: bytes, others: list[bytes]) -> bytes:
    from gfvc.bitstream.format import _HEADER_FIELDS

    p = GfvPieces.split(seed)
    p.segments = [bytearray(s) for s in p.segments]
    what = int(rng.integers(7))
    if what == 0:  # one header field set to an extreme / random value
        body = p.header[6:]
        off = int(rng.integers(_HEADER_FIELDS.size))
        body[off] = _INTERESTING_U8[int(rng.integers(len(_INTERESTING_U8)))]
        if rng.random() < 0.3:
            body[off] = int(rng.integers(256))
        p.header[6:] = body
    elif what == 1:  # header bytes, with the body length kept consistent (usually)
        p.header = bytearray(mutate_bytes(rng, bytes(p.header)))
        if len(p.header) >= 6 and rng.random() < 0.8:
            p.header[5] = min(255, len(p.header) - 6)
    elif what == 2 and p.segments:  # segment head / length table
        s = p.segments[int(rng.integers(len(p.segments)))]
        head = min(len(s), 3 + int(rng.integers(1, 24)))
        s[:head] = mutate_bytes(rng, bytes(s[:head]))
    elif what == 3 and p.segments:  # payload bytes, lengths unchanged
        s = p.segments[int(rng.integers(len(p.segments)))]
        for _ in range(int(rng.integers(1, 8))):
            if s:
                s[int(rng.integers(len(s)))] = int(rng.integers(256))
    elif what == 4 and p.segments:  # drop, duplicate or reorder segments
        i = int(rng.integers(len(p.segments)))
        op = int(rng.integers(3))
        if op == 0:
            del p.segments[i]
        elif op == 1:
            p.segments.insert(i, bytearray(p.segments[i]))
        else:
            j = int(rng.integers(len(p.segments)))
            p.segments[i], p.segments[j] = p.segments[j], p.segments[i]
    elif what == 5:  # end marker count
        v = int(rng.choice([0, 1, 2, 255, 2**31, 2**32 - 1, int(rng.integers(0, 1000))]))
        p.end[1:5] = struct.pack(">I", v)
    else:  # units re-packed by the writer: every length table and CRC valid
        return _repacked(rng, seed, others)
    return p.join(rng)


def _repacked(rng: np.random.Generator, seed: bytes, others: list[bytes]) -> bytes:
    from gfvc.bitstream.format import FEATURE, KEY, parse_stream, write_end, write_segment

    parsed = parse_stream(seed)
    units = list(parsed.units)
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(len(units)))
        u = units[i]
        op = int(rng.integers(4))
        if op == 0:
            units[i] = u[:1] + mutate_bytes(rng, u[1:], [x[1:] for x in units])
        elif op == 1 and u[0] == KEY:  # the key payload's structure: picture, feature, side
            units[i] = u[:1] + _mutate_key_payload(rng, u[1:])
        elif op == 2:
            del units[i]
        else:
            units.insert(i, units[int(rng.integers(len(units)))])
    if not units or units[0][0] != KEY and rng.random() < 0.5:
        units.insert(0, bytes([KEY]) + b"\x00\x00")
    data = bytearray(parsed.header.to_bytes())
    seg: list[bytes] = []
    for u in units:
        if seg and (u[0] == KEY or len(seg) == 255):
            data += write_segment(seg)
            seg = []
        seg.append(u if u[0] in (KEY, FEATURE) else bytes([FEATURE]) + u[1:])
    if seg:
        data += write_segment(seg)
    return bytes(data + write_end(len(units)))


def _mutate_key_payload(rng: np.random.Generator, payload: bytes) -> bytes:
    from gfvc.bitstream.format import pack_key_payload, unpack_key_payload

    picture, feature, side = unpack_key_payload(payload)
    part = int(rng.integers(3))
    if part == 0:
        picture = mutate_bytes(rng, picture)
    elif part == 1:
        feature = mutate_bytes(rng, feature)
    else:
        side = mutate_bytes(rng, side)
    return pack_key_payload(picture, feature, side)


# ----------------------------------------------------------------------------- corpus


@dataclass
class Corpus:
    """Valid inputs every target mutates (built once, a few seconds)."""

    gfv: list[bytes]
    annexb: list[bytes]
    workdir: Path

    @classmethod
    def build(cls, frames: int = 8, workdir: Path | None = None) -> Corpus:
        from gfvc.codec import EncodeSettings, FramePreparer, encode_frames
        from gfvc.demo import sample_path
        from gfvc.interop import gfv_to_annexb

        wd = Path(workdir or tempfile.mkdtemp(prefix="gfvc-fuzz-"))
        s = EncodeSettings(frames=frames)
        prep = FramePreparer(sample_path(), s)
        try:
            crops = list(prep)
        finally:
            prep.close()
        gfv = [
            encode_frames(crops, EncodeSettings(keyframe_codec="x265", qp=45, gop=4)),
            encode_frames(crops[:4], EncodeSettings(keyframe_codec="svtav1", qp=60)),
            encode_frames(crops[:5], EncodeSettings(model="mesh", keyframe_codec="lossless")),
        ]
        annexb = [gfv_to_annexb(gfv[0], form=f)[0] for f in ("vtm", "hm")]
        return cls(gfv, annexb, wd)


# ----------------------------------------------------------------------------- targets


def _decode_some(data: bytes, max_units: int = MAX_DECODED_UNITS) -> None:
    from gfvc.bitstream import parse_stream
    from gfvc.bitstream.extension import no_face_spans
    from gfvc.codec import Decoder, stream_report

    parsed = parse_stream(data)
    stream_report(data)
    no_face_spans(parsed.header)
    with Decoder(parsed.header) as dec:
        for unit in parsed.units[:max_units]:
            out = dec.decode_unit(unit)
            if out.shape != (dec.header.height, dec.header.width, 3) or out.dtype != np.uint8:
                raise AssertionError(f"decoded frame is {out.dtype} {out.shape}")


def target_gfv(rng: np.random.Generator, corpus: Corpus) -> None:
    seed = corpus.gfv[int(rng.integers(len(corpus.gfv)))]
    _decode_some(_mutate_gfv(rng, seed, corpus.gfv))


class _UnitTarget:
    """One long-lived streaming decoder fed mutated units and packets (state carried over)."""

    def __init__(self, corpus: Corpus) -> None:
        from gfvc.bitstream import parse_stream

        parsed = parse_stream(corpus.gfv[0])
        self.header = parsed.header
        self.units = parsed.units
        self.dec = None

    def __call__(self, rng: np.random.Generator, corpus: Corpus) -> None:
        from gfvc.bitstream import pack_packet
        from gfvc.bitstream.format import PACKET_HEADER
        from gfvc.codec import Decoder

        if self.dec is None or rng.random() < 0.05:
            self.dec = Decoder(self.header)
            self.dec.decode_unit(self.units[0])
        i = int(rng.integers(len(self.units)))
        u = self.units[i]
        if rng.random() < 0.3 and u[0] == 0x4B:
            unit = u[:1] + _mutate_key_payload(rng, u[1:])
        else:
            unit = u[:1] + mutate_bytes(rng, u[1:], [x[1:] for x in self.units])
        mode = int(rng.integers(3))
        if mode == 0:
            self.dec.decode_unit(unit)
            return
        packet = pack_packet(unit, int(rng.integers(0, 65536)) if rng.random() < 0.3 else i)
        if mode == 1 and rng.random() < 0.5:
            packet = mutate_bytes(rng, packet[:PACKET_HEADER]) + packet[PACKET_HEADER:]
        try:
            got = self.dec.receive(packet)  # never raises for damage
        except Exception as exc:  # noqa: BLE001 - the point of the check
            raise AssertionError(f"receive() raised {type(exc).__name__}: {exc}") from exc
        if got.frame is not None and got.frame.dtype != np.uint8:
            raise AssertionError("receive() returned a non-uint8 frame")


def _split_sei(data: bytes) -> list[tuple[int, int, bytes]]:
    """(start, end, rbsp) of every SEI NAL unit of an HEVC Annex-B stream."""
    from gfvc.bitstream.nal import split_nal_units

    return [
        (n.payload_start, n.end, n.rbsp(data))
        for n in split_nal_units(data, "hevc")
        if n.is_suffix_sei or n.is_prefix_sei
    ]


def _mutate_annexb(rng: np.random.Generator, seed: bytes, others: list[bytes]) -> bytes:
    from gfvc.bitstream.nal import SeiMessage, escape_rbsp, parse_sei_rbsp, sei_rbsp

    what = int(rng.integers(4))
    if what == 0:
        return mutate_bytes(rng, seed, others)
    seis = _split_sei(seed)
    start, end, rbsp = seis[int(rng.integers(len(seis)))]
    if what == 1:  # raw RBSP bytes (message types and sizes included)
        new = mutate_bytes(rng, rbsp)
    else:  # one message's payload, bit by bit; sizes recomputed by the writer
        msgs = parse_sei_rbsp(rbsp)
        k = int(rng.integers(len(msgs)))
        m = msgs[k]
        payload = mutate_bits(rng, m.payload) if what == 2 else mutate_bytes(rng, m.payload)
        msgs[k] = SeiMessage(m.payload_type, payload)
        if rng.random() < 0.2:
            msgs.insert(k, msgs[k])
        new = sei_rbsp(msgs)
    return seed[:start] + escape_rbsp(new) + seed[end:]


def target_annexb(rng: np.random.Generator, corpus: Corpus) -> None:
    from gfvc.interop import annexb_to_gfv

    seed = corpus.annexb[int(rng.integers(len(corpus.annexb)))]
    data = _mutate_annexb(rng, seed, corpus.annexb)
    gfv, _ = annexb_to_gfv(data, hint=".265")
    _decode_some(gfv, 3)


def target_sei(rng: np.random.Generator, corpus: Corpus) -> None:
    """GFV/GFVE payloads straight into the SEI readers (both syntax forms)."""
    from gfvc.bitstream.nal import parse_sei_rbsp
    from gfvc.bitstream.sei import PAYLOAD_GFVE, SeiReader

    seed = corpus.annexb[int(rng.integers(len(corpus.annexb)))]
    msgs = [m for _, _, r in _split_sei(seed) for m in parse_sei_rbsp(r)]
    form = "vtm" if rng.random() < 0.5 else "hm"
    reader = SeiReader(form)
    for m in msgs[: int(rng.integers(1, len(msgs) + 1))]:
        payload = mutate_bits(rng, m.payload) if rng.random() < 0.5 else m.payload
        fn = reader.gfve if m.payload_type == PAYLOAD_GFVE else reader.gfv
        try:
            fn(payload)
        except GfvcError:
            pass


_RAW_SIDES = (
    0,
    1,
    2,
    15,
    16,
    63,
    64,
    65,
    66,
    128,
    256,
    479,
    480,
    641,
    1080,
    1920,
    4096,
    8192,
    8194,
    65535,
    99999,
)


def target_raw(rng: np.random.Generator, corpus: Corpus) -> None:
    from gfvc.io import VideoReader, crop_and_resize

    w = int(rng.choice(_RAW_SIDES)) if rng.random() < 0.7 else int(rng.integers(0, 700))
    h = int(rng.choice(_RAW_SIDES)) if rng.random() < 0.7 else int(rng.integers(0, 700))
    suffix = ".rgb" if rng.random() < 0.5 else ".yuv"
    in_name = rng.random() < 0.5
    name = f"clip_{w}x{h}_25{suffix}" if in_name else f"clip{suffix}"
    # mostly near a whole number of frames of the claimed size, capped at 300 kB
    fb = w * h * 3 if suffix == ".rgb" else w * h * 3 // 2
    n = fb * int(rng.integers(1, 3)) + int(rng.choice([0, 0, 1, -1, 7]))
    n = int(min(max(n, 0), 300_000)) if rng.random() < 0.9 else int(rng.integers(0, 5000))
    path = corpus.workdir / name
    path.write_bytes(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    try:
        size = None if in_name and rng.random() < 0.8 else (w, h)
        with VideoReader(path, size=size) as r:
            for _, f in zip(range(2), r, strict=False):
                crop_and_resize(f, None, 64)
    finally:
        path.unlink()


def target_config(rng: np.random.Generator, corpus: Corpus) -> None:
    import yaml

    from gfvc.eval.ctc import CtcConfig
    from gfvc.models.official.base import load_config
    from gfvc.train.trainer import TrainConfig

    seeds = _config_seeds()
    kind = int(rng.integers(len(seeds)))
    text = seeds[kind]
    if rng.random() < 0.3:
        text = mutate_bytes(rng, text.encode()).decode("utf-8", "replace")
    else:
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError:
            d = None
        text = yaml.safe_dump(_mutate_tree(rng, d), sort_keys=False)
    path = corpus.workdir / f"fuzz-{kind}.yaml"
    path.write_text(text)
    try:
        if kind == 0:
            from gfvc.models import model_class
            from gfvc.models.official.base import check_buildable

            check_buildable(model_class("fomm"), load_config(path, "fomm"))
        elif kind == 1:
            CtcConfig.load(path)
        else:
            TrainConfig.load(path)
    finally:
        path.unlink()


_CONFIG_SEEDS: list[str] = []


def _config_seeds() -> list[str]:
    if not _CONFIG_SEEDS:
        from importlib import resources

        root = Path(__file__).resolve().parents[1] / "configs"
        official = resources.files("gfvc.models.official").joinpath("configs/fomm-256.yaml")
        ctc = root / "ctc_example.yaml"
        train = root / "train_landmark.yaml"
        _CONFIG_SEEDS.extend(
            [
                official.read_text(),
                ctc.read_text() if ctc.exists() else "sequences: [a.mp4]\ncodecs: [{name: x265}]\n",
                train.read_text() if train.exists() else "steps: 10\n",
            ]
        )
    return _CONFIG_SEEDS


_ODD_VALUES = (None, -1, 0, 10**12, 1.5, float("nan"), "x", [], {}, [1, 2], {"a": 1}, True)


def _mutate_tree(rng: np.random.Generator, d: object, depth: int = 0) -> object:
    """Replace, delete or add entries of a YAML tree at random (values of odd types)."""
    if isinstance(d, dict) and d:
        d = dict(d)
        key = list(d)[int(rng.integers(len(d)))]
        op = int(rng.integers(4))
        if op == 0:
            del d[key]
        elif op == 1:
            d[key] = _ODD_VALUES[int(rng.integers(len(_ODD_VALUES)))]
        elif op == 2:
            d[f"extra{int(rng.integers(9))}"] = 1
        else:
            d[key] = _mutate_tree(rng, d[key], depth + 1)
        return d
    if isinstance(d, list) and d:
        d = list(d)
        i = int(rng.integers(len(d)))
        d[i] = _mutate_tree(rng, d[i], depth + 1)
        return d
    return _ODD_VALUES[int(rng.integers(len(_ODD_VALUES)))]


class _Sentinel:
    """Unpickling this runs code: it creates the file named in ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def target_checkpoint(rng: np.random.Generator, corpus: Corpus) -> None:
    import torch

    from gfvc.models import model_class
    from gfvc.models.official.checkpoint import read_checkpoint
    from gfvc.train.trainer import _load_state

    sentinel = corpus.workdir / "pickle-ran-code"
    path = corpus.workdir / "fuzz-checkpoint.pt"
    kind = int(rng.integers(4))
    buf = io.BytesIO()
    if kind == 0:  # a torch file with an object that runs code when unpickled
        torch.save({"kp_detector": {"w": torch.zeros(2)}, "x": _Sentinel(str(sentinel))}, buf)
        data = buf.getvalue()
    elif kind == 1:  # a bare pickle that runs code
        data = pickle.dumps({"generator": _Sentinel(str(sentinel))}, protocol=2)
    else:  # a real small checkpoint, damaged
        torch.save({"kp_detector": {"w": torch.arange(6.0)}, "shape": {"mean": [1.0]}}, buf)
        data = mutate_bytes(rng, buf.getvalue())
    path.write_bytes(data)
    try:
        loaders: list[Callable[[], object]] = [
            lambda: read_checkpoint(path),
            lambda: model_class("landmark").create(checkpoint=str(path)),
            lambda: _load_state(path),
        ]
        for load in loaders:
            try:
                load()
            except GfvcError:
                pass
    finally:
        path.unlink()
        if sentinel.exists():
            sentinel.unlink()
            raise AssertionError("a checkpoint loader executed code from a pickle")


TARGETS: dict[str, Callable[..., Callable[[np.random.Generator, Corpus], None]]] = {
    "gfv": lambda corpus: target_gfv,
    "units": _UnitTarget,
    "annexb": lambda corpus: target_annexb,
    "sei": lambda corpus: target_sei,
    "raw": lambda corpus: target_raw,
    "config": lambda corpus: target_config,
    "checkpoint": lambda corpus: target_checkpoint,
}


# ----------------------------------------------------------------------------- runner


@dataclass
class Failure:
    target: str
    case: int
    seed: int
    error: str  # one line: exception type and message
    where: str  # innermost frame of the traceback


@dataclass
class FuzzResult:
    target: str
    cases: int = 0
    refused: int = 0  # cases a GfvcError refused (the expected outcome for most)
    seconds: float = 0.0
    slowest_s: float = 0.0
    failures: list[Failure] = field(default_factory=list)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(
    target: str,
    *,
    cases: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
    corpus: Corpus | None = None,
) -> FuzzResult:
    """Fuzz one target until ``cases`` cases or ``seconds`` seconds, whichever comes first.

    Case ``i`` uses ``np.random.default_rng([seed, i])``, so any failure is reproducible
    from (target, seed, case) alone (``benchmarks/fuzz.py --replay``).
    """
    if cases is None and seconds is None:
        raise ValueError("give cases or seconds")
    corpus = corpus or Corpus.build()
    fn = TARGETS[target](corpus)
    res = FuzzResult(target)
    t_end = time.monotonic() + (seconds if seconds is not None else float("inf"))
    i = 0
    while (cases is None or i < cases) and time.monotonic() < t_end:
        res.cases += 1
        problem = run_case(fn, corpus, seed, i, res)
        if problem:
            res.failures.append(Failure(target, i, seed, *problem))
        i += 1
    return res


def _where(exc: BaseException) -> str:
    """The innermost gfvc frame of the traceback (and the innermost frame, when outside)."""
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return "?"
    ours = [f for f in tb if "/gfvc/" in f.filename and not f.filename.endswith("fuzz.py")]
    parts = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in (ours[-1:] + tb[-1:])]
    return " -> ".join(dict.fromkeys(parts))


def run_case(fn, corpus: Corpus, seed: int, i: int, res: FuzzResult) -> tuple[str, str] | None:
    """Run case ``i``; (error, where) when it failed, else None."""
    rng = np.random.default_rng([seed, i])
    rss0 = _peak_rss_mb()
    t0 = time.perf_counter()
    problem = None
    try:
        fn(rng, corpus)
    except GfvcError:
        res.refused += 1
    except Exception as exc:  # noqa: BLE001 - anything else is what we are looking for
        where = _where(exc)
        problem = (f"{type(exc).__name__}: {str(exc)[:200]}".splitlines()[0], where)
    dt = time.perf_counter() - t0
    res.seconds += dt
    res.slowest_s = max(res.slowest_s, dt)
    if problem is None and dt > SLOW_CASE_S:
        problem = (f"slow case: {dt:.1f} s", "")
    grown = _peak_rss_mb() - rss0
    if problem is None and grown > MEMORY_CASE_MB:
        problem = (f"peak memory grew by {grown:.0f} MB", "")
    return problem


__all__ = ["TARGETS", "Corpus", "FuzzResult", "mutate_bits", "mutate_bytes", "run"]
