"""Export: a .gfv file -> an HEVC/VVC Annex-B stream carrying GFV/GFVE SEI messages.

For every key unit: its key picture (as coded; re-encoded with x265 when the key frame is in
another format), then one suffix SEI with one GFV message per frame of the segment,
``gfv_cnt`` 0..N-1, the first being the base-picture message with the metadata URI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from gfvc.bitstream import KeyInfo, StreamHeader, parse_stream, read_key_payload
from gfvc.bitstream.extension import without_enhancement
from gfvc.bitstream.format import KEY, split_enhancement
from gfvc.bitstream.nal import Codec, SeiMessage, sei_nal_unit
from gfvc.bitstream.sei import (
    PAYLOAD_GFV,
    PAYLOAD_GFVE,
    Form,
    GfveMessage,
    GfvePupilGridEncoder,
    GfvGridEncoder,
    GfvMessage,
    NeuralNetworkInfo,
    SeiWriter,
)
from gfvc.errors import BitstreamError, InputError
from gfvc.interop.encoder_cfg import vtm_cfg
from gfvc.interop.grid import GridMap
from gfvc.interop.layout import (
    KEY_INFO_UUID,
    KEYFRAME_CODEC_IDS,
    SIDE_INFO_UUID,
    USER_DATA_UNREGISTERED,
    feature_fields,
    model_name,
    plan_layout,
)
from gfvc.interop.uri import NN_TAG_URI, build_uri
from gfvc.io.atomic import write_atomic
from gfvc.models.base import MotionModel

_LOSSLESS_ID = 4  # .gfv key-frame codec id of lossless WebP


@dataclass
class KeyGroup:
    """One key unit of a .gfv file and the integer state of each of its frames."""

    picture: bytes
    side: bytes = b""  # model side information of the key unit
    acc: list[np.ndarray] = field(default_factory=list)  # frame 0 = key frame
    info: KeyInfo = KeyInfo()  # why the key unit was sent, its QP


def gfv_groups(data: bytes) -> tuple[StreamHeader, list[KeyGroup]]:
    """The .gfv integers (``Decoder.trace``) per key unit, without decoding any picture."""
    from gfvc.features.entropy import decode_ints_eg, feature_coder_by_id

    parsed = parse_stream(data)
    h = parsed.header
    coder = feature_coder_by_id(h.coder_id, h.feature_dim)
    groups: list[KeyGroup] = []
    acc = None
    bank: dict[int, tuple[int, bytes, bytes, np.ndarray]] = {}  # slot: tag, picture, side, ints
    for unit in parsed.units:
        if unit[0] == KEY:
            if h.resets_at_key:
                coder.reset()
            key = read_key_payload(unit[1:], h.version, h.enhanced)
            if key.info.recall:
                # The SEI form has no bank: the recalled picture is sent again, and shown at
                # this one frame as it is (its key feature is the picture's own); the frame's
                # own motion carries on from the next frame.
                tag, picture, side, key_acc = bank.get(key.info.slot, (-1, b"", b"", acc))
                if tag != key.info.tag:
                    raise BitstreamError("recall of a reference the stream never sent")
                groups.append(
                    KeyGroup(picture, side, acc=[key_acc.copy()], info=KeyInfo(key.info.reason))
                )
                acc = key_acc + coder.decode(key.coded)
                continue
            picture, feature, side = key.picture, key.feature, key.side
            if h.key_feature_sent:
                acc = decode_ints_eg(feature, h.feature_dim, "key-frame feature")
            else:
                if feature:
                    raise BitstreamError("key-frame unit carries an unexpected key feature")
                acc = np.zeros(h.feature_dim, dtype=np.int64)
            groups.append(KeyGroup(picture, side, info=key.info))
            if key.info.reset:
                bank.clear()
            bank[key.info.slot] = (key.info.tag, picture, side, acc)
        else:
            if acc is None:
                raise BitstreamError("feature unit before any key-frame unit")
            payload = unit[1:]
            if h.enhanced:  # the SEI form has no place for the base layer: dropped
                payload = split_enhancement(payload, "feature unit")[1]
            acc = acc + coder.decode(payload)
        groups[-1].acc.append(np.asarray(acc, dtype=np.int64).copy())
    return h, groups


@dataclass
class ExportReport:
    """Where the bits of an exported stream go, against the .gfv it came from."""

    frames: int
    key_pictures: int
    codec: str
    form: str
    anchor: str
    reencoded: bool
    coordinate_precision: int
    matrix_precision: int
    exact: bool
    pupils_in_gfve: bool
    picture_bits: int
    sei_bits: int  # SEI NAL units, start codes included
    sei_payload_bits: int  # GFV + GFVE payloads only
    metadata_bits: int  # the NN tag URI and URI strings (once per key picture)
    native_feature_bits: int  # the .gfv's feature bits (key features included)
    native_overhead_bits: int  # .gfv header, segment tables, CRCs, end marker
    #: the .gfv's enhancement layer, which the SEI form cannot carry (decoded without it)
    dropped_enhancement_bits: int = 0

    @property
    def sei_bits_per_frame(self) -> float:
        return self.sei_bits / self.frames

    @property
    def sei_bits_per_frame_without_metadata(self) -> float:
        return (self.sei_bits - self.metadata_bits) / self.frames

    @property
    def native_feature_bits_per_frame(self) -> float:
        return self.native_feature_bits / self.frames

    @property
    def native_bits_per_frame(self) -> float:
        """Feature plus container bits of the .gfv, per frame (what the SEI replaces)."""
        return (self.native_feature_bits + self.native_overhead_bits) / self.frames


def _reencode_key(header: StreamHeader, picture: bytes, codec: Codec) -> tuple[bytes, str, int]:
    """Decode a key picture of another format and code it as HEVC (x265) or VVC."""
    from gfvc.keyframe import keyframe_codec, keyframe_codec_class_by_id

    src = keyframe_codec_class_by_id(header.keyframe_codec_id)
    qp = header.keyframe_qp
    rgb = src(qp=qp if src.qp_range else 32, fmt=header.keyframe_format).decode(
        picture, header.width, header.height
    )
    if codec == "hevc":
        if header.keyframe_codec_id == _LOSSLESS_ID:
            kf = keyframe_codec("x265", qp=0, fmt="rgb444", params="lossless=1")
        else:
            kf = keyframe_codec("x265", qp=min(max(qp, 0), 51), fmt=header.keyframe_format)
    else:
        kf = keyframe_codec("vvc", qp=min(max(qp, 0), 63), fmt="yuv420")
    return kf.encode(rgb), kf.fmt, kf.qp


def gfv_to_annexb(
    data: bytes,
    *,
    form: Form = "vtm",
    codec: Codec | None = None,
    pupils: bool = True,
    one_nal_per_frame: bool = False,
    anchor: Literal["key", "absolute"] = "key",
    model: MotionModel | None = None,
) -> tuple[bytes, ExportReport, list[tuple[list[GfvMessage], list[GfveMessage]]]]:
    """The Annex-B stream for the bytes of a .gfv file; also the messages per key picture.

    ``codec``: "hevc" or "vvc" (default: VVC when the key frames are VVC, else HEVC).
    ``pupils``: carry pupils (mesh) in GFVE messages rather than as GFV keypoints.
    ``anchor`` (models whose key feature is re-derived from the key frame): "key" carries
    each frame's offset from that feature, needs no model and is exact; "absolute" adds the
    feature ``model.analyse_key`` gives for the decoded key picture, so the SEI holds the
    model's actual feature values (import then needs the same model).
    """
    from gfvc.codec import stream_report

    h, groups = gfv_groups(data)
    if codec is None:
        codec = "vvc" if h.keyframe_codec_id == KEYFRAME_CODEC_IDS["vvc"] else "hevc"
    if codec not in KEYFRAME_CODEC_IDS:
        raise InputError(f"cannot export to {codec!r}; choose hevc or vvc")
    if anchor not in ("key", "absolute"):
        raise InputError("anchor must be 'key' or 'absolute'")
    if h.key_feature_sent:
        anchor = "key"  # the integers are already absolute
    elif anchor == "absolute" and model is None:
        raise InputError("exporting absolute features needs the model (its key-frame analysis)")
    reencoded = h.keyframe_codec_id != KEYFRAME_CODEC_IDS[codec]
    out_header = without_enhancement(h)  # SEI carries the generative layer only
    if reencoded:
        pics = []
        for g in groups:
            pic, fmt, qp = _reencode_key(h, g.picture, codec)
            pics.append(pic)
        for g, pic in zip(groups, pics, strict=True):
            g.picture = pic
        out_header = _replace_header(
            out_header,
            keyframe_codec_id=KEYFRAME_CODEC_IDS[codec],
            keyframe_format=fmt,
            keyframe_qp=qp,
        )
    name = model_name(h, model)
    fields = feature_fields(h, model)
    layout = plan_layout(fields, name, h.width, pupils=pupils)
    bases: list[np.ndarray | None] = [None] * len(groups)
    if anchor == "absolute":
        assert model is not None
        from gfvc.keyframe import keyframe_codec_class_by_id

        kf = keyframe_codec_class_by_id(out_header.keyframe_codec_id)(
            qp=out_header.keyframe_qp, fmt=out_header.keyframe_format
        )
        for i, g in enumerate(groups):
            model.reset()
            bases[i] = model.analyse_key(kf.decode(g.picture, h.width, h.height))
    maps = [GridMap.create(layout, h.qstep, b) for b in bases]
    if layout.pupils is not None and not _pupils_fit(maps, groups):
        layout = plan_layout(fields, name, h.width, pupils=False)
        maps = [GridMap.create(layout, h.qstep, b) for b in bases]
    p, q = maps[0].coord_precision, maps[0].matrix_precision
    uri = build_uri(out_header, layout, name, anchor, form)
    nn = NeuralNetworkInfo(mode_idc=1, tag_uri=NN_TAG_URI, uri=uri)
    writer = SeiWriter(form)
    gfv_enc = GfvGridEncoder(0)
    out = bytearray()
    sei_bits = payload_bits = picture_bits = 0
    all_msgs: list[tuple[list[GfvMessage], list[GfveMessage]]] = []
    for g, gm in zip(groups, maps, strict=True):
        out += g.picture
        picture_bits += 8 * len(g.picture)
        frames = [gm.grids(a) for a in g.acc]
        z_max = 1
        if layout.coord_dims == 3:  # the largest |z| in SEI units, rounded up (informative)
            top = max(int(np.abs(c[:, 2]).max()) for c, _, _ in frames if c is not None)
            z_max = max(1, min(65535, -(-top >> p)))
        pupil_enc = GfvePupilGridEncoder(0, 0, p) if layout.pupils is not None else None
        gfv_msgs, gfve_msgs = [], []
        sei_msgs: list[SeiMessage] = []
        nal_msgs: list[list[SeiMessage]] = []
        info = g.info.to_bytes()  # reason, QP and the bank fields (slot, tag, reset)
        sei_msgs.append(SeiMessage(USER_DATA_UNREGISTERED, KEY_INFO_UUID + info))
        if g.side:
            sei_msgs.append(SeiMessage(USER_DATA_UNREGISTERED, SIDE_INFO_UUID + g.side))
        for t, (coords, mats, pup) in enumerate(frames):
            m = gfv_enc.message(
                t,
                base=t == 0,
                coordinates=coords,
                precision=p,
                z_max=z_max,
                matrices=mats or None,
                matrix_precision=q,
                nn=nn if t == 0 else None,
            )
            gfv_msgs.append(m)
            frame_msgs = [SeiMessage(PAYLOAD_GFV, writer.gfv(m))]
            if one_nal_per_frame and t == 0 and sei_msgs:
                frame_msgs = sei_msgs + frame_msgs
                sei_msgs = []
            if pupil_enc is not None:
                assert pup is not None
                e = pupil_enc.message(t, base=t == 0, left=pup[0], right=pup[1])
                gfve_msgs.append(e)
                frame_msgs.append(SeiMessage(PAYLOAD_GFVE, writer.gfve(e)))
            payload_bits += sum(8 * len(x.payload) for x in frame_msgs)
            if one_nal_per_frame:
                nal_msgs.append(frame_msgs)
            else:
                sei_msgs += frame_msgs
        if not one_nal_per_frame:
            nal_msgs = [sei_msgs]
        for msgs in nal_msgs:
            nal = sei_nal_unit(msgs, codec)
            sei_bits += 8 * len(nal)
            out += nal
        all_msgs.append((gfv_msgs, gfve_msgs))
    native = stream_report(data)
    meta = 8 * (len(NN_TAG_URI.encode()) + len(uri.encode()) + 2) * len(groups)
    report = ExportReport(
        frames=sum(len(g.acc) for g in groups),
        key_pictures=len(groups),
        codec=codec,
        form=form,
        anchor=anchor,
        reencoded=reencoded,
        coordinate_precision=p,
        matrix_precision=q,
        exact=all(m.exact for m in maps),
        pupils_in_gfve=layout.pupils is not None,
        picture_bits=picture_bits,
        sei_bits=sei_bits,
        sei_payload_bits=payload_bits,
        metadata_bits=meta,
        native_feature_bits=native.feature_bits,
        native_overhead_bits=native.overhead_bits,
        dropped_enhancement_bits=native.enhancement_bits,
    )
    return bytes(out), report, all_msgs


def _pupils_fit(maps: Sequence[GridMap], groups: Sequence[KeyGroup]) -> bool:
    """GFVE pupil deltas are limited to 2^(P+1); check every frame before choosing GFVE."""
    for gm, g in zip(maps, groups, strict=True):
        limit = 1 << (gm.coord_precision + 1)
        prev = None
        for a in g.acc:
            pup = gm.grids(a)[2]
            assert pup is not None
            left, right = pup[0], pup[1]
            if prev is None:
                deltas = [left, right - left]
            else:
                deltas = [left - prev[0], right - prev[1]]
            if max(int(np.abs(d).max()) for d in deltas) > limit:
                return False
            prev = (left, right)
    return True


def _replace_header(h: StreamHeader, **changes) -> StreamHeader:
    from dataclasses import replace

    return replace(h, **changes)


def export_stream(
    gfv_path: str | Path,
    out_path: str | Path,
    form: Form = "vtm",
    cfg_path: str | Path | None = None,
    *,
    codec: Codec | None = None,
    pupils: bool = True,
    one_nal_per_frame: bool = False,
    anchor: Literal["key", "absolute"] = "key",
    model: MotionModel | None = None,
) -> ExportReport:
    """``gfvc export``: a .gfv file -> an HEVC (.265) or VVC (.266) Annex-B stream.

    The codec follows ``codec``, else the output suffix (.266/.vvc: VVC), else HEVC.
    ``cfg_path`` also writes the equivalent VTM/HM configuration (see ``vtm_cfg``).
    """
    from gfvc.codec import read_stream

    data = read_stream(gfv_path)
    if codec is None:
        codec = "vvc" if Path(out_path).suffix.lower() in (".266", ".vvc", ".h266") else "hevc"
    stream, report, msgs = gfv_to_annexb(
        data,
        form=form,
        codec=codec,
        pupils=pupils,
        one_nal_per_frame=one_nal_per_frame,
        anchor=anchor,
        model=model,
    )
    write_atomic(out_path, stream)
    if cfg_path is not None:
        gfv_msgs, gfve_msgs = msgs[0]
        write_atomic(
            cfg_path, vtm_cfg(gfv_msgs, gfve_msgs, form=form, extra_pictures=len(msgs) - 1).encode()
        )
    return report
