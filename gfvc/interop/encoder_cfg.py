"""Encoder configuration files: the VTM/HM ``SEIGenerativeFaceVideo*`` options that make the
reference encoders write the same GFV/GFVE messages gfvc writes."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from gfvc.bitstream.sei import Form, GfveMessage, GfvMessage, SeiReader, SeiWriter


def _fmt(x: Fraction) -> str:
    """A double that parses back to exactly ``x`` (x is a dyadic rational)."""
    return repr(float(x))


def vtm_cfg(
    gfv_messages: Sequence[GfvMessage],
    gfve_messages: Sequence[GfveMessage] = (),
    *,
    form: Form = "vtm",
    extra_pictures: int = 0,
) -> str:
    """The ``SEIGenerativeFaceVideo*`` options that make VTM (or HM) write these messages.

    The reference encoder builds all messages into the first picture's access unit and
    quantises coordinates with (int)(x * 2^P + 0.5), which truncates toward zero below 0;
    a coordinate whose quantised quantity (value, or difference from its reference) is
    negative is therefore written half a grid step lower, so that the encoder lands on
    exactly the integer gfvc codes. Matrix elements and pupils are written as they are.
    """
    if not gfv_messages:
        raise ValueError("no GFV messages to describe")
    writer, reader = SeiWriter(form), SeiReader(form)
    values = [reader.gfv(writer.gfv(m)) for m in gfv_messages]
    gfve_values = [reader.gfve(writer.gfve(m)) for m in gfve_messages]
    base = gfv_messages[0]
    n = len(gfv_messages)
    lines = [
        "# Generative face video SEI (payloadType 223) options written by gfvc.",
        f"# Syntax form: {form.upper()}. Values reproduce gfvc's coded integers bit for bit.",
    ]
    if extra_pictures:
        lines.append(
            f"# The reference encoder carries one picture's messages; {extra_pictures} later "
            "key picture(s) of the stream are not described here."
        )

    def opt(name: str, value: object) -> None:
        if isinstance(value, list | tuple):
            value = " ".join(str(v) for v in value)
        lines.append(f"{'SEIGenerativeFaceVideo' + name + ':':<57} {value}".rstrip())

    nn = base.nn
    opt("Enabled", 1)
    opt("Number", n)
    opt("BasePicFlag", int(base.base_picture))
    opt("NNPresentFlag", int(nn is not None))
    if nn is not None:
        opt("NNModeIdc", nn.mode_idc)
        if nn.mode_idc == 1:
            opt("NNTagURI", nn.tag_uri)
            opt("NNURI", nn.uri)
    ck = base.chroma_key
    opt("ChromaKeyInfoPresentFlag", int(ck is not None))
    opt("Id", [m.gfv_id for m in gfv_messages])
    opt("Cnt", [m.cnt for m in gfv_messages])
    opt(
        "DrivePicFusionFlag" if form == "hm" else "FusionPicFlag",
        [int(m.fusion) for m in gfv_messages],
    )
    opt("LowConfidenceFaceParameterFlag", [int(m.low_confidence) for m in gfv_messages])
    opt("CoordinatePresentFlag", [int(m.coordinates is not None) for m in gfv_messages])
    coords = [
        (m, v) for m, v in zip(gfv_messages, values, strict=True) if m.coordinates is not None
    ]
    if coords:
        opt(
            "CoordinatePredFlag",
            [int(m.coordinates.pred) if m.coordinates else 0 for m in gfv_messages],
        )
        opt(
            "CoordinateQuantizationFactor",
            [m.coordinates.precision if m.coordinates else 0 for m in gfv_messages],
        )
        opt(
            "3DCoordinateFlag",
            [int(m.coordinates.z_present) if m.coordinates else 0 for m in gfv_messages],
        )
        opt(
            "CoordinatePointNum",
            [m.coordinates.num_kps if m.coordinates else 0 for m in gfv_messages],
        )
        opt(
            "ZCoordinateMaxValue",
            [m.coordinates.z_max if m.coordinates else 0 for m in gfv_messages],
        )
        axes: list[list[str]] = [[], [], []]
        for m, v in coords:
            c = m.coordinates
            assert c is not None and v.coordinates is not None
            step = Fraction(1, 1 << c.precision)
            for kp_code, kp_val in zip(c.values, v.coordinates, strict=True):
                for a, (code, val) in enumerate(zip(kp_code, kp_val, strict=True)):
                    # code is the quantised quantity (value or delta); below zero the
                    # encoder's truncation needs the value half a step lower
                    axes[a].append(_fmt(val - step / 2 if code < 0 else val))
        opt("XCoordinate", axes[0])
        opt("YCoordinate", axes[1])
        if axes[2]:
            opt("ZCoordinate", axes[2])
    opt("MatrixPresentFlag", [int(m.matrices is not None) for m in gfv_messages])
    if any(m.matrices is not None for m in gfv_messages):
        per_type: dict[str, list[int]] = {k: [] for k in (
            "MatrixTypeIdx", "Matrix3DSpaceFlag", "NumMatrices", "MatrixWidth", "MatrixHeight",
            "NumMatricestoNumKpsFlag", "NumMatricesInfo")}  # fmt: skip
        elems: list[str] = []
        for m, v in zip(gfv_messages, values, strict=True):
            specs = m.matrices.specs if m.matrices is not None else []
            nk = m.coordinates.num_kps if m.coordinates is not None else 0
            for s in specs or [None]:  # type: ignore[list-item]
                if s is None:
                    for k in per_type:
                        per_type[k].append(0)
                    continue
                per_type["MatrixTypeIdx"].append(s.type_idx)
                per_type["Matrix3DSpaceFlag"].append(int(s.three_d))
                per_type["NumMatrices"].append(s.num_matrices)
                per_type["MatrixWidth"].append(s.width)
                per_type["MatrixHeight"].append(s.height)
                eq = int(s.type_idx in (0, 1) and s.num_matrices == nk)
                per_type["NumMatricestoNumKpsFlag"].append(eq)
                info = (
                    0
                    if eq or s.type_idx not in (0, 1)
                    else (s.num_matrices - 1 if s.num_matrices < nk else s.num_matrices - 2)
                )
                per_type["NumMatricesInfo"].append(info)
            if v.matrices is not None:
                elems += [_fmt(x) for vals in v.matrices for x in vals]
        opt("MatrixPredFlag", [int(m.matrices.pred) if m.matrices else 0 for m in gfv_messages])
        opt(
            "MatrixElementPrecisionFactor",
            [m.matrices.precision if m.matrices else 0 for m in gfv_messages],
        )
        opt("NumMatrixType", [len(m.matrices.specs) if m.matrices else 0 for m in gfv_messages])
        for k, vals in per_type.items():
            opt(k, vals)
        opt("MatrixElement", elems)
    if gfve_messages:
        lines.append("")
        lines.append("# Generative face video enhancement SEI (payloadType 224).")

        def eopt(name: str, value: object) -> None:
            if isinstance(value, list | tuple):
                value = " ".join(str(v) for v in value)
            lines.append(f"{'SEIGenerativeFaceVideoEnhancement' + name + ':':<57} {value}".rstrip())

        eb = gfve_messages[0]
        eopt("Enabled", 1)
        eopt("Number", len(gfve_messages))
        eopt("BasePicFlag", int(eb.base_picture))
        eopt("NNPresentFlag", int(eb.nn is not None))
        eopt("Id", [m.gfve_id for m in gfve_messages])
        eopt("GFVId", [m.gfv_id for m in gfve_messages])
        eopt("GFVCnt", [m.gfv_cnt for m in gfve_messages])
        eopt("MatrixPresentFlag", [int(m.matrices is not None) for m in gfve_messages])
        eopt("MatrixPredFlag", [int(m.matrices.pred) if m.matrices else 0 for m in gfve_messages])
        eopt(
            "MatrixElementPrecisionFactor",
            [m.matrices.precision if m.matrices else 0 for m in gfve_messages],
        )
        eopt("NumMatrices", [len(m.matrices.sizes) if m.matrices else 0 for m in gfve_messages])
        eopt("MatrixWidth", [w for m in gfve_messages if m.matrices for _, w in m.matrices.sizes])
        eopt("MatrixHeight", [h for m in gfve_messages if m.matrices for h, _ in m.matrices.sizes])
        eopt(
            "MatrixElement",
            [_fmt(x) for v in gfve_values if v.matrices for vals in v.matrices for x in vals],
        )
        eopt("PupilPresentIdx", [m.pupils.present_idx for m in gfve_messages])
        eopt("PupilCoordinatePrecisionFactor", [m.pupils.precision for m in gfve_messages])
        pts = [v.pupils for v in gfve_values]
        zero = (Fraction(0), Fraction(0))
        eopt("PupilLeftEyeCoordinateX", [_fmt((p or (zero, zero))[0][0]) for p in pts])
        eopt("PupilLeftEyeCoordinateY", [_fmt((p or (zero, zero))[0][1]) for p in pts])
        eopt("PupilRightEyeCoordinateX", [_fmt((p or (zero, zero))[1][0]) for p in pts])
        eopt("PupilRightEyeCoordinateY", [_fmt((p or (zero, zero))[1][1]) for p in pts])
    return "\n".join(lines) + "\n"
