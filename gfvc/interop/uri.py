"""The gfvc metadata URI of a base GFV message (gfv_nn_mode_idc 1).

Everything the .gfv header needs and the SEI syntax cannot hold (model id and hash, qstep,
coder, frame rate, field layout) travels in the base message's NN URI, which is what the URI
is for: naming the network that animates the base picture.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from urllib.parse import parse_qsl, quote, urlencode

from gfvc.bitstream import StreamHeader
from gfvc.errors import BitstreamError
from gfvc.interop.layout import SeiLayout
from gfvc.models.base import FeatureField

NN_TAG_URI = "tag:gfvc,2025:gfv-features"
NN_URI_PREFIX = "urn:gfvc:gfv:1?"
URI_VERSION = 1


def _fields_text(fields: Sequence[FeatureField]) -> str:
    kinds = {"coordinates": "c", "matrix": "m", "vector": "v"}
    return ",".join(f"{f.name}:{kinds[f.kind]}:{'x'.join(map(str, f.shape))}" for f in fields)


def _parse_fields(text: str) -> tuple[FeatureField, ...]:
    kinds = {"c": "coordinates", "m": "matrix", "v": "vector"}
    out = []
    try:
        for part in text.split(","):
            name, kind, shape = part.split(":")
            out.append(FeatureField(name, kinds[kind], tuple(int(s) for s in shape.split("x"))))  # type: ignore[arg-type]
    except (ValueError, KeyError):
        raise BitstreamError(f"gfvc NN URI has an invalid field list {text!r}") from None
    return tuple(out)


def build_uri(
    header: StreamHeader, layout: SeiLayout, model_name: str, anchor: str, form: str
) -> str:
    """The gfv_nn_uri gfvc writes: everything needed to rebuild the .gfv header."""
    q = {
        "model": model_name,
        "id": header.model_id,
        "hash": header.model_hash.hex(),
        "size": f"{header.width}x{header.height}",
        "fps": f"{header.fps.numerator}/{header.fps.denominator}",
        "qstep": repr(float(header.qstep)),
        "coder": header.coder_id,
        "kf": header.keyframe_codec_id,
        "kfmt": header.keyframe_format,
        "kqp": header.keyframe_qp,
        "key": int(header.key_feature_sent),
        "seg": header.segment_units,
        "anchor": anchor,
        "form": form,
        "fields": _fields_text(layout.fields),
        "cs": str(layout.coord_scale),
        "co": str(layout.coord_offset),
        "pupils": "" if layout.pupils is None else f"{layout.pupils[1]},{layout.pupils[2]}",
    }
    if header.extension:
        q["ext"] = header.extension.hex()
    return NN_URI_PREFIX + urlencode(q, quote_via=quote, safe=":,/x")


@dataclass
class UriInfo:
    header: StreamHeader
    model_name: str
    anchor: str
    form: str
    fields: tuple[FeatureField, ...]
    coord_scale: Fraction
    coord_offset: Fraction
    pupils: tuple[int, int] | None


def parse_uri(uri: str) -> UriInfo | None:
    """The metadata of a gfvc-written stream, or None for a URI gfvc did not write."""
    if not uri.startswith(NN_URI_PREFIX):
        return None
    q = dict(parse_qsl(uri[len(NN_URI_PREFIX) :], keep_blank_values=True))
    try:
        w, h = (int(v) for v in q["size"].split("x"))
        fields = _parse_fields(q["fields"])
        header = StreamHeader(
            model_id=int(q["id"]),
            model_hash=bytes.fromhex(q["hash"]),
            width=w,
            height=h,
            fps=Fraction(q["fps"]),
            qstep=float(q["qstep"]),
            coder_id=int(q["coder"]),
            keyframe_codec_id=int(q["kf"]),
            keyframe_format=q["kfmt"],
            keyframe_qp=int(q["kqp"]),
            key_feature_sent=q["key"] == "1",
            feature_dim=sum(f.size for f in fields),
            segment_units=int(q["seg"]),
            extension=bytes.fromhex(q.get("ext", "")),
        )
        pupils = tuple(int(v) for v in q["pupils"].split(",")) if q.get("pupils") else None
        info = UriInfo(
            header=header,
            model_name=q["model"],
            anchor=q["anchor"],
            form=q.get("form", "vtm"),
            fields=fields,
            coord_scale=Fraction(q["cs"]),
            coord_offset=Fraction(q["co"]),
            pupils=pupils,  # type: ignore[arg-type]
        )
        # the header must survive its own serialisation (field ranges, formats ...)
        StreamHeader.parse(header.to_bytes())
    except (KeyError, ValueError, ZeroDivisionError, OverflowError, struct.error) as exc:
        raise BitstreamError(f"gfvc NN URI in the base GFV message is invalid ({exc})") from None
    if not 0 < header.feature_dim <= 65535 or any(v < 1 for f in fields for v in f.shape):
        raise BitstreamError("gfvc NN URI in the base GFV message has an invalid field layout")
    if info.anchor not in ("key", "absolute") or info.form not in ("vtm", "hm"):
        raise BitstreamError("gfvc NN URI in the base GFV message has an unknown anchor or form")
    if info.coord_scale <= 0 or (pupils is not None and len(pupils) != 2):
        raise BitstreamError("gfvc NN URI in the base GFV message has invalid coordinate units")
    return info
