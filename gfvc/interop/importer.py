"""Import: an HEVC/VVC Annex-B stream with GFV/GFVE SEI messages -> a .gfv file.

Streams gfvc wrote describe themselves (metadata URI); streams of other encoders (VTM/HM)
need the model their features belong to. ``read_any`` lets ``gfvc decode`` take either a
.gfv file or such a stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from gfvc.bitstream import StreamHeader
from gfvc.bitstream.format import FEATURE, KEY, KeyInfo, SegmentPacker, pack_key_payload
from gfvc.bitstream.nal import (
    Codec,
    SeiMessage,
    detect_codec,
    is_annexb,
    parse_sei_rbsp,
    sei_nal_unit,
    split_nal_units,
)
from gfvc.bitstream.sei import (
    PAYLOAD_GFV,
    PAYLOAD_GFVE,
    Form,
    GfveValues,
    GfvValues,
    ReservedIdError,
    SeiReader,
)
from gfvc.errors import BitstreamError, GfvcError, InputError
from gfvc.interop.grid import GridMap
from gfvc.interop.layout import (
    KEY_INFO_UUID,
    KEYFRAME_CODEC_IDS,
    SIDE_INFO_UUID,
    USER_DATA_UNREGISTERED,
    SeiLayout,
    plan_layout,
)
from gfvc.interop.uri import UriInfo, parse_uri
from gfvc.io.atomic import write_atomic
from gfvc.models.base import MotionModel


@dataclass
class PictureGroup:
    """One key picture of an Annex-B stream and the GFV/GFVE values that follow it."""

    picture: bytes
    side: bytes = b""  # gfvc key-unit side information (user_data_unregistered)
    info: KeyInfo | None = None  # gfvc key-unit info (user_data_unregistered), if sent
    gfv: list[GfvValues] = field(default_factory=list)
    gfve: dict[int, GfveValues] = field(default_factory=dict)  # by gfve_gfv_cnt


@dataclass
class ImportReport:
    frames: int
    key_pictures: int
    codec: str
    form: str
    foreign: bool  # written by something other than gfvc (no gfvc NN URI)
    ignored_messages: int  # reserved-id messages, ignored as the semantics require
    dropped_nal_units: int  # NAL units after the last GFV group (extra pictures, EOS)


def read_annexb(
    data: bytes, form: Form = "vtm", hint: str | None = None
) -> tuple[Codec, list[PictureGroup], int, int]:
    """Split an Annex-B stream into key pictures and their parsed GFV/GFVE messages.

    Returns (codec, groups, ignored reserved-id messages, dropped trailing NAL units).
    Other SEI messages sharing a NAL unit with GFV messages stay with the picture.
    """
    codec = detect_codec(data, hint)
    nals = split_nal_units(data, codec)
    reader = SeiReader(form)
    groups: list[PictureGroup] = []
    pic = bytearray()
    current: PictureGroup | None = None
    ignored = 0
    pending_nals = 0
    for nal in nals:
        raw = nal.raw(data)
        msgs: list[SeiMessage] = []
        if nal.is_suffix_sei or nal.is_prefix_sei:
            msgs = parse_sei_rbsp(nal.rbsp(data), f"SEI NAL unit at byte {nal.start}")
        ours = [m for m in msgs if _is_ours(m)]
        if not ours and current is not None and nal.is_suffix_sei:
            current.picture += raw  # another suffix SEI of the same access unit
            continue
        if not ours:
            if current is not None:  # the next access unit begins
                groups.append(current)
                current = None
                pic = bytearray()
                pending_nals = 0
            pic += raw
            pending_nals += 1
            continue
        if nal.is_prefix_sei:
            raise BitstreamError(
                f"GFV/GFVE messages in a prefix SEI NAL unit at byte {nal.start}; they are suffix SEI"
            )
        if current is None:
            if not pic:
                raise BitstreamError("GFV SEI before any coded picture")
            current = PictureGroup(bytes(pic))
        others = [m for m in msgs if not _is_ours(m)]
        if others:  # keep the other messages with the picture
            current.picture += sei_nal_unit(
                others, codec, suffix=True, layer_id=nal.layer_id, temporal_id=nal.temporal_id
            )
        for m in ours:
            if m.payload_type == USER_DATA_UNREGISTERED:
                if current.gfv:
                    raise BitstreamError(
                        "gfvc key side information after the picture's GFV messages"
                    )
                if m.payload[:16] == KEY_INFO_UUID:
                    if len(m.payload) not in (18, 21):  # 18: written before the bank
                        raise BitstreamError("gfvc key info SEI of the wrong size")
                    current.info = KeyInfo.parse(m.payload[16:], 4 if len(m.payload) == 21 else 2)[
                        0
                    ]
                    if current.info.recall:
                        raise BitstreamError("gfvc key info SEI marks a picture as a recall")
                else:
                    current.side += m.payload[16:]
                continue
            try:
                if m.payload_type == PAYLOAD_GFV:
                    current.gfv.append(reader.gfv(m.payload))
                else:
                    v = reader.gfve(m.payload)
                    current.gfve[v.message.gfv_cnt] = v
            except ReservedIdError:
                ignored += 1
    if current is not None:
        groups.append(current)
        pending_nals = 0
    if not groups:
        raise BitstreamError("no GFV SEI messages in this stream: nothing to animate")
    return codec, groups, ignored, pending_nals


def _is_ours(m: SeiMessage) -> bool:
    if m.payload_type == USER_DATA_UNREGISTERED:
        return m.payload[:16] in (SIDE_INFO_UUID, KEY_INFO_UUID)
    return m.payload_type in (PAYLOAD_GFV, PAYLOAD_GFVE)


def annexb_to_gfv(
    data: bytes,
    *,
    form: Form | None = None,
    hint: str | None = None,
    model: MotionModel | str | None = None,
    qstep: float | None = None,
    coder: str = "range",
    fps: Fraction | None = None,
) -> tuple[bytes, ImportReport]:
    """The bytes of a .gfv file for an Annex-B stream with GFV SEI messages.

    Streams gfvc wrote describe themselves (NN URI). For other streams (VTM/HM output)
    give ``model``; ``qstep`` defaults to the one that keeps every SEI value exact.
    ``form`` None tries VTM then HM syntax.
    """
    if not is_annexb(data):
        raise InputError("not an Annex-B HEVC/VVC stream")
    f, (codec, groups, ignored, dropped) = _read_any_form(data, form, hint)
    info = _stream_uri(groups)
    if info is not None:
        header, layout, grid_for = _own_stream(info, groups, model)
        foreign = False
    else:
        header, layout, grid_for = _foreign_stream(groups, codec, model, qstep, coder, fps)
        foreign = True
    packer = SegmentPacker(header.segment_units)
    from gfvc.features.entropy import encode_ints_eg, feature_coder_by_id

    fcoder = feature_coder_by_id(header.coder_id, header.feature_dim)
    chunks = [header.to_bytes()]
    frames = 0
    for gi, g in enumerate(groups):
        if not g.gfv:
            raise BitstreamError(f"key picture {gi} is followed by no GFV messages")
        if not g.gfv[0].message.base_picture:
            raise BitstreamError(
                f"the first GFV message after key picture {gi} is not a base-picture message"
            )
        try:
            gm = grid_for(gi, g)
        except (IndexError, ValueError) as exc:
            if isinstance(exc, GfvcError):
                raise
            raise BitstreamError(
                f"the SEI messages do not fit the feature layout ({exc})"
            ) from None
        accs = _group_accs(g, gm, strict=not foreign and gm.exact)
        feature = encode_ints_eg(accs[0]) if header.key_feature_sent else b""
        if not header.key_feature_sent and not foreign and np.any(accs[0]):
            raise BitstreamError("the base message of a key-relative stream must carry zeros")
        info = g.info or KeyInfo(0 if gi == 0 else 2)  # foreign streams: start / refresh
        key = pack_key_payload(g.picture, feature, g.side, info)
        chunks.append(packer.add(bytes([KEY]) + key))
        fcoder.reset()  # every key frame is an entry point
        for prev, cur in zip(accs, accs[1:], strict=False):
            chunks.append(packer.add(bytes([FEATURE]) + fcoder.encode(cur - prev)))
        frames += len(accs)
    if frames < 2:
        raise BitstreamError("the stream carries a single frame; a .gfv needs at least 2")
    chunks.append(packer.finish())
    report = ImportReport(
        frames=frames,
        key_pictures=len(groups),
        codec=codec,
        form=f,
        foreign=foreign,
        ignored_messages=ignored,
        dropped_nal_units=dropped,
    )
    return b"".join(chunks), report


def _read_any_form(data: bytes, form: Form | None, hint: str | None):
    """Parse with ``form``; or VTM, then HM when VTM fails or the gfvc URI says HM."""
    if form is not None:
        return form, read_annexb(data, form, hint)
    try:
        res = read_annexb(data, "vtm", hint)
    except BitstreamError as exc:
        try:
            return "hm", read_annexb(data, "hm", hint)
        except BitstreamError:
            raise exc from None
    info = _stream_uri(res[1])
    if info is not None and info.form == "hm":
        return "hm", read_annexb(data, "hm", hint)
    return "vtm", res


def _stream_uri(groups: Sequence[PictureGroup]) -> UriInfo | None:
    g = groups[0]
    if not g.gfv or not g.gfv[0].message.base_picture:
        raise BitstreamError(
            "the first GFV message of a picture must be a base-picture message (gfv_cnt 0)"
        )
    nn = g.gfv[0].message.nn
    return parse_uri(nn.uri) if nn is not None and nn.mode_idc == 1 else None


def _group_accs(g: PictureGroup, gm: GridMap, strict: bool) -> list[np.ndarray]:
    accs = []
    pupils = None
    for t, v in enumerate(g.gfv):
        if v.message.cnt != t:
            raise BitstreamError(
                f"GFV messages after a picture must have gfv_cnt 0, 1, 2, ...; found {v.message.cnt} at position {t}"
            )
        if gm.layout.pupils is not None:
            e = g.gfve.get(t)
            if e is not None and e.pupils is not None:
                pupils = e.pupils
            elif t == 0:
                raise BitstreamError("no GFVE pupil coordinates for the base picture (gfv_cnt 0)")
            # a frame without a GFVE message keeps the previous pupils
        accs.append(gm.acc_from_values(v.coordinates, v.matrices, pupils, strict))
    return accs


def _own_stream(info: UriInfo, groups: Sequence[PictureGroup], model: MotionModel | str | None):
    """Header and layout of a gfvc-written stream, from its NN URI."""
    h = info.header
    try:
        layout = plan_layout(info.fields, info.model_name, h.width, pupils=info.pupils is not None)
    except InputError as exc:
        raise BitstreamError(f"gfvc NN URI describes an impossible layout ({exc})") from None
    layout = _replace_layout(layout, coord_scale=info.coord_scale, coord_offset=info.coord_offset)
    if (layout.pupils is None) != (info.pupils is None) or (
        layout.pupils is not None and (layout.pupils[1], layout.pupils[2]) != info.pupils
    ):
        raise BitstreamError("the pupil rows in the gfvc NN URI do not match the model's layout")
    absolute = info.anchor == "absolute"
    mdl = None
    if absolute:
        mdl = _resolve_model(model, h.width)
        if mdl is None:
            raise InputError(
                "this stream carries absolute features of a model that re-derives its key "
                "feature; pass the same model to import it"
            )

    def grid_for(gi: int, g: PictureGroup) -> GridMap:
        p, q = _precisions(g)
        base = None
        if absolute:
            assert mdl is not None
            mdl.reset()
            base = mdl.analyse_key(_decode_key(h, g.picture))
        return GridMap.create(layout, h.qstep, base, p, q)

    return h, layout, grid_for


def _precisions(g: PictureGroup) -> tuple[int | None, int | None]:
    m = g.gfv[0].message
    p = m.coordinates.precision if m.coordinates is not None else None
    q = m.matrices.precision if m.matrices is not None else None
    return p, q


def _replace_layout(layout: SeiLayout, **changes) -> SeiLayout:
    from dataclasses import replace

    return replace(layout, **changes)


def _resolve_model(model: MotionModel | str | None, size: int) -> MotionModel | None:
    if model is None or isinstance(model, MotionModel):
        return model
    from gfvc.models import model_class

    return model_class(model).create(size=size)


def _decode_key(h: StreamHeader, picture: bytes) -> np.ndarray:
    from gfvc.keyframe import keyframe_codec_class_by_id

    cls = keyframe_codec_class_by_id(h.keyframe_codec_id)
    return cls(qp=h.keyframe_qp, fmt=h.keyframe_format).decode(picture, h.width, h.height)


def _foreign_stream(
    groups: Sequence[PictureGroup],
    codec: Codec,
    model: MotionModel | str | None,
    qstep: float | None,
    coder: str,
    fps: Fraction | None,
):
    """Header and layout for a stream another encoder wrote (VTM/HM): the model is given."""
    from gfvc.features.entropy import feature_coder
    from gfvc.keyframe._av import decode_picture

    if model is None:
        raise InputError(
            "this stream was not written by gfvc (no gfvc NN URI): pass the model its "
            "features belong to (e.g. --model mesh)"
        )
    frame = decode_picture(codec, groups[0].picture)
    size = frame.width
    if frame.width != frame.height:
        raise InputError(
            f"key picture is {frame.width}x{frame.height}; gfvc models need square frames"
        )
    mdl = _resolve_model(model, size)
    assert mdl is not None
    fmt = "rgb444" if frame.format.name in ("gbrp", "yuv444p") else "yuv420"
    first = groups[0].gfv[0].message
    pupils_present = 0 in groups[0].gfve and groups[0].gfve[0].pupils is not None
    layout = plan_layout(mdl.fields, mdl.name, size, pupils=pupils_present)
    if (first.coordinates is None) != (layout.coord_field is None):
        raise BitstreamError(f"the stream's keypoints do not fit the {mdl.name!r} model's features")
    p, q = _precisions(groups[0])
    if qstep is None:  # the finest grid any SEI value needs, so nothing is rounded
        cands = []
        if p is not None and layout.coord_field is not None:
            cands.append(layout.coord_scale * (1 << p))
        if q is not None and layout.matrices:
            cands.append(Fraction(1 << q))
        qstep = float(max(cands)) if cands else float(mdl.default_qstep)
    header = StreamHeader(
        model_id=mdl.model_id,
        model_hash=mdl.config_hash(),
        width=size,
        height=size,
        fps=Fraction(fps or 25),
        qstep=float(np.float32(qstep)),
        coder_id=feature_coder(coder, mdl.dim).coder_id,
        keyframe_codec_id=KEYFRAME_CODEC_IDS[codec],
        keyframe_format=fmt,
        keyframe_qp=32,
        key_feature_sent=mdl.send_key_feature,
        feature_dim=mdl.dim,
    )

    def grid_for(gi: int, g: PictureGroup) -> GridMap:
        gp, gq = _precisions(g)
        base = None
        if not mdl.send_key_feature:
            mdl.reset()
            base = mdl.analyse_key(_decode_key(header, g.picture))
        return GridMap.create(layout, header.qstep, base, gp, gq)

    return header, layout, grid_for


def import_stream(
    path: str | Path,
    out_gfv_path: str | Path,
    *,
    model: MotionModel | str | None = None,
    qstep: float | None = None,
    coder: str = "range",
    fps: Fraction | None = None,
    form: Form | None = None,
) -> ImportReport:
    """``gfvc import``: an HEVC/VVC Annex-B stream with GFV SEI -> a .gfv file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p} does not exist or is not a file")
    data = p.read_bytes()
    gfv, report = annexb_to_gfv(
        data, form=form, hint=p.suffix, model=model, qstep=qstep, coder=coder, fps=fps
    )
    write_atomic(out_gfv_path, gfv)
    return report


def read_any(path: str | Path, **import_options) -> bytes:
    """The bytes of a .gfv file for ``path``: the file itself, or an imported .265/.266.

    For ``gfvc decode`` reading either kind of input.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p} does not exist or is not a file")
    data = p.read_bytes()
    if is_annexb(data):
        return annexb_to_gfv(data, hint=p.suffix, **import_options)[0]
    return data
