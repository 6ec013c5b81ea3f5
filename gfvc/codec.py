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

import math
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from gfvc import DEFAULT_MODEL
from gfvc.bitstream import (
    FEATURE,
    KEY,
    ParsedStream,
    SegmentPacker,
    StreamHeader,
    is_packet,
    iter_units,
    open_packet,
    pack_key_payload,
    pack_packet,
    pack_recall_payload,
    parse_stream,
    unit_type,
)
from gfvc.bitstream.extension import (
    EnhancementInfo,
    enhancement_info,
    with_enhancement,
    with_no_face_spans,
)
from gfvc.bitstream.format import (
    FPS_RANGE,
    KEY_PACKET,
    PACKET_HEADER,
    QP_UNKNOWN,
    QSTEP_RANGE,
    KeyInfo,
    KeyUnit,
    join_enhancement,
    read_key_payload,
    split_enhancement,
    stored_qstep,
)
from gfvc.control.bank import Reference, ReferenceBank
from gfvc.control.rate import KBPS_RANGE, FirstPass, RateController
from gfvc.control.watch import REASON, Watch, WatchSettings
from gfvc.enhance import (
    ENHANCE_FLOOR_KBPS,
    BaseLayerEncoder,
    BaseLayerSettings,
    EnhancementDecoder,
    LayerPlan,
    fusion_for,
    plan_layers,
)
from gfvc.enhance.fovea import GAIN_BY_BASE_SIZE, Fovea, fovea_for
from gfvc.errors import (
    BitstreamError,
    CheckpointError,
    GfvcError,
    InputError,
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

MAX_GOP = 1_000_000  # frames between periodic key frames
#: Key frames that empty the reference bank: entry points for a receiver that knows nothing.
BANK_RESETS = ("start", "request", "gop")
#: Watch triggers a reference already in the bank may answer (instead of a new key frame).
RECALLABLE = ("cut", "face-found", "drift", "expression", "lighting")
#: Watch triggers that wait for the budget when no bank reference can answer them (a cut or a
#: face found again never waits: a wrong face must not stay on screen).
BUDGETED = ("drift", "expression", "lighting")


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
    The first frame is a key frame, and so is the first after every ``gop`` frames, after
    ``request_refresh()`` (a receiver's back channel asking to resynchronise), and whenever
    the encoder's watch (``gfvc.control.watch``) sees that the receiver's rendering cannot
    serve the frame (a cut, another person, the face found again, a lighting change, an
    expression far from the key frame). Every key frame is a random-access point: all
    adaptive state starts over there.

    ``kbps`` turns on rate control (``gfvc.control.rate``): key-frame QP, refresh period and
    feature precision follow a budget of ``kbps`` per second; ``burst_s`` caps a key frame at
    that many seconds of the budget (live calls). Without it, key frames use the codec's QP.

    ``encode_frame`` returns the live *packet* (sequence number and CRC-16 included, for a
    transport of its own); ``encode_unit`` returns the bare unit a .gfv file stores. State
    changes only once a frame has been fully coded: a failure leaves the encoder as it was.
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
        kbps: float | None = None,
        burst_s: float | None = None,
        watch: bool | WatchSettings = True,
        expected_frames: int | None = None,
        base_layer: BaseLayerSettings | bool | None = None,
        first_pass: FirstPass | None = None,
    ) -> None:
        check_gop(gop)
        model.begin_stream()  # nothing from a stream this model coded before carries over
        self.model = model
        self.keyframe = keyframe
        self.qstep = check_qstep(model.default_qstep if qstep is None else qstep)
        self.coder = feature_coder(coder, model.dim)
        self.deadzone = check_deadzone(model.default_deadzone if deadzone is None else deadzone)
        if not 1 <= segment_units <= 255:
            raise InputError(f"segment size must be 1..255 units, got {segment_units}")
        self.gop = gop
        fps = check_fps(fps)
        self.plan, base = _layer_plan(model, kbps, base_layer)
        self.burst_s = burst_s
        self.rate = (
            None
            if kbps is None
            else _rate_controller(
                kbps, fps, keyframe, burst_s, expected_frames, model.dim, first_pass
            )
        )
        if self.rate is not None and self.plan.base_kbps:
            self.rate.base_bits = _base_bits_guess(self.plan.base_kbps, fps)
        # a base size the encoder samples uniformly sends no map (streams as before maps)
        foveated = base is not None and GAIN_BY_BASE_SIZE[base.size] > 0
        self._base = (
            None
            if base is None
            else BaseLayerEncoder(
                base.size, qp=base.qp, kbps=base.kbps, fps=float(fps), foveated=foveated
            )
        )
        if self.rate is not None:
            self.rate.deadzone = self.deadzone
        self.watch = None
        if watch:
            self.watch = Watch(watch if isinstance(watch, WatchSettings) else None)
        self.header = StreamHeader(
            model_id=model.model_id,
            model_hash=model.config_hash(),
            width=model.size,
            height=model.size,
            fps=fps,
            qstep=self.qstep,
            coder_id=self.coder.coder_id,
            keyframe_codec_id=keyframe.codec_id,
            keyframe_format=keyframe.fmt,
            keyframe_qp=keyframe.qp,
            key_feature_sent=model.send_key_feature,
            feature_dim=model.dim,
            segment_units=segment_units,
        )
        if base is not None:
            info = EnhancementInfo(base.size, fusion_for(base).hash, foveated=foveated)
            self.header = with_enhancement(self.header, info)
        self.frame_index = 0
        #: (frame index, reason, QP, picture bits) of every key frame sent
        self.keys: list[tuple[int, str, int, int]] = []
        self._since_key = 0
        self._refresh = False
        self._predictor: ClosedLoopPredictor | None = None
        self._key: tuple[np.ndarray, np.ndarray] | None = None  # decoded key frame, feature
        self.bank = ReferenceBank()
        #: (frame index, reason, slot) of every recall sent
        self.recalls: list[tuple[int, str, int]] = []
        #: Integer state after each frame, kept only when ``trace`` is set (tests, drift checks).
        self.trace: list[np.ndarray] | None = None

    def request_refresh(self, reason: str = "request") -> None:
        """Make the next frame a key frame (a receiver lost or damaged a unit; or, with
        ``reason`` "cut" / "face-found", the input's crop had to jump)."""
        if reason not in REASON:
            raise InputError(f"unknown key-frame reason {reason!r}")
        self._refresh = reason

    def set_kbps(self, kbps: float) -> None:
        """Change the target rate mid-stream (a live call's bandwidth estimate moved).

        Starts rate control when the encoder had none (from the next frame on, with the
        ``burst_s`` given at construction); the stream header is unaffected, so a receiver
        never needs to know."""
        self._check_open()
        kbps = check_kbps(kbps)
        if self.rate is None:
            fps = self.header.fps
            self.rate = _rate_controller(
                kbps, fps, self.keyframe, self.burst_s, None, self.model.dim
            )
            self.rate.deadzone = self.deadzone
        else:
            self.rate.retarget(kbps)
        if self._base is not None and self._base.kbps is not None:
            # the header fixed the base layer's size; its share follows from the next key on
            base_kbps = plan_layers(kbps).base_kbps or ENHANCE_FLOOR_KBPS
            self._base.set_target(kbps=BASE_AIM * base_kbps)
            self.rate.base_bits = _base_bits_guess(base_kbps, self.header.fps)

    def skip(self, frames: int = 1) -> None:
        """``frames`` captured frames were dropped before coding (a live sender that fell
        behind): rate control counts their time, so the budget keeps to the wall clock.
        Packet sequence numbers stay contiguous: a drop is not a loss."""
        self._check_open()
        if frames < 0:
            raise InputError(f"cannot skip {frames} frames")
        if self.rate is not None:
            self.rate.skipped(frames)

    def encode_frame(self, frame: np.ndarray) -> bytes:
        """Code one frame; returns its live packet (``gfvc.bitstream.open_packet``)."""
        packet = pack_packet(self.encode_unit(frame), self.frame_index - 1)
        if self.rate is not None:  # the packet's sequence number and CRC count too
            self.rate.spend(8 * PACKET_HEADER - 8)
        return packet

    def encode_unit(self, frame: np.ndarray, feature: np.ndarray | None = None) -> bytes:
        """Code one frame; returns its unit (type byte + payload), as a .gfv file stores it.

        ``feature`` (motion transfer, ``gfvc.animate``): code this feature vector instead of
        the frame's own analysis, unless the frame becomes a key frame."""
        self._check_open()
        _check_frame(frame, self.model.size)
        reason = self._scheduled_key()
        q = None
        if reason is None:
            assert self._predictor is not None
            deadzone = self.rate.deadzone if self.rate is not None else self.deadzone
            if feature is None:
                feature = self.model.analyse(frame)
            elif np.shape(feature) != (self.model.dim,):
                raise InputError(f"feature must have {self.model.dim} values")
            q = self._predictor.residual(feature, deadzone)
            reason = self._watch(frame, q)
        recall = self._recall(frame, reason, feature) if reason in RECALLABLE else None
        if recall is None and reason in BUDGETED and not self._key_affordable():
            reason = None  # a refresh the budget cannot pay for now (a recall it always can)
        if recall is not None:
            unit, base = self._recall_unit(frame, reason, *recall)  # type: ignore[arg-type]
            self._refresh = False  # a requested "cut" / "face-found" is answered too
        elif reason is not None:
            base = self._base_picture(frame, key=True)  # the base layer restarts (IDR)
            unit, predictor, key, ref, info = self._key_unit(frame, reason, base)
            # commit: everything adaptive starts over at a key frame
            self._predictor, self._key = predictor, key
            self.bank.store(info.slot, ref, info.reset)
            self.coder.reset()
            self._refresh = False
            self._since_key = 0
            if self.watch is not None:
                self.watch.key(frame)
        else:
            assert self._predictor is not None and q is not None
            coded = self.coder.encode(q, commit=False)
            base = self._base_picture(frame)
            unit = bytes([FEATURE]) + (coded if base is None else join_enhancement(base, coded))
            self._predictor.update(q)
            self.coder.update(q)
        if self.rate is not None:
            base_bits = 0 if base is None else 8 * len(base)
            self.rate.after_base(base_bits)
            if reason is not None and recall is None:
                self.rate.after_key(8 * (len(unit) - 1) - base_bits)
            else:
                self.rate.after_feature(8 * (len(unit) - 1) - base_bits)
        self._since_key += 1
        self.frame_index += 1
        if self.trace is not None:
            self.trace.append(self._predictor.acc.copy())
        return unit

    def first_pass(self) -> FirstPass:
        """What this encoder's stream says to a second pass over the same input."""
        keys = tuple((k[0], k[1]) for k in self.keys)
        inter = () if self.rate is None else tuple(self.rate.inter)
        return FirstPass(keys, self.frame_index, inter)

    def _base_picture(self, frame: np.ndarray, key: bool = False) -> bytes | None:
        """This frame's base-layer picture (None for a stream without the layer). A key
        picture's sampling map centres on this frame's eyes and mouth (the standard map
        without a face); analysing here is free of side effects, as the key unit coded
        next resets the model's trackers."""
        if self._base is None:
            return None
        fovea = self._fovea(frame) if key and self._base.foveated else None
        return self._base.encode(frame, restart=key, fovea=fovea)

    def _fovea(self, frame: np.ndarray) -> Fovea:
        size = self._base.size  # type: ignore[union-attr]
        self.model.analyse(frame)
        return fovea_for(self.model.eyes_and_mouth(), self.model.size, size)

    def _scheduled_key(self) -> str | None:
        """Why this frame must be a key frame whatever it shows, or None."""
        if self._predictor is None:
            return "start"
        if self._refresh:
            return self._refresh if isinstance(self._refresh, str) else "request"
        if self.gop is not None and self._since_key >= self.gop:
            return "gop"
        if self.rate is not None:
            return self.rate.due()
        return None

    def _watch(self, frame: np.ndarray, q: np.ndarray) -> str | None:
        """Render what the receiver will see from ``q`` and say whether it can serve."""
        if self.watch is None:
            return None
        rendered = regions = None
        beyond = False
        if (
            self.model.cheap_preview
            and self.model.tracking
            and self._key is not None
            and self.watch.needs_rendering(frame)
        ):
            feature = self._predictor.peek(q)  # type: ignore[union-attr]
            rendered, regions = self.model.preview(*self._key, feature)
            beyond = self.model.eyes_beyond_reference()
        score = self.watch.score(frame, rendered, regions, self.model.tracking, beyond)
        return self.watch.check(score)

    def _key_affordable(self) -> bool:
        """The budget has room for a new key frame now (always, without rate control)."""
        return self.rate is None or self.rate.allows_key()

    def _recall(
        self, frame: np.ndarray, reason: str, feature: np.ndarray | None = None
    ) -> tuple[int, Reference, ClosedLoopPredictor, np.ndarray] | None:
        """A bank reference (other than the current one) that renders ``frame`` well enough
        to answer the watch's trigger: its slot, itself, its predictor and the residual; or
        None (a new key frame is needed). Rendered as the decoder will, at trigger time only."""
        if self.watch is None or not self.model.cheap_preview:
            return None
        current = self._key[0] if self._key is not None else None
        others = [
            (s, r)
            for s, r in self.bank.items()
            if r.key_frame is not None and r.key_frame is not current
        ]
        if not others:
            return None
        if feature is None or reason in ("cut", "face-found"):
            # as for a key frame: the tracker forgets the frames before the cut (the same
            # face going on, the frame's own analysis stands)
            self.model.reset()
            feature = self.model.analyse(frame)
        if not self.model.tracking:
            return None
        deadzone = self.rate.deadzone if self.rate is not None else self.deadzone
        best = None
        for slot, ref in others:
            predictor = ref.predictor()
            q = predictor.residual(feature, deadzone)
            self.model.load_key_side_info(ref.side, ref.key_feature)
            rendered, regions = self.model.preview(
                ref.key_frame, ref.key_feature, predictor.peek(q)
            )
            beyond = self.model.eyes_beyond_reference()
            err = self.watch.serves(frame, rendered, regions, ref.brightness, beyond)
            if err is not None and (best is None or err < best[0]):
                best = (err, slot, ref, predictor, q)
        if best is None:
            return None  # the key frame that follows loads its own side information
        _, slot, ref, predictor, q = best
        self.model.load_key_side_info(ref.side, ref.key_feature)
        return slot, ref, predictor, q

    def _recall_unit(
        self,
        frame: np.ndarray,
        reason: str,
        slot: int,
        ref: Reference,
        predictor: ClosedLoopPredictor,
        q: np.ndarray,
    ) -> tuple[bytes, bytes | None]:
        """Code and commit a recall of ``ref``: its unit and the base picture it carries."""
        coder = type(self.coder)(self.coder.dim)  # the coder starts over, as at a key frame
        coded = coder.encode(q, commit=False)
        base = self._base_picture(frame)  # the base layer goes on: a recall is no entry point
        info = KeyInfo(REASON[reason], QP_UNKNOWN, slot=slot, tag=ref.tag, reset=False, recall=True)
        unit = bytes([KEY]) + pack_recall_payload(info, coded, enhancement=base)
        coder.update(q)
        predictor.update(q)
        self.coder, self._predictor = coder, predictor
        self._key = (ref.key_frame, ref.key_feature)  # type: ignore[assignment]
        self.bank.touch(slot)
        self.recalls.append((self.frame_index, reason, slot))
        self.watch.recalled(frame, ref.brightness)  # type: ignore[union-attr]
        return unit, base

    def _key_unit(
        self, frame: np.ndarray, reason: str, base: bytes | None = None
    ) -> tuple[bytes, ClosedLoopPredictor, tuple[np.ndarray, np.ndarray], Reference, KeyInfo]:
        """The key unit (carrying the base layer's IDR picture ``base``, whose bits the key
        picture's QP search counts), the predictor, the decoded key frame and feature, and
        the bank reference it becomes with its key info (slot, tag)."""
        chunk_bytes = 0 if base is None else len(base) + 2
        self.model.reset()  # trackers and filters forget the frames before the key
        size = self.model.size
        if self.model.send_key_feature:
            # Analysed on the original: the same detector state as every later frame.
            ints = quantize(self.model.analyse(frame), self.qstep)
            predictor = ClosedLoopPredictor.from_ints(ints, self.qstep)
            feature = encode_ints_eg(ints)
            key_feature = check_feature(predictor.reconstruction, self.model, "key-frame feature")
            side = self.model.key_side_info(key_feature)
            picture, qp = self._key_picture(frame, 8 * (len(feature) + len(side) + chunk_bytes + 8))
            decoded = None
        else:
            # Reference semantics: both sides re-derive it from the decoded key frame.
            picture, qp = self._key_picture(frame, 8 * chunk_bytes)
            decoded = self.keyframe.decode(picture, size, size)
            predictor = ClosedLoopPredictor.from_float(self.model.analyse_key(decoded), self.qstep)
            feature = b""
            key_feature = check_feature(predictor.reconstruction, self.model, "key-frame feature")
            side = self.model.key_side_info(key_feature)
        if self.watch is not None and self.model.cheap_preview:
            # the encoder renders as the decoder will: same picture, feature, side information
            if decoded is None:
                decoded = self.keyframe.decode(picture, size, size)
            self.model.load_key_side_info(side, key_feature)
        reset = reason in BANK_RESETS
        reason = "periodic" if reason == "gop" else reason
        slot, tag = self.bank.slot_for_key(reset), self.bank.next_tag
        info = KeyInfo(REASON[reason], min(qp, QP_UNKNOWN), slot=slot, tag=tag, reset=reset)
        self.keys.append((self.frame_index, reason, qp, 8 * len(picture)))
        unit = bytes([KEY]) + pack_key_payload(picture, feature, side, info, enhancement=base)
        brightness = None if self.watch is None else self.watch.brightness(frame)
        ref = Reference(tag, decoded, key_feature, predictor, side, brightness=brightness)
        return unit, predictor, (decoded, key_feature), ref, info  # type: ignore[return-value]

    def _key_picture(self, frame: np.ndarray, other_bits: int) -> tuple[bytes, int]:
        """The key picture and its QP: the codec's, or the rate controller's choice for what
        the budget leaves after ``other_bits`` (key feature, side information, framing)."""
        if self.rate is None:
            return self.keyframe.encode(frame), self.keyframe.qp
        plan = self.rate.choose_key(lambda qp: self._keyframe_at(qp).encode(frame), other_bits)
        return plan.picture, plan.qp

    def _keyframe_at(self, qp: int) -> KeyframeCodec:
        kf = self.keyframe
        return type(kf)(qp=qp, fmt=kf.fmt, **kf.options)


#: Share of its planned rate the base layer's x265 aims at.
BASE_AIM = 0.9


def _base_bits_guess(base_kbps: float, fps: Fraction) -> float:
    """What the rate controller expects a base picture to cost until it has measured some:
    the base's whole share, though x265 is asked for ``BASE_AIM`` of it. Reserving only that
    gave the first key frame more (12 kbps on vr_1 spent 10.65 kbps instead of 9.74) but left
    the key frames at later cuts in debt: on the hard case at 16 kbps identity 0.320 -> 0.344,
    landmark distance 1.33 -> 1.44 (docs/enhance.md)."""
    return 1000 * base_kbps / float(fps)


def _layer_plan(
    model: MotionModel, kbps: float | None, base_layer: BaseLayerSettings | bool | None
) -> tuple[LayerPlan, BaseLayerSettings | None]:
    """How ``kbps`` splits between the generative layer and the base layer, and the base
    layer's settings (None: no base layer). ``base_layer``: explicit settings, False for
    the generative layer only, None to let the rate decide (models trained for fusion)."""
    if isinstance(base_layer, BaseLayerSettings):
        if not model.fusion_ready:
            raise InputError(f"the {model.name} model has no enhancement layer (landmark has)")
        if kbps is not None:
            raise InputError("--kbps plans the base layer itself: drop --base-size/--base-qp")
        return LayerPlan(0.0, base_layer.size), base_layer
    if kbps is None or base_layer is False or not model.fusion_ready:
        return LayerPlan(kbps or 0.0), None
    plan = plan_layers(kbps)
    if plan.base_size is None:
        return plan, None
    # x265's rate control overshoots at these rates (+5 % on 10 s clips, more with the IDR
    # at each key unit); aiming a little low leaves the key frames room to absorb the rest
    return plan, BaseLayerSettings(plan.base_size, kbps=BASE_AIM * plan.base_kbps)


def _rate_controller(
    kbps: float,
    fps: Fraction,
    keyframe: KeyframeCodec,
    burst_s: float | None,
    frames: int | None,
    dim: int,
    first_pass: FirstPass | None = None,
) -> RateController:
    check_kbps(kbps)
    if burst_s is not None and not 0.05 <= burst_s <= 600:
        raise InputError(f"burst_s must be in 0.05..600 seconds, got {burst_s}")
    if keyframe.qp_range is None:
        raise InputError(f"--kbps needs a key-frame codec with a QP; {keyframe.name} has none")
    return RateController(
        kbps,
        float(fps),
        keyframe.qp_range,
        burst_s=burst_s,
        expected_frames=frames,
        fixed_bits=8 * (48 + 9),  # header and end marker of a file
        # about 1.1 bits per value and frame on real talking heads (landmark: 28 values, 31-40
        # bits), plus ~3 bits of segment framing
        feature_bits_guess=1.1 * dim + 3,
        first_pass=first_pass,
    )


@dataclass
class Received:
    """What a live receiver shows for one packet (``Decoder.receive``)."""

    #: The frame to show: this packet's picture, or the last good one held (None before any).
    frame: np.ndarray | None
    #: True when ``frame`` is this packet's own decoded picture.
    decoded: bool
    #: True while the decoder waits for a key frame: send the encoder a refresh request.
    needs_refresh: bool
    #: Why the packet was not shown ('' when it was).
    problem: str = ""


class Decoder(_Closable):
    """Frame-by-frame GFVC decoder; build it from the stream header.

    ``decode_unit`` takes units or live packets and raises ``BitstreamError`` on anything
    wrong; ``receive`` takes live packets and never raises for damage: it holds the last
    good frame and asks for a refresh until the next key frame. Decoding may start at any
    key unit (format version 2). State changes only once a unit has been fully decoded.
    """

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
        if not model.match_stream(header.model_hash):
            raise CheckpointError(
                f"the {model.name!r} model here differs from the one that coded the bitstream "
                "(configuration or weights hash mismatch): pass the same --checkpoint/--config"
            )
        if model.dim != header.feature_dim:
            raise BitstreamError(
                f"header says {header.feature_dim} features per frame, model has {model.dim}"
            )
        if model.size != header.width or header.width != header.height:
            raise BitstreamError(
                f"header says {header.width}x{header.height} frames, model codes {model.size}"
            )
        self.model = model
        try:
            self.keyframe = keyframe_codec_class_by_id(header.keyframe_codec_id)(
                qp=header.keyframe_qp, fmt=header.keyframe_format
            )
        except GfvcError as e:  # out-of-range QP, unknown codec id, format it cannot code
            raise BitstreamError(f"corrupt bitstream header ({e})") from None
        self.coder = feature_coder_by_id(header.coder_id, model.dim)
        self.enhancement = _enhancement_decoder(header, model)
        self._predictor: ClosedLoopPredictor | None = None
        self._key_frame: np.ndarray | None = None
        self._key_feature: np.ndarray | None = None
        self.bank = ReferenceBank()
        self._side = b""  # the current reference's side information
        self._next_seq: int | None = None
        self._waiting = False  # receive(): a unit was lost or damaged, wait for a key
        self._last: np.ndarray | None = None
        self.trace: list[np.ndarray] | None = None
        #: Frames decoded so far (since this decoder started; the next frame's index).
        self.frame_index = 0
        #: Receiver-side change of what is shown (``gfvc.edit``): (frame index, decoded
        #: feature) -> the feature to render. The coded state never sees it; a key frame whose
        #: feature it changes is rendered from the key instead of shown as decoded.
        self.edit: Callable[[int, np.ndarray], np.ndarray] | None = None

    @property
    def needs_refresh(self) -> bool:
        """True while ``receive`` waits for a key frame after a loss or damage."""
        return self._waiting

    def receive(self, packet: bytes) -> Received:
        """Live reception: decode ``packet`` if it can be decoded exactly, else hold."""
        self._check_open()
        if not is_packet(packet):  # a bare unit has no check: never trust it on a live link
            self._waiting = True
            return Received(self._last, False, True, "not a gfvc packet")
        if self._waiting and packet[0] != KEY_PACKET:
            return Received(self._last, False, True, "waiting for a key frame")
        try:
            frame = self.decode_unit(packet)
        except BitstreamError as e:
            self._waiting = True
            return Received(self._last, False, True, str(e))
        self._waiting = False
        self._last = frame
        return Received(frame, True, False)

    def decode_unit(self, data: bytes) -> np.ndarray:
        """Decode one unit or live packet into a (size, size, 3) uint8 frame."""
        self._check_open()
        seq = None
        if is_packet(data):
            data, seq = open_packet(data)
        kind = unit_type(data)
        if kind == FEATURE:
            if self._predictor is None:
                raise BitstreamError("feature unit before any key-frame unit")
            if seq is not None and self._next_seq is not None and seq != self._next_seq:
                lost = (seq - self._next_seq) & 0xFFFF
                raise BitstreamError(f"{lost} unit(s) missing before packet {seq}")
            frame = self._decode_feature(data[1:])
        else:
            frame = self._decode_key(data[1:])
        self._next_seq = None if seq is None else (seq + 1) & 0xFFFF
        self.frame_index += 1
        if self.trace is not None:
            self.trace.append(self._predictor.acc.copy())  # type: ignore[union-attr]
        return frame

    def prime(self, unit: bytes) -> None:
        """Decode an earlier key unit only to fill the reference bank (random access into a
        version-4 stream: ``bank_primers``); nothing is shown and no frame counted."""
        self._check_open()
        if unit_type(unit) != KEY:
            raise BitstreamError("only key units fill the reference bank")
        self._decode_key(unit[1:])

    def _decode_feature(self, payload: bytes) -> np.ndarray:
        assert self._predictor is not None
        chunk = None
        if self.enhancement is not None:
            chunk, payload = split_enhancement(payload, "feature unit")
        q = self.coder.decode(payload, commit=False)
        feature = check_feature(self._predictor.peek(q), self.model, "feature unit")
        frame = self._show(self._key_frame, self._key_feature, feature, chunk)
        self.coder.update(q)  # commit only now: a failure above leaves the decoder as it was
        self._predictor.update(q)
        return frame

    def _show(self, key_frame, key_feature, feature: np.ndarray, chunk: bytes | None) -> np.ndarray:
        """The frame animated from the reference (fused with the base picture ``chunk`` on
        streams with the enhancement layer), after the receiver's edit if any."""
        edited = self.edit is not None
        if edited:
            feature = self.edit(self.frame_index, feature)  # type: ignore[misc]
        if chunk is None:
            return self._synthesize(key_frame, key_feature, feature)
        if edited:  # the base shows the camera, not the edit: the generative layer alone
            frame = self._synthesize(key_frame, key_feature, feature)
            self.enhancement.base.decode(chunk)  # type: ignore[union-attr]
            return frame
        # the base picture decodes last: it is the one step that changes state
        guided = self.enhancement.guided  # type: ignore[union-attr]
        warped, guide = self._render(
            partial(self.model.fusion_inputs, guide=guided), key_frame, key_feature, feature
        )
        if guided and guide is None:
            raise BitstreamError(f"the {self.model.name} model has no fusion guide")
        return self.enhancement.frame(chunk, warped, guide)  # type: ignore[union-attr]

    def _decode_recall(self, key: KeyUnit) -> np.ndarray:
        """A recall unit: animate a bank reference again, from the feature it carries."""
        ref = self.bank.get(key.info.slot, key.info.tag)
        coder = type(self.coder)(self.coder.dim)  # the coder starts over, as at a key frame
        q = coder.decode(key.coded, commit=False)
        predictor = ref.predictor()
        feature = check_feature(predictor.peek(q), self.model, "recall unit")
        self.model.load_key_side_info(ref.side, ref.key_feature)
        try:
            frame = self._show(ref.key_frame, ref.key_feature, feature, key.enhancement or None)
        except BitstreamError:  # the current reference stays in place
            if self._key_feature is not None:
                self.model.load_key_side_info(self._side, self._key_feature)
            raise
        coder.update(q)
        predictor.update(q)
        self.model.reset()
        self.coder, self._predictor, self._side = coder, predictor, ref.side
        self._key_frame, self._key_feature = ref.key_frame, ref.key_feature
        self.bank.touch(key.info.slot)
        return frame

    def _decode_key(self, payload: bytes) -> np.ndarray:
        size = self.model.size
        key = read_key_payload(payload, self.header.version, self.header.enhanced)
        if key.info.recall:
            return self._decode_recall(key)
        picture, feature, side = key.picture, key.feature, key.side
        frame = self.keyframe.decode(picture, size, size)
        if frame.shape != (size, size, 3):
            raise BitstreamError(f"key-frame picture is {frame.shape}, expected {size}x{size}")
        qstep = self.header.qstep
        if self.header.key_feature_sent:
            ints = decode_ints_eg(feature, self.model.dim, "key-frame feature")
            predictor = ClosedLoopPredictor.from_ints(ints, qstep)
        else:
            if feature:
                raise BitstreamError("key-frame unit carries unexpected feature bytes")
            predictor = ClosedLoopPredictor.from_float(self.model.analyse_key(frame), qstep)
        key_feature = check_feature(predictor.reconstruction, self.model, "key-frame feature")
        self.model.load_key_side_info(side, key_feature)
        if self.enhancement is not None:  # the base stream restarts (last step that may fail)
            self.enhancement.key(key.enhancement)
        # commit: everything adaptive starts over at a key frame
        self.model.reset()
        if self.header.resets_at_key:
            self.coder.reset()
        self._predictor = predictor
        self._key_frame = frame
        self._key_feature = key_feature
        self._side = side
        if self.header.has_bank:
            ref = Reference(key.info.tag, frame, key_feature, predictor, side)
            self.bank.store(key.info.slot, ref, key.info.reset)
        if self.edit is not None:
            shown = self.edit(self.frame_index, key_feature)
            if not np.array_equal(shown, key_feature):
                return self._synthesize(frame, key_feature, shown)
        return frame

    def _synthesize(self, key_frame, key_feature, feature) -> np.ndarray:
        return self._render(self.model.synthesize, key_frame, key_feature, feature)

    def _render(self, how: Callable, key_frame, key_feature, feature: np.ndarray) -> Any:
        """``how(key_frame, key_feature, feature)``; a unit the model cannot render (a
        degenerate warp) is corrupt."""
        try:
            return how(key_frame, key_feature, feature)
        except (np.linalg.LinAlgError, FloatingPointError, OverflowError) as e:
            raise BitstreamError(
                f"corrupt feature unit: the {self.model.name} model cannot render it ({e})"
            ) from None


def _enhancement_decoder(header: StreamHeader, model: MotionModel) -> EnhancementDecoder | None:
    """The decoder of a stream's enhancement layer (None without one); refuses fusion
    weights other than the encoder's."""
    info = enhancement_info(header)
    if info is None:
        return None
    if not model.fusion_ready:
        raise BitstreamError(f"the {model.name} model has no enhancement layer")
    return EnhancementDecoder(info.size, info.foveated, info.fusion_hash)


def check_feature(feature: np.ndarray, model: MotionModel, what: str) -> np.ndarray:
    """``feature`` if it is finite and within the model's range, else BitstreamError."""
    bound = model.max_abs_feature
    if not np.all(np.isfinite(feature)) or np.max(np.abs(feature), initial=0) > bound:
        raise BitstreamError(
            f"corrupt {what}: it reconstructs to values beyond the {model.name} model's "
            f"range (|value| <= {bound:g})"
        )
    return feature


def check_qstep(qstep: float) -> float:
    """``qstep`` checked and rounded through the header's float32, so both sides use the
    same number."""
    lo, hi = QSTEP_RANGE
    try:
        q = float(qstep)
    except (TypeError, ValueError):
        raise InputError(f"--qstep must be a number in {lo:g}..{hi:g}, got {qstep!r}") from None
    if not (math.isfinite(q) and lo <= q <= hi):
        raise InputError(f"--qstep must be in {lo:g}..{hi:g}, got {qstep}")
    return stored_qstep(q)


def check_gop(gop: int | None) -> None:
    if gop is not None and not 1 <= gop <= MAX_GOP:
        raise InputError(f"--gop must be in 1..{MAX_GOP} frames, got {gop}")


def check_deadzone(deadzone: float) -> float:
    if not 0.5 <= deadzone < 2:
        raise InputError(f"--deadzone must be in [0.5, 2) quantization steps, got {deadzone}")
    return float(deadzone)


def check_kbps(kbps: float) -> float:
    lo, hi = KBPS_RANGE
    if not lo <= kbps <= hi:
        raise InputError(f"--kbps must be in {lo:g}..{hi:g}, got {kbps}")
    return float(kbps)


def check_device(device: str) -> str:
    """A torch device this machine has: cpu, cuda or cuda:N (mps where present)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"--device must be cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is available here; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("--device mps: Apple's Metal backend is not available here")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    return device


def check_fps(fps: Fraction | str | float) -> Fraction:
    """A frame rate the header can store, from a number or a string such as 30000/1001."""
    lo, hi = FPS_RANGE
    try:
        f = Fraction(fps).limit_denominator(65535)
    except (TypeError, ValueError, ZeroDivisionError):
        raise InputError(f"--fps must be a number such as 25 or 30000/1001, got {fps!r}") from None
    if not lo <= f <= hi:
        raise InputError(f"--fps must be in {float(lo):g}..{hi}, got {fps}")
    return f


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
    face: int = 0  # which face to follow: 0 the largest at the start, 1 the next ...
    raw_size: tuple[int, int] | None = None  # for .rgb/.yuv input
    fps: Fraction | None = None  # override, mainly for raw input
    kbps: float | None = None  # target rate (None: fixed key-frame QP)
    watch: bool = True  # new key frames when the receiver's rendering cannot serve
    base_size: int | None = None  # enhancement layer at a fixed QP: base picture side
    base_qp: int | None = None  # ... and its x265 QP
    base_layer: bool = True  # False: --kbps keeps to the generative layer at every rate
    two_pass: bool = True  # --kbps on a file of known length: a first pass sizes key frames

    def __post_init__(self) -> None:
        if self.qstep is not None:
            self.qstep = check_qstep(self.qstep)
        if self.fps is not None:
            self.fps = check_fps(self.fps)
        check_gop(self.gop)
        if self.deadzone is not None:
            check_deadzone(self.deadzone)
        check_device(self.device)
        if self.kbps is not None:
            check_kbps(self.kbps)
        if self.kbps is not None and self.qp is not None:
            raise InputError("--kbps chooses the key-frame QP itself: drop --qp")
        if (self.base_size is None) != (self.base_qp is None):
            raise InputError("a fixed-QP base layer needs both --base-size and --base-qp")
        if self.base_size is not None and self.kbps is not None:
            raise InputError("--kbps plans the base layer itself: drop --base-size/--base-qp")
        if self.coder not in FEATURE_CODERS:
            raise InputError(
                f"unknown feature coder {self.coder!r}; choose one of: {', '.join(FEATURE_CODERS)}"
            )
        if not 0 <= self.face <= 64:
            raise InputError(f"--face must be 0 (the largest face) .. 64, got {self.face}")
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
    enhancement_bits: int = 0  # the enhancement layer's base pictures

    @property
    def kbps(self) -> float:
        return self.total_bits / self.frames * float(self.fps) / 1000


def build_model(name: str, *, checkpoint=None, config=None, device="cpu", size=256) -> MotionModel:
    return model_class(name).create(checkpoint=checkpoint, config=config, device=device, size=size)


class FramePreparer:
    """Reads a video and yields model-sized face crops that follow the face.

    With cropping on, a first pass over the input (streamed) tracks the subject
    (``gfvc.io.track``): ``track`` then holds a stabilised crop per frame, the frames where
    the crop jumps or the face is lost or found (``refresh_at``: the encoder makes those key
    frames) and the spans without a face. The second pass crops. Nothing but a few numbers per
    frame is kept, so memory does not grow with the length of the input.
    """

    def __init__(self, path: str | Path, settings: EncodeSettings) -> None:
        from gfvc.io import VideoReader

        self.path = Path(path)
        self.settings = settings
        self.reader = VideoReader(path, size=settings.raw_size, fps=settings.fps)
        self.fps = Fraction(settings.fps or self.reader.info.fps)
        self._track = None

    @property
    def frames(self) -> int | None:
        """How many frames this will yield, when the container says (else None)."""
        known = self.reader.info.frames or None
        if self.settings.frames is None:
            return known
        return self.settings.frames if known is None else min(known, self.settings.frames)

    def _frames(self) -> Iterator[np.ndarray]:
        n = self.settings.frames
        frames = iter(self.reader)
        return frames if n is None else (f for _, f in zip(range(n), frames, strict=False))

    @property
    def track(self):  # -> gfvc.io.track.FaceTrack | None
        """The face track (first pass, run on first use); None without cropping."""
        from gfvc.io.track import track_face

        s = self.settings
        if s.crop and self._track is None:
            self._track = track_face(
                self._frames(), float(self.fps), face=s.face, size=s.size, source=str(self.path)
            )
        return self._track

    @property
    def refresh_at(self) -> dict[int, str]:
        """Frames that must be key frames, with why: the crop jumps ("cut"), the face is
        found ("face-found"), lost or not seen for a while ("request")."""
        t = self.track
        return dict(t.refresh_reasons) if t is not None else {}

    @property
    def no_face_spans(self) -> list[tuple[int, int]]:
        t = self.track
        return list(t.lost) if t is not None else []

    def prime(self, enc: Encoder) -> None:
        """Prepare ``enc`` for the track: when the video starts without a face, its model
        meets the face first seen, so the faceless key frames have a face to hold; the file
        header lists the spans without a face."""
        t = self.track
        if t is None:
            return
        if t.lost and t.lost[0][0] == 0 and t.first_face_crop is not None:
            enc.model.analyse(t.first_face_crop)
            enc.model.reset()
        enc.header = with_no_face_spans(enc.header, t.lost)

    def __iter__(self) -> Iterator[np.ndarray]:
        from gfvc.io import crop_and_resize

        s = self.settings
        track = self.track
        n = 0
        for i, f in enumerate(self._frames()):
            box = track.boxes[i] if track is not None and i < track.frames else None
            if track is not None and i >= track.frames:
                box = track.boxes[-1]  # the input grew between the passes: hold
            yield crop_and_resize(f, box, s.size)
            n += 1
        if n == 0:
            raise InputError(f"{self.path} has no frames")

    def close(self) -> None:
        self.reader.close()


def stream_chunks(
    enc: Encoder,
    frames: Iterable[np.ndarray | tuple[np.ndarray, np.ndarray | None]],
    progress: Callable[[int], None] | None = None,
    refresh_at: Container[int] = (),
) -> Iterator[bytes]:
    """The bytes of a .gfv file, piece by piece, as ``enc`` codes ``frames`` (or (frame,
    feature) pairs: ``Encoder.encode_unit``); the frames numbered in ``refresh_at`` become
    key frames."""
    packer = SegmentPacker(enc.header.segment_units)
    yield enc.header.to_bytes()
    reasons = refresh_at if isinstance(refresh_at, Mapping) else {}
    for i, item in enumerate(frames):
        if i in refresh_at:
            enc.request_refresh(reasons.get(i, "request"))
        frame, feature = item if isinstance(item, tuple) else (item, None)
        yield packer.add(enc.encode_unit(frame, feature))
        if progress:
            progress(1)
    if packer.frames < 2:
        raise InputError(
            f"the input has only {packer.frames} frame; GFVC needs at least 2 "
            "(a key frame and one frame to animate)"
        )
    yield packer.finish()


def make_encoder(
    s: EncodeSettings,
    fps: Fraction,
    model: MotionModel | None = None,
    frames: int | None = None,
    first_pass: FirstPass | None = None,
) -> Encoder:
    """The encoder ``s`` describes; ``frames`` (when known) lets rate control plan the end,
    and ``first_pass`` (from ``first_pass``) share the key budget between the key frames."""
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
        kbps=s.kbps,
        watch=s.watch,
        expected_frames=frames,
        base_layer=settings_base_layer(s),
        first_pass=first_pass,
    )


def first_pass(
    s: EncodeSettings,
    fps: Fraction,
    model: MotionModel,
    frames: Iterable[np.ndarray],
    count: int | None,
    refresh_at: Container[int] = (),
    progress: Callable[[float], None] | None = None,
    prime: Callable[[Encoder], None] | None = None,
) -> FirstPass | None:
    """Code ``frames`` once and discard the bits, for what rate control learns from it
    (``gfvc.control.rate.FirstPass``). None where a second pass gains nothing: no target
    rate, ``two_pass`` off, or an input of unknown length (a live stream or a pipe).
    ``progress`` counts each frame as half a frame (``halves``)."""
    if s.kbps is None or not s.two_pass or count is None:
        return None
    enc = make_encoder(s, fps, model, count)
    enc.rate.budget_refreshes = False  # type: ignore[union-attr]  # decided again in pass 2
    if prime is not None:
        prime(enc)
    for _ in stream_chunks(enc, frames, halves(progress), refresh_at):
        pass
    return enc.first_pass()


def halves(progress: Callable[[float], None] | None) -> Callable[[float], None] | None:
    """A progress callback that counts each frame of a two-pass encode as half a frame."""
    return None if progress is None else (lambda n: progress(n / 2))


def settings_base_layer(s: EncodeSettings) -> BaseLayerSettings | bool | None:
    """The ``base_layer`` argument of ``Encoder`` that ``s`` describes."""
    if s.base_size is not None:
        return BaseLayerSettings(s.base_size, qp=s.base_qp)
    return None if s.base_layer else False


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
    """Code prepared (cropped, model-sized) frames into the bytes of a .gfv file, in memory
    (in two passes with a target rate, when ``frames`` is a list)."""
    s = settings or EncodeSettings()
    n = len(frames) if isinstance(frames, list) else None
    model = model or build_model(
        s.model, checkpoint=s.checkpoint, config=s.config, device=s.device, size=s.size
    )
    plan = first_pass(s, fps, model, frames, n)
    enc = make_encoder(s, fps, model, n, plan)
    return b"".join(stream_chunks(enc, frames))


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
        n = prep.frames
        plan = first_pass(s, prep.fps, model, prep, n, prep.refresh_at, progress, prep.prime)
        enc = make_encoder(s, prep.fps, model, n, plan)
        prep.prime(enc)
        tick = progress if plan is None else halves(progress)
        with AtomicFile(dst) as out:
            for chunk in stream_chunks(enc, prep, tick, prep.refresh_at):
                out.write(chunk)
    finally:
        prep.close()
    return stream_report(Path(dst).read_bytes())


def stream_report(data: bytes) -> EncodeReport:
    """Where every bit of a .gfv file goes (verifies the whole file on the way)."""
    parsed = parse_stream(data)
    key_bits = feat_bits = enh_bits = 0
    enhanced = parsed.header.enhanced
    for unit in parsed.units:
        if unit[0] == KEY:
            key = read_key_payload(unit[1:], parsed.header.version, enhanced)
            key_bits += 8 * len(key.picture)
            feat_bits += 8 * (len(key.feature) + len(key.side) + len(key.coded))
            enh_bits += 8 * len(key.enhancement)
        elif enhanced:
            chunk, rest = split_enhancement(unit[1:], "feature unit")
            feat_bits += 8 * len(rest)
            enh_bits += 8 * len(chunk)
        else:
            feat_bits += 8 * (len(unit) - 1)
    total = 8 * len(data)
    return EncodeReport(
        frames=parsed.frames,
        fps=parsed.header.fps,
        total_bits=total,
        keyframe_bits=key_bits,
        feature_bits=feat_bits,
        overhead_bits=total - key_bits - feat_bits - enh_bits,
        enhancement_bits=enh_bits,
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
    from_key: int = 0,
    audio_from: str | Path | None = None,
) -> int:
    """Decode a .gfv file (a path, or its bytes) into a video (format from ``dst``'s
    extension), starting at key frame ``from_key``, with the audio of ``audio_from`` (a
    container output only). Returns the number of frames written."""
    from gfvc.io import VideoWriter

    check_device(device)
    data = src if isinstance(src, bytes) else read_stream(src)
    # Verify the whole file before writing anything, so corruption never yields a video.
    parsed = parse_stream(data)
    h = parsed.header
    start = key_unit_index(parsed, from_key)
    units = parsed.units[start:]
    opts = {"checkpoint": checkpoint, "config": config, "device": device}
    with (
        Decoder(h, **opts) as dec,
        VideoWriter(dst, fps=h.fps, width=h.width, height=h.height, audio_from=audio_from) as out,
    ):
        for i in bank_primers(parsed, start):
            dec.prime(parsed.units[i])
        for unit in units:
            out.write(dec.decode_unit(unit))
            if progress:
                progress(1)
    return len(units)


def entry_points(parsed: ParsedStream) -> list[int]:
    """Indices of the key units (recall units, which carry no picture, are not)."""
    h = parsed.header
    return [
        i
        for i, u in enumerate(parsed.units)
        if u[0] == KEY and not (h.has_bank and KeyInfo.parse(u[1:], h.version)[0].recall)
    ]


def bank_primers(parsed: ParsedStream, start: int) -> list[int]:
    """The key units before unit ``start`` that filled the reference bank a decoder starting
    there needs (from the last key that emptied the bank): ``Decoder.prime`` takes them."""
    h = parsed.header
    if not h.has_bank:
        return []
    before = [i for i in entry_points(parsed) if i <= start]
    resets = [i for i in before if KeyInfo.parse(parsed.units[i][1:], h.version)[0].reset]
    first = resets[-1] if resets else start
    return [i for i in before if first <= i < start]


def key_unit_index(parsed: ParsedStream, n: int) -> int:
    """Index of the unit of key frame ``n`` (0 = the first), where decoding can start."""
    keys = entry_points(parsed)
    if not 0 <= n < len(keys):
        raise InputError(
            f"--from-key must be in 0..{len(keys) - 1}: the stream has {len(keys)} key frame(s), got {n}"
        )
    if n and not parsed.header.resets_at_key:
        raise InputError(
            f"this stream is in format version {parsed.header.version}, whose key frames are "
            "not entry points: decode it from the start (re-encode it for random access)"
        )
    return keys[n]


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
