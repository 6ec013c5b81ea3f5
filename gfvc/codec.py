"""Streaming GFVC encoder and decoder, and the file-level encode/decode built on them.

One unit per frame::

    Encoder.encode_frame(frame) -> unit bytes         Decoder.decode_unit(unit) -> frame
      key frame:  keyframe codec picture (+ key feature as integers when the model sends it)
      later:      closed-loop residual of the model's feature, quantized and entropy coded

``Encoder.header`` / ``Decoder(header)`` carry what both sides must agree on. A video call
sends the header once and then units over its own transport; ``encode_file`` and
``decode_file`` put the same units in a .gfv file (``gfvc.bitstream``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from itertools import chain
from pathlib import Path

import numpy as np

from gfvc import DEFAULT_MODEL
from gfvc.bitstream import (
    FEATURE,
    KEY,
    SegmentPacker,
    StreamHeader,
    iter_units,
    pack_key_payload,
    parse_stream,
    unit_type,
    unpack_key_payload,
)
from gfvc.errors import (
    BitstreamError,
    CheckpointError,
    GfvcError,
    InputError,
    NoFaceError,
)
from gfvc.features.entropy import (
    FEATURE_CODERS,
    decode_ints_eg,
    encode_ints_eg,
    feature_coder,
    feature_coder_by_id,
)
from gfvc.features.quant import ClosedLoopPredictor, quantize
from gfvc.io.atomic import AtomicFile
from gfvc.keyframe import KeyframeCodec, keyframe_codec, keyframe_codec_class_by_id
from gfvc.models import MotionModel, model_class, model_class_by_id

CROP_SCAN_FRAMES = 50  # frames looked at to place the face crop


# ----------------------------------------------------------------------------- streaming


class _Closable:
    _closed = False

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise GfvcError(f"{type(self).__name__} is closed")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Encoder(_Closable):
    """Frame-by-frame GFVC encoder.

    ``frame`` arrays are (size, size, 3) uint8 RGB, already cropped (see ``FramePreparer``).
    The first frame, and every ``gop``-th after it, is a key frame.
    """

    def __init__(
        self,
        model: MotionModel,
        keyframe: KeyframeCodec,
        *,
        qstep: float | None = None,
        coder: str = "range",
        fps: Fraction = Fraction(25),
        gop: int | None = None,
        segment_units: int = 128,
        deadzone: float | None = None,
    ) -> None:
        if gop is not None and gop < 1:
            raise InputError("--gop must be at least 1")
        self.model = model
        self.keyframe = keyframe
        self.qstep = float(qstep if qstep is not None else model.default_qstep)
        if not self.qstep > 0:
            raise InputError(f"--qstep must be positive, got {qstep}")
        self.coder = feature_coder(coder, model.dim)
        self.deadzone = float(model.default_deadzone if deadzone is None else deadzone)
        if not 0.5 <= self.deadzone < 2:
            raise InputError(f"--deadzone must be in [0.5, 2) quantization steps, got {deadzone}")
        self.gop = gop
        self.header = StreamHeader(
            model_id=model.model_id,
            model_hash=model.config_hash(),
            width=model.size,
            height=model.size,
            fps=Fraction(fps),
            qstep=self.qstep,
            coder_id=self.coder.coder_id,
            keyframe_codec_id=keyframe.codec_id,
            keyframe_format=keyframe.fmt,
            keyframe_qp=keyframe.qp,
            key_feature_sent=model.send_key_feature,
            feature_dim=model.dim,
            segment_units=segment_units,
        )
        self.frame_index = 0
        self._predictor: ClosedLoopPredictor | None = None
        #: Integer state after each frame, kept only when ``trace`` is set (tests, drift checks).
        self.trace: list[np.ndarray] | None = None

    def encode_frame(self, frame: np.ndarray) -> bytes:
        """Code one frame; returns its unit (type byte + payload)."""
        self._check_open()
        _check_frame(frame, self.model.size)
        key = self._predictor is None or (self.gop is not None and self.frame_index % self.gop == 0)
        unit = self._key_unit(frame) if key else self._feature_unit(frame)
        self.frame_index += 1
        if self.trace is not None:
            self.trace.append(self._predictor.acc.copy())  # type: ignore[union-attr]
        return unit

    def _key_unit(self, frame: np.ndarray) -> bytes:
        picture = self.keyframe.encode(frame)
        if self.model.send_key_feature:
            # Analysed on the original: the same detector state as every later frame.
            ints = quantize(self.model.analyse(frame), self.qstep)
            self._predictor = ClosedLoopPredictor.from_ints(ints, self.qstep)
            feature = encode_ints_eg(ints)
        else:
            # Reference semantics: both sides re-derive it from the decoded key frame.
            decoded = self.keyframe.decode(picture, self.model.size, self.model.size)
            self._predictor = ClosedLoopPredictor.from_float(
                self.model.analyse_key(decoded), self.qstep
            )
            feature = b""
        side = self.model.key_side_info(self._predictor.reconstruction)
        return bytes([KEY]) + pack_key_payload(picture, feature, side)

    def _feature_unit(self, frame: np.ndarray) -> bytes:
        assert self._predictor is not None
        q = self._predictor.residual(self.model.analyse(frame), self.deadzone)
        self._predictor.update(q)
        return bytes([FEATURE]) + self.coder.encode(q)


class Decoder(_Closable):
    """Frame-by-frame GFVC decoder; build it from the stream header."""

    def __init__(
        self, header: StreamHeader | bytes, model: MotionModel | None = None, **model_options
    ) -> None:
        if isinstance(header, bytes | bytearray):
            header, _ = StreamHeader.parse(bytes(header))
        self.header = header
        if model is None:
            cls = model_class_by_id(header.model_id)
            model = cls.create(size=header.width, **model_options)
        if model.model_id != header.model_id:
            raise InputError(
                f"bitstream was coded with model id {header.model_id}, not {model.name!r}"
            )
        if model.config_hash() != header.model_hash:
            raise CheckpointError(
                f"the {model.name!r} model here differs from the one that coded the bitstream "
                "(configuration or weights hash mismatch): pass the same --checkpoint/--config"
            )
        if model.dim != header.feature_dim:
            raise BitstreamError(
                f"header says {header.feature_dim} features per frame, model has {model.dim}"
            )
        self.model = model
        self.keyframe = keyframe_codec_class_by_id(header.keyframe_codec_id)(
            qp=header.keyframe_qp, fmt=header.keyframe_format
        )
        self.coder = feature_coder_by_id(header.coder_id, model.dim)
        self._predictor: ClosedLoopPredictor | None = None
        self._key_frame: np.ndarray | None = None
        self._key_feature: np.ndarray | None = None
        self.trace: list[np.ndarray] | None = None

    def decode_unit(self, unit: bytes) -> np.ndarray:
        """Decode one unit into a (size, size, 3) uint8 frame."""
        self._check_open()
        kind = unit_type(unit)
        if kind == KEY:
            frame = self._decode_key(unit[1:])
        else:
            if self._predictor is None:
                raise BitstreamError("feature unit before any key-frame unit")
            q = self.coder.decode(unit[1:])
            feature = self._predictor.update(q)
            frame = self.model.synthesize(self._key_frame, self._key_feature, feature)
        if self.trace is not None:
            self.trace.append(self._predictor.acc.copy())  # type: ignore[union-attr]
        return frame

    def _decode_key(self, payload: bytes) -> np.ndarray:
        size = self.model.size
        picture, feature, side = unpack_key_payload(payload)
        frame = self.keyframe.decode(picture, size, size)
        qstep = self.header.qstep
        if self.header.key_feature_sent:
            ints = decode_ints_eg(feature, self.model.dim, "key-frame feature")
            self._predictor = ClosedLoopPredictor.from_ints(ints, qstep)
        else:
            if feature:
                raise BitstreamError("key-frame unit carries unexpected feature bytes")
            self._predictor = ClosedLoopPredictor.from_float(self.model.analyse_key(frame), qstep)
        self._key_frame = frame
        self._key_feature = self._predictor.reconstruction
        self.model.reset()
        self.model.load_key_side_info(side, self._key_feature)
        return frame


def _check_frame(frame: np.ndarray, size: int) -> None:
    if (
        not isinstance(frame, np.ndarray)
        or frame.dtype != np.uint8
        or frame.shape != (size, size, 3)
    ):
        got = getattr(frame, "shape", type(frame).__name__)
        raise InputError(f"frames must be ({size}, {size}, 3) uint8 RGB arrays, got {got}")


# ----------------------------------------------------------------------------- files


@dataclass
class EncodeSettings:
    """What ``gfvc encode`` can set; defaults are the built-in default configuration."""

    model: str = DEFAULT_MODEL
    checkpoint: str | None = None
    config: str | None = None
    qstep: float | None = None
    qp: int | None = None  # None: the key-frame codec's default
    keyframe_codec: str | None = None  # None: the model's default
    deadzone: float | None = None  # None: the model's default
    keyframe_format: str = "yuv420"
    coder: str = "range"
    frames: int | None = None
    size: int = 256
    crop: bool = True
    gop: int | None = None
    device: str = "cpu"
    raw_size: tuple[int, int] | None = None  # for .rgb/.yuv input
    fps: Fraction | None = None  # override, mainly for raw input

    def __post_init__(self) -> None:
        if self.coder not in FEATURE_CODERS:
            raise InputError(
                f"unknown feature coder {self.coder!r}; choose one of: {', '.join(FEATURE_CODERS)}"
            )
        if self.frames is not None and self.frames < 2:
            raise InputError("--frames must be at least 2 (a key frame and one frame to animate)")
        if not 64 <= self.size <= 1024 or self.size % 2:
            raise InputError(
                f"--size must be an even number of pixels between 64 and 1024, got {self.size}"
            )


@dataclass
class EncodeReport:
    frames: int
    fps: Fraction
    total_bits: int
    keyframe_bits: int
    feature_bits: int
    overhead_bits: int

    @property
    def kbps(self) -> float:
        return self.total_bits / self.frames * float(self.fps) / 1000


def build_model(name: str, *, checkpoint=None, config=None, device="cpu", size=256) -> MotionModel:
    return model_class(name).create(checkpoint=checkpoint, config=config, device=device, size=size)


class FramePreparer:
    """Reads a video and yields model-sized face crops, one stable crop for the sequence."""

    def __init__(self, path: str | Path, settings: EncodeSettings) -> None:
        from gfvc.io import VideoReader

        self.path = Path(path)
        self.settings = settings
        self.reader = VideoReader(path, size=settings.raw_size, fps=settings.fps)
        self.fps = Fraction(settings.fps or self.reader.info.fps)

    def __iter__(self) -> Iterator[np.ndarray]:
        from gfvc.io import crop_and_resize, find_face_crop

        s = self.settings
        frames: Iterable[np.ndarray] = iter(self.reader)
        if s.frames is not None:
            frames = (f for _, f in zip(range(s.frames), frames, strict=False))
        frames = iter(frames)
        head = [f for _, f in zip(range(CROP_SCAN_FRAMES), frames, strict=False)]
        if not head:
            raise InputError(f"{self.path} has no frames")
        try:
            box = find_face_crop(head) if s.crop else None
        except NoFaceError:
            raise NoFaceError(
                f"no face found in the first {len(head)} frames of {self.path}; "
                "if the video is already a face crop, pass --no-crop"
            ) from None
        for f in chain(head, frames):
            yield crop_and_resize(f, box, s.size)

    def close(self) -> None:
        self.reader.close()


def stream_chunks(
    enc: Encoder, frames: Iterable[np.ndarray], progress: Callable[[int], None] | None = None
) -> Iterator[bytes]:
    """The bytes of a .gfv file, piece by piece, as ``enc`` codes ``frames``."""
    packer = SegmentPacker(enc.header.segment_units)
    yield enc.header.to_bytes()
    for frame in frames:
        yield packer.add(enc.encode_frame(frame))
        if progress:
            progress(1)
    if packer.frames < 2:
        raise InputError(
            f"the input has only {packer.frames} frame; GFVC needs at least 2 "
            "(a key frame and one frame to animate)"
        )
    yield packer.finish()


def make_encoder(s: EncodeSettings, fps: Fraction, model: MotionModel | None = None) -> Encoder:
    model = model or build_model(
        s.model, checkpoint=s.checkpoint, config=s.config, device=s.device, size=s.size
    )
    return Encoder(
        model,
        settings_keyframe(s, model),
        qstep=s.qstep,
        coder=s.coder,
        fps=fps,
        gop=s.gop,
        deadzone=s.deadzone,
    )


def settings_keyframe(s: EncodeSettings, model: MotionModel) -> KeyframeCodec:
    """The key-frame codec ``s`` asks for; unset codec and QP fall back to the model's and
    the codec's defaults."""
    name = s.keyframe_codec or model.default_keyframe_codec
    return keyframe_codec(name, qp=s.qp, fmt=s.keyframe_format)


def encode_frames(
    frames: Iterable[np.ndarray],
    settings: EncodeSettings | None = None,
    fps: Fraction = Fraction(25),
    *,
    model: MotionModel | None = None,
) -> bytes:
    """Code prepared (cropped, model-sized) frames into the bytes of a .gfv file, in memory."""
    return b"".join(stream_chunks(make_encoder(settings or EncodeSettings(), fps, model), frames))


def decode_frames(
    data: bytes, model: MotionModel | None = None, **model_options
) -> Iterator[np.ndarray]:
    """Decode the bytes of a .gfv file (verified whole first) frame by frame."""
    parsed = parse_stream(data)
    with Decoder(parsed.header, model, **model_options) as dec:
        for unit in parsed.units:
            yield dec.decode_unit(unit)


def encode_file(
    src: str | Path,
    dst: str | Path,
    settings: EncodeSettings | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> EncodeReport:
    """Encode a video file into one .gfv file (written atomically)."""
    s = settings or EncodeSettings()
    model = build_model(
        s.model, checkpoint=s.checkpoint, config=s.config, device=s.device, size=s.size
    )
    prep = FramePreparer(src, s)
    try:
        enc = make_encoder(s, prep.fps, model)
        with AtomicFile(dst) as out:
            for chunk in stream_chunks(enc, prep, progress):
                out.write(chunk)
    finally:
        prep.close()
    return stream_report(Path(dst).read_bytes())


def stream_report(data: bytes) -> EncodeReport:
    """Where every bit of a .gfv file goes (verifies the whole file on the way)."""
    parsed = parse_stream(data)
    key_bits = feat_bits = 0
    for unit in parsed.units:
        if unit[0] == KEY:
            picture, feature, side = unpack_key_payload(unit[1:])
            key_bits += 8 * len(picture)
            feat_bits += 8 * (len(feature) + len(side))
        else:
            feat_bits += 8 * (len(unit) - 1)
    total = 8 * len(data)
    return EncodeReport(
        frames=parsed.frames,
        fps=parsed.header.fps,
        total_bits=total,
        keyframe_bits=key_bits,
        feature_bits=feat_bits,
        overhead_bits=total - key_bits - feat_bits,
    )


def read_stream(path: str | Path) -> bytes:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p} does not exist")
    if p.is_dir():
        raise InputError(f"{p} is a folder, not a .gfv file")
    return p.read_bytes()


def decode_file(
    src: str | Path | bytes,
    dst: str | Path,
    *,
    checkpoint: str | None = None,
    config: str | None = None,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> int:
    """Decode a .gfv file (a path, or its bytes) into a video (format from ``dst``'s
    extension). Returns the number of frames."""
    from gfvc.io import VideoWriter

    data = src if isinstance(src, bytes) else read_stream(src)
    # Verify the whole file before writing anything, so corruption never yields a video.
    parsed = parse_stream(data)
    h = parsed.header
    opts = {"checkpoint": checkpoint, "config": config, "device": device}
    with (
        Decoder(h, **opts) as dec,
        VideoWriter(dst, fps=h.fps, width=h.width, height=h.height) as out,
    ):
        for unit in parsed.units:
            out.write(dec.decode_unit(unit))
            if progress:
                progress(1)
    return parsed.frames


__all__ = [
    "Decoder",
    "EncodeReport",
    "EncodeSettings",
    "Encoder",
    "FramePreparer",
    "decode_file",
    "decode_frames",
    "encode_file",
    "encode_frames",
    "iter_units",
    "stream_report",
]
