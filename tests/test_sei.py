"""GFV / GFVE SEI messages: bit-exact syntax, NAL wrapping, .gfv <-> Annex-B interop."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from conftest import ToyModel, clip, moving_frames

from gfvc.bitstream import StreamHeader
from gfvc.bitstream.format import FEATURE, KEY, KeyInfo, SegmentPacker, pack_key_payload
from gfvc.bitstream.nal import (
    SeiMessage,
    detect_codec,
    escape_rbsp,
    is_annexb,
    parse_sei_rbsp,
    sei_nal_unit,
    split_nal_units,
    unescape_rbsp,
)
from gfvc.bitstream.sei import (
    ChromaKey,
    Coordinates,
    GfveMatrices,
    GfveMessage,
    GfvePupilGridEncoder,
    GfvGridEncoder,
    GfvMessage,
    Matrices,
    MatrixSpec,
    NeuralNetworkInfo,
    Pupils,
    ReferenceGfveEncoder,
    ReferenceGfvEncoder,
    ReservedIdError,
    SeiReader,
    SeiWriter,
    c_round,
    quantize_coordinate,
    quantize_matrix_element,
)
from gfvc.codec import EncodeSettings, encode_frames
from gfvc.errors import BitstreamError, GfvcError, InputError
from gfvc.features.entropy import encode_ints_eg, feature_coder
from gfvc.interop import (
    GridMap,
    annexb_to_gfv,
    export_stream,
    feature_fields,
    gfv_groups,
    gfv_to_annexb,
    import_stream,
    plan_layout,
    read_any,
    vtm_cfg,
)

F = Fraction


def ue(v: int) -> str:
    """ue(v) as a bit string."""
    b = format(v + 1, "b")
    return "0" * (len(b) - 1) + b


def payload(bits: str) -> bytes:
    """Bit string (spaces ignored) + sei_payload trailing bits -> bytes."""
    b = bits.replace(" ", "")
    if len(b) % 8:
        b += "1" + "0" * (7 - len(b) % 8)
    return int(b, 2).to_bytes(len(b) // 8, "big")


# ============================================================================ hand-computed syntax


def test_gfv_base_message_hand_computed():
    m = GfvMessage(
        gfv_id=5,
        cnt=0,
        base_picture=True,
        coordinates=Coordinates(pred=False, precision=1, values=[(1, -1)]),
    )
    bits = (
        "00110"  # gfv_id ue(5)
        "1"  # gfv_cnt ue(0)
        "1"  # gfv_base_picture_flag
        "0"  # gfv_nn_present_flag
        "0"  # gfv_chroma_key_info_present_flag
        "0"  # gfv_low_confidence_face_parameter_flag
        "1"  # gfv_coordinate_present_flag
        "0"  # gfv_kps_pred_flag
        "1"  # precision_factor_minus1 ue(0)
        "1"  # num_kps_minus1 ue(0)
        "0"  # z_present
        "010 0"  # x_abs ue(1), sign +
        "010 1"  # y_abs ue(1), sign -
        "0"  # gfv_matrix_present_flag
    )
    assert SeiWriter("vtm").gfv(m) == payload(bits)
    assert SeiWriter("hm").gfv(m) == payload(bits)  # identical without chroma key / fusion
    v = SeiReader().gfv(payload(bits))
    assert v.message == m
    assert v.coordinates == [(F(1, 2), F(-1, 2))]


def test_fusion_flag_differs_between_vtm_and_hm():
    base = GfvMessage(
        gfv_id=5, cnt=0, base_picture=True, coordinates=Coordinates(False, 1, [(1, -1)])
    )
    nxt = GfvMessage(
        gfv_id=5, cnt=3, low_confidence=True, coordinates=Coordinates(True, 1, [(0, 2)])
    )
    tail = "1 1 1 1 011 0 0"  # low_conf, coord_present, kps_pred, dx 0, dy ue(2) +, matrix_present
    vtm = "00110 00100" + tail  # gfv_id 5, gfv_cnt ue(3); no fusion flag when cnt > 0
    for form, bits, fusion in (("vtm", vtm, False), ("hm", "00110 00100 1" + tail, True)):
        w, r = SeiWriter(form), SeiReader(form)
        r.gfv(w.gfv(base))
        nxt.fusion = fusion
        assert w.gfv(nxt) == payload(bits)
        v = r.gfv(payload(bits))
        assert v.message.fusion is fusion and v.message.low_confidence
        assert v.coordinates == [(F(1, 2), F(1, 2))]  # predicted from the previous message
    with pytest.raises(ValueError, match="fusion"):
        SeiWriter("vtm").gfv(
            GfvMessage(cnt=1, fusion=True, coordinates=Coordinates(False, 1, [(0, 0)]))
        )


def test_chroma_key_vtm_and_hm_forms_hand_computed():
    ck = ChromaKey(purpose_idc=1, values=(None, 200, None), thresholds=(48, 75))
    m = GfvMessage(
        cnt=0, base_picture=True, chroma_key=ck, coordinates=Coordinates(False, 1, [(0, 0)])
    )
    head = "1 1 1 0 1"  # id 0, cnt 0, base, nn_present 0, chroma_key_info_present 1
    values = "0 1 11001000 0"  # value flags, 200 for component 1
    tail = "0 1 0 1 1 0 1 1 0"  # low_conf, coords(no pred, P=1, 1 kp, 2-D, 0, 0), no matrix
    vtm = head + "010" + values + "1 00110000 000011011" + tail  # purpose 1; lower 48, delta 26
    hm = head + values + "1 00000110001 1 0000001001100" + tail  # ue(48), ue(75)
    assert SeiWriter("vtm").gfv(m) == payload(vtm)
    ck_hm = ChromaKey(values=(None, 200, None), thresholds=(48, 75))
    m.chroma_key = ck_hm
    assert SeiWriter("hm").gfv(m) == payload(hm)
    assert SeiReader("vtm").gfv(payload(vtm)).message.chroma_key == ck
    assert SeiReader("hm").gfv(payload(hm)).message.chroma_key == ck_hm
    with pytest.raises(ValueError, match="both chroma-key thresholds"):
        m.chroma_key = ChromaKey(thresholds=(48, None))
        SeiWriter("vtm").gfv(m)


def test_matrices_and_prediction_hand_computed():
    specs = [MatrixSpec(0, 2, 2, 2), MatrixSpec(7, 1, 1, 2)]
    jac = [(1, 0, False), (0, 0, False), (0, 5, True)] + [(0, 0, False)] * 5
    compact = [(2, 7, False), (0, 1, True)]
    base = GfvMessage(
        cnt=0,
        base_picture=True,
        coordinates=Coordinates(False, 2, [(0, 1), (-3, 0)]),
        matrices=Matrices(False, 3, specs, [jac, compact]),
    )
    bits0 = (
        "1 1 1 0 0 0"  # id, cnt, base, nn, chroma key, low_conf
        "1 0 010 010 0"  # coords present, no pred, P-1 = 1, K-1 = 1, 2-D
        "1 0100 00100 1 1"  # kp0: x 0, y +1; kp1: x -3, y 0
        "1 011 010"  # matrix present, Q-1 = 2, 2 types
        "000000 1"  # type 0, as many matrices as keypoints
        "000111 1 010 1"  # type 7, 1 matrix, width 2, height 1
        "010 000 0  1 000  1 101 1"
        + " 1 000" * 5  # type 0 elements: int ue, dec u(3), sign
        + "011 111 0  1 001 1"  # type 7 elements
    )
    nxt = GfvMessage(
        cnt=1,
        coordinates=Coordinates(True, 2, [(1, 0), (0, -1)]),
        matrices=Matrices(
            True, 3, specs, [[(0, 8, False)] + [(0, 0, False)] * 7, [(0, 0, False)] * 2]
        ),
    )
    bits1 = (
        "1 010 0"  # id 0, cnt 1 (no fusion flag in VTM form), low_conf
        "1 1 0100 1 1 0101"  # coords present, pred; dx/dy per keypoint
        "1 1"  # matrix present, predicted
        "1 0001001 0" + " 1 1" * 9  # delta int 0, delta dec ue(8) = 2^Q (allowed), then zeros
    )
    w, r = SeiWriter(), SeiReader()
    assert w.gfv(base) == payload(bits0)
    assert w.gfv(nxt) == payload(bits1)
    v0, v1 = r.gfv(payload(bits0)), r.gfv(payload(bits1))
    assert v0.message == base and v1.message == nxt
    assert v0.coordinates == [(0, F(1, 4)), (F(-3, 4), 0)]
    assert v1.coordinates == [(F(1, 4), F(1, 4)), (F(-3, 4), F(-1, 4))]
    assert v0.matrices[0][:3] == [1, 0, F(-5, 8)] and v0.matrices[1] == [F(23, 8), F(-1, 8)]
    assert v1.matrices[0][:3] == [2, 0, F(-5, 8)]
    assert [a.shape for a in v1.matrix_arrays()] == [(2, 2, 2), (1, 1, 2)]


def test_nn_uri_alignment_and_strings_hand_computed():
    m = GfvMessage(
        cnt=0,
        base_picture=True,
        nn=NeuralNetworkInfo(1, "a", "b"),
        coordinates=Coordinates(False, 1, [(0, 0)]),
    )
    bits = (
        "1 1 1 1 010 0"  # id, cnt, base, nn_present, mode_idc ue(1), one alignment zero bit
        "01100001 00000000 01100010 00000000"  # st(v) "a", st(v) "b"
        "0 0 1 0 1 1 0 1 1 0"  # chroma key, low_conf, coords, no matrix
    )
    assert SeiWriter().gfv(m) == payload(bits)
    assert SeiReader().gfv(payload(bits)).message.nn == NeuralNetworkInfo(1, "a", "b")
    # in-band NNR (mode 0): alignment, then bytes to the end of the payload
    m.nn = NeuralNetworkInfo(0, payload=b"\x12\x34")
    data = SeiWriter().gfv(m)
    assert data.endswith(b"\x12\x34")
    assert SeiReader().gfv(data).message.nn.payload == b"\x12\x34"


def test_gfve_matrices_and_pupils_hand_computed():
    base = GfveMessage(
        gfve_id=1,
        gfv_id=0,
        gfv_cnt=0,
        base_picture=True,
        matrices=GfveMatrices(False, 2, [(1, 2)], [[(0, 3, True), (1, 0, False)]]),
        pupils=Pupils(3, 3, left=(5, -1), right=(0, 2)),
    )
    bits0 = (
        "010 1 1 1 0"  # gfve_id 1, gfv_id 0, gfv_cnt 0, base, nn_present 0
        "1 010 1 1 010"  # matrices: Q-1 = 1, 1 matrix, height-1 = 0 THEN width-1 = 1
        "1 11 1  010 00 0"  # elements (int ue, dec u(2), sign)
        "11 011"  # both pupils, P-1 = 2
        "00110 0 010 1  1 011 0"  # left dx +5 dy -1; right (from left) dx 0 dy +2
    )
    nxt = GfveMessage(
        gfve_id=1,
        gfv_cnt=1,
        matrices=GfveMatrices(True, 2, [(1, 2)], [[(0, 1, False), (0, 0, False)]]),
        pupils=Pupils(1, 3, left=(-1, 0)),
    )
    bits1 = "010 1 010 1 1  1 01 0  1 00  01 010 1 1"  # delta dec is u(Q) in GFVE
    w, r = SeiWriter(), SeiReader()
    assert w.gfve(base) == payload(bits0)
    assert w.gfve(nxt) == payload(bits1)
    v0, v1 = r.gfve(payload(bits0)), r.gfve(payload(bits1))
    assert v0.message == base and v1.message == nxt
    assert v0.pupils == ((F(5, 8), F(-1, 8)), (F(5, 8), F(1, 8)))
    assert v1.pupils == ((F(1, 2), F(-1, 8)), (F(5, 8), F(1, 8)))  # right eye not coded: kept
    assert v0.matrices == [[F(-3, 4), 1]] and v1.matrices == [[F(-1, 2), 1]]


# ============================================================================ NAL level


def test_nal_wrapping_hand_computed():
    assert escape_rbsp(b"\x00\x00\x01\x00\x00\x04") == b"\x00\x00\x03\x01\x00\x00\x04"
    assert escape_rbsp(b"\x00\x00\x00\x00") == b"\x00\x00\x03\x00\x00\x03"
    assert unescape_rbsp(b"\x00\x00\x03\x00\x00\x03") == b"\x00\x00\x00\x00"
    m = SeiMessage(223, b"\x00\x00\x01\x02")
    assert sei_nal_unit([m], "hevc") == bytes.fromhex("000001 5001 df04 00000301 02 80")
    assert sei_nal_unit([m], "vvc") == bytes.fromhex("000001 00c1 df04 00000301 02 80")
    big = SeiMessage(224, b"\x11" * 300)
    nal = sei_nal_unit([big], "hevc")
    assert nal[5:9] == bytes.fromhex("e0ff2d11")  # type 224; size 255 + 45
    rbsp = split_nal_units(nal)[0].rbsp(nal)
    assert parse_sei_rbsp(rbsp) == [big]
    for bad in (b"\xdf\x05\x00", b"\xdf\x01\x00", b"\xff" * 10):
        with pytest.raises(BitstreamError):
            parse_sei_rbsp(bad)


def test_annexb_detection():
    hevc = bytes.fromhex("00000001 4001 0c") + sei_nal_unit([SeiMessage(5, b"x" * 16)], "hevc")
    vvc = bytes.fromhex("00000001 0079 12") + sei_nal_unit([SeiMessage(5, b"x" * 16)], "vvc")
    assert is_annexb(hevc) and is_annexb(vvc)
    assert not is_annexb(b"GFVC\x01") and not is_annexb(b"\x00\x00\x00\x18ftypmp42")
    assert detect_codec(hevc) == "hevc" and detect_codec(vvc) == "vvc"
    units = split_nal_units(vvc)
    assert [(u.nal_type, u.is_suffix_sei) for u in units] == [(15, False), (24, True)]


# ============================================================================ reference quantisers


def test_reference_quantisers_truncate_like_c():
    assert [c_round(x) for x in (2.5, 2.4999, -0.4, -2.5, -2.7)] == [3, 2, 0, -2, -2]
    assert quantize_coordinate(-2.7 / 8, 3) == -2  # rounds toward zero, not to -3
    assert quantize_matrix_element(0.999, 2) == (0, 3, False)  # fraction clipped, no carry
    assert quantize_matrix_element(0.999, 2, pred=True) == (0, 4, False)  # not clipped
    assert quantize_matrix_element(-1.3, 2) == (1, 1, True)
    enc = ReferenceGfvEncoder()
    m = enc.message(0, base=True, coordinates=np.array([[-0.3, 0.3]]), precision=3)
    assert m.coordinates.values == [(-1, 2)]  # -2.4 + 0.5 truncates to -1 (nearest: -2)


def test_reference_encoder_chain_matches_reader():
    """120 messages coded from floats as VTM does: the reader reconstructs the encoder's own
    (double) reconstruction exactly, and it tracks the input within one grid step."""
    rng = np.random.default_rng(3)
    kp = rng.uniform(-1, 1, (10, 2))
    jac = rng.normal(0, 1, (10, 2, 2))
    enc, w, r = ReferenceGfvEncoder(), SeiWriter(), SeiReader()
    for t in range(120):
        kp = np.clip(kp + rng.normal(0, 0.01, kp.shape), -1, 1)
        jac = jac + rng.normal(0, 0.02, jac.shape)
        m = enc.message(
            t,
            base=t == 0,
            coordinates=kp,
            precision=9,
            coord_pred=True,
            matrices=[(0, jac)],
            matrix_precision=9,
            matrix_pred=t > 0,
        )
        v = r.gfv(w.gfv(m))
        got = v.coordinate_array()
        assert np.array_equal(got, np.array(enc._cp))
        # negative quantities truncate toward zero: up to 1.5 steps off, never drifting
        assert np.abs(got - kp).max() < 1.5 * 2**-9
        assert np.abs(v.matrix_arrays()[0] - jac).max() <= 2**-9
        assert np.array_equal(v.matrix_arrays()[0].ravel(), np.array(enc._mp[0]))


# ============================================================================ prediction chains


def test_gfv_prediction_chain_over_150_messages_is_exact():
    rng = np.random.default_rng(0)
    k, p, q = 15, 8, 6
    coords = rng.integers(-256, 256, (k, 3))
    mats = {
        0: rng.integers(-64, 64, (k, 3, 3)),  # one 3x3 affine per keypoint (3-D)
        4: rng.integers(-64, 64, (1, 3, 3)),
        5: rng.integers(-64, 64, (1, 3, 1)),
        7: rng.integers(-500, 500, (2, 4, 4)),
        9: rng.integers(-9, 9, (1, 5, 2)),
    }
    enc, w, r = GfvGridEncoder(7), SeiWriter(), SeiReader()
    preds = 0
    for t in range(160):
        cnt = t if t < 100 else t - 100  # a second base picture at message 100
        coords = coords + rng.integers(-2, 3, coords.shape) * (rng.random(coords.shape) < 0.4)
        if t % 41 == 40:
            coords = coords + rng.integers(-200, 200, coords.shape)  # a jump
        for key, a in mats.items():
            mats[key] = a + rng.integers(-3, 4, a.shape) * (rng.random(a.shape) < 0.3)
        m = enc.message(
            cnt,
            base=cnt == 0,
            coordinates=coords,
            precision=p,
            z_max=2,
            matrices=list(mats.items()),
            matrix_precision=q,
            predict=t % 37 != 36,
        )
        preds += m.coordinates.pred + m.matrices.pred
        v = r.gfv(w.gfv(m))
        assert v.coordinates == [tuple(F(int(x), 2**p) for x in row) for row in coords]
        for vals, a in zip(v.matrices, mats.values(), strict=True):
            assert vals == [F(int(x), 2**q) for x in a.ravel()]
    assert preds > 250  # prediction is what the encoder picked almost always


def test_gfve_pupil_and_matrix_chains_over_120_messages():
    rng = np.random.default_rng(1)
    prec = 5
    left, right = np.array([10, -4]), np.array([-12, -3])
    enc, w, r = GfvePupilGridEncoder(2, 0, prec), SeiWriter(), SeiReader()
    mat = rng.integers(-40, 40, 6)
    for t in range(120):
        left = left + rng.integers(-1, 2, 2) * (rng.random(2) < 0.3)
        right = right + rng.integers(-1, 2, 2) * (rng.random(2) < 0.3)
        e = enc.message(t, base=t == 0, left=left, right=right)
        if t:  # predicted enhancement matrices: 1x2 and 2x2, Q = 3
            d = rng.integers(-3, 4, 6)
            mat = mat + d
            els = [(abs(int(x)) >> 3, abs(int(x)) & 7, x < 0) for x in d]
            e.matrices = GfveMatrices(True, 3, [(1, 2), (2, 2)], [els[:2], els[2:]])
        else:
            els = [(abs(int(x)) >> 3, abs(int(x)) & 7, x < 0) for x in mat]
            e.matrices = GfveMatrices(False, 3, [(1, 2), (2, 2)], [els[:2], els[2:]])
        v = r.gfve(w.gfve(e))
        assert v.pupils == (
            tuple(F(int(x), 2**prec) for x in left),
            tuple(F(int(x), 2**prec) for x in right),
        )
        assert [x for m in v.matrices for x in m] == [F(int(x), 8) for x in mat]


def test_reference_gfve_encoder_matches_reader():
    enc, w, r = ReferenceGfveEncoder(0, 0, 6), SeiWriter(), SeiReader()
    pts = np.array([0.31, -0.02, -0.2, 0.05])
    for t in range(30):
        pts = pts + np.sin(np.arange(4) + t) * 0.01
        e = enc.message(
            t, base=t == 0, present_idx=3 if t % 3 == 0 else 1, left=pts[:2], right=pts[2:]
        )
        v = r.gfve(w.gfve(e))
        assert (float(v.pupils[0][0]), float(v.pupils[0][1])) == pytest.approx(enc._prev[:2])
        assert abs(float(v.pupils[0][0]) - pts[0]) <= 2**-7 + 1e-12


# ============================================================================ hostile input


def _reads(bits: str, kind: str = "gfv", reader: SeiReader | None = None):
    r = reader or SeiReader()
    return (r.gfv if kind == "gfv" else r.gfve)(payload(bits))


_HEAD = "1 1 1 0 0 0"  # gfv_id 0, gfv_cnt 0, base, no NN, no chroma key, low_conf 0
_ONE_KP = "1 0 1 1 0 1 1"  # coordinates: unpredicted, P = 1, one 2-D keypoint at (0, 0)


@pytest.mark.parametrize(
    "bits, kind, message",
    [
        (_HEAD + "1 0" + ue(32), "gfv", "precision_factor_minus1 = 32 is over its limit 31"),
        (_HEAD + "1 0 1" + ue(1 << 20), "gfv", "cannot fit"),
        (_HEAD + "0 1 1 1 101000", "gfv", "reserved matrix type"),
        (_HEAD + "0 1 1 1 000000", "gfv", "needs keypoint coordinates"),
        (_HEAD + _ONE_KP + "1 1 1 000000 0" + ue(1024), "gfv", "num_matrices_info"),
        (_HEAD + "0 1 1 1 000111 1" + ue(1024), "gfv", "width_minus1"),
        (_HEAD + "1 0 1 1 1" + ue(65535), "gfv", "z_max_value_minus1"),
        (_HEAD + "0 0", "gfv", "neither coordinates nor matrices"),
        ("1 010 0 1 1", "gfv", "no earlier base message"),
        ("1 1 1 1" + ue(3), "gfv", "nn_mode_idc = 3 is reserved"),
        ("0" * 33 + "1", "gfv", "over 32 leading zeros"),
        (_HEAD + _ONE_KP + "0 1111111", "gfv", "unexpected bits"),
        ("1 1 1 1 0 0 11 1" + ue(5), "gfve", "over its limit 4"),
        ("1 1 010 0 01 1 0", "gfve", "before any base GFVE"),
    ],
)
def test_hostile_payloads_raise_clear_errors(bits, kind, message):
    with pytest.raises(BitstreamError, match=message):
        _reads(bits, kind)


def test_reserved_ids_raise_their_own_error():
    for gid in (256, 300, 511, 1 << 31, (1 << 32) - 2):
        w = format(gid + 1, "b")
        with pytest.raises(ReservedIdError, match="reserved"):
            _reads("0" * (len(w) - 1) + w + " 1 1 0 0 0 1 0 1 1 0 1 1 0")
    with pytest.raises(BitstreamError, match="over its limit"):
        _reads("0" * 32 + "1" + "1" * 32)  # ue = 2^33 - 2, beyond uint32
    with pytest.raises(ValueError, match="reserved"):
        SeiWriter().gfv(GfvMessage(gfv_id=300, coordinates=Coordinates(False, 1, [(0, 0)])))


def test_truncation_anywhere_and_random_garbage_only_raise_bitstream_error():
    rng = np.random.default_rng(5)
    specs = [MatrixSpec(0, 3, 2, 2), MatrixSpec(8, 2, 3, 1)]
    m = GfvMessage(
        cnt=0,
        base_picture=True,
        nn=NeuralNetworkInfo(1, "tag:x", "urn:y"),
        chroma_key=ChromaKey(2, (1, None, 3), (10, 20)),
        coordinates=Coordinates(
            False, 7, [(int(a), int(b)) for a, b in rng.integers(-300, 300, (3, 2))]
        ),
        matrices=Matrices(
            False,
            5,
            specs,
            [
                [(int(i), int(d), bool(i % 2)) for i, d in rng.integers(0, 31, (n, 2))]
                for n in (12, 6)
            ],
        ),
    )
    data = SeiWriter().gfv(m)
    assert SeiReader().gfv(data).message == m
    for cut in range(len(data)):
        with pytest.raises(BitstreamError):
            SeiReader().gfv(data[:cut])
    for _ in range(400):
        junk = rng.integers(0, 256, rng.integers(1, 60)).astype(np.uint8).tobytes()
        for fn in (SeiReader().gfv, SeiReader().gfve):
            try:
                fn(junk)
            except BitstreamError:
                pass
        flipped = bytearray(data)
        flipped[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        try:
            SeiReader().gfv(bytes(flipped))
        except BitstreamError:
            pass


# ============================================================================ interop helpers


_PICTURES: dict[tuple, bytes] = {}


def hevc_picture(size: int = 64, fmt: str = "yuv420") -> bytes:
    key = (size, fmt)
    if key not in _PICTURES:
        from gfvc.keyframe import keyframe_codec

        _PICTURES[key] = keyframe_codec("x265", qp=37, fmt=fmt).encode(moving_frames(1, size)[0])
    return _PICTURES[key]


def make_gfv(
    model_id: int,
    qstep: float,
    groups: list[list[np.ndarray]],
    *,
    key_sent: bool,
    picture: bytes,
    kf_id: int = 1,
    width: int = 256,
    sides: list[bytes] | None = None,
) -> bytes:
    """A .gfv file with the given integer state per key unit (no model involved)."""
    dim = len(groups[0][0])
    coder = feature_coder("range", dim)
    h = StreamHeader(
        model_id=model_id,
        model_hash=bytes(range(8)),
        width=width,
        height=width,
        fps=Fraction(30000, 1001),
        qstep=qstep,
        coder_id=coder.coder_id,
        keyframe_codec_id=kf_id,
        keyframe_format="yuv420",
        keyframe_qp=30,
        key_feature_sent=key_sent,
        feature_dim=dim,
    )
    packer = SegmentPacker(h.segment_units)
    out = [h.to_bytes()]
    for gi, accs in enumerate(groups):
        feat = encode_ints_eg(accs[0]) if key_sent else b""
        side = sides[gi] if sides else b""
        out.append(
            packer.add(
                bytes([KEY]) + pack_key_payload(picture, feat, side, KeyInfo(0 if gi == 0 else 2))
            )
        )
        coder.reset()  # format version 2: every key unit is an entry point
        for a, b in zip(accs, accs[1:], strict=False):
            out.append(packer.add(bytes([FEATURE]) + coder.encode(b - a)))
    out.append(packer.finish())
    return b"".join(out)


def random_walk(dim: int, n: int, seed: int, zero_start: bool, scale: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    acc = np.zeros(dim, np.int64) if zero_start else rng.integers(-scale, scale, dim)
    out = [acc]
    for _ in range(n - 1):
        acc = acc + rng.integers(-3, 4, dim) * (rng.random(dim) < 0.5)
        out.append(acc)
    return out


def assert_same_integers(a: bytes, b: bytes) -> None:
    ha, ga = gfv_groups(a)
    hb, gb = gfv_groups(b)
    assert len(ga) == len(gb)
    for x, y in zip(ga, gb, strict=True):
        assert len(x.acc) == len(y.acc)
        assert all(np.array_equal(p, q) for p, q in zip(x.acc, y.acc, strict=True))


# ============================================================================ round trips


@pytest.mark.parametrize(
    "model_id, qstep, expect",
    [
        (2, 64.0, {"coords": (10, False), "types": [0]}),  # FOMM: 10x2 kp + 10 2x2 Jacobians
        (3, 4.0, {"coords": None, "types": [7]}),  # CFTE: one 4x4 compact feature
        (4, 256.0, {"coords": (15, True), "types": [4, 5]}),  # FV2V: rotation, t, 15x3 exp
        (5, 64.0, {"coords": (10, False), "types": []}),  # DAC: 10 keypoints
        (8, 1.0, {"coords": None, "types": [8, 8], "key": True}),  # landmark: pose, expression
    ],
)
def test_official_model_shapes_round_trip_exactly(model_id, qstep, expect):
    dim = {2: 60, 3: 16, 4: 57, 5: 20, 8: 28}[model_id]
    key = expect.get("key", False)
    h = StreamHeader(
        model_id, bytes(8), 256, 256, Fraction(25), qstep, 1, 1, "yuv420", 30, False, dim
    )
    assert sum(f.size for f in feature_fields(h)) == dim and len(feature_fields(h)) > 0
    accs = random_walk(dim, 40, model_id, zero_start=not key)
    sides = [b"key landmarks"] if key else None
    data = make_gfv(model_id, qstep, [accs], key_sent=key, picture=hevc_picture(), sides=sides)
    stream, rep, msgs = gfv_to_annexb(data)
    assert rep.exact and rep.frames == 40
    base = msgs[0][0][0]
    if expect["coords"] is None:
        assert base.coordinates is None
    else:
        assert (base.coordinates.num_kps, base.coordinates.z_present) == expect["coords"]
    types = [s.type_idx for s in base.matrices.specs] if base.matrices else []
    assert types == expect["types"]
    if expect["types"]:
        assert rep.matrix_precision == max(1, int(np.log2(qstep)))  # one .gfv step, one SEI step
    back, irep = annexb_to_gfv(stream)
    assert back == data and not irep.foreign
    for form in ("hm",):
        stream2, _, _ = gfv_to_annexb(data, form=form, one_nal_per_frame=True)
        assert annexb_to_gfv(stream2)[0] == data


def test_mesh_real_clip_round_trip_rates_and_pyav(tmp_path):
    path = clip("lp_d3.mp4")
    from gfvc.codec import FramePreparer, make_encoder, stream_chunks

    s = EncodeSettings(model="mesh", frames=30)
    prep = FramePreparer(path, s)
    try:
        enc = make_encoder(s, prep.fps)
        enc.trace = []
        data = b"".join(stream_chunks(enc, prep))
    finally:
        prep.close()
    src = tmp_path / "clip.gfv"
    src.write_bytes(data)
    rep = export_stream(src, tmp_path / "clip.265", cfg_path=tmp_path / "clip.cfg")
    assert rep.exact and rep.pupils_in_gfve and rep.coordinate_precision == 6
    assert 0 < rep.sei_bits_per_frame < 4 * rep.native_bits_per_frame
    irep = import_stream(tmp_path / "clip.265", tmp_path / "back.gfv")
    back = (tmp_path / "back.gfv").read_bytes()
    assert back == data and irep.frames == 30
    _, groups = gfv_groups(back)
    assert all(np.array_equal(a, b) for a, b in zip(groups[0].acc, enc.trace, strict=True))
    for kw in ({"form": "hm"}, {"pupils": False}, {"one_nal_per_frame": True}):
        assert annexb_to_gfv(gfv_to_annexb(data, **kw)[0])[0] == data
    assert read_any(tmp_path / "clip.265") == data and read_any(src) == data
    # FFmpeg still decodes the key frame, bit-identically to gfvc's own decode
    import av

    from gfvc.keyframe import keyframe_codec
    from gfvc.keyframe._av import av_frame_to_rgb

    ctx = av.CodecContext.create("hevc", "r")
    frames = []
    for pkt in ctx.parse((tmp_path / "clip.265").read_bytes()) + ctx.parse(None):
        frames += ctx.decode(pkt)
    frames += ctx.decode(None)
    assert len(frames) == 1
    assert np.array_equal(
        av_frame_to_rgb(frames[0]), keyframe_codec("x265").decode(groups[0].picture, 256, 256)
    )
    # the configuration drives the reference quantiser onto exactly our integers
    _check_cfg_reproduces((tmp_path / "clip.cfg").read_text(), gfv_to_annexb(data)[2][0])


def _cfg_lists(text: str) -> dict[str, list[str]]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.split()
    return out


def _check_cfg_reproduces(text, msgs) -> None:
    """Feed the cfg's values through the reference encoder model: same payloads as ours."""
    gfv, gfve = msgs
    cfg = _cfg_lists(text)
    pre = "SEIGenerativeFaceVideo"
    assert int(cfg[pre + "Number"][0]) == len(gfv)
    xs = [float(v) for v in cfg[pre + "XCoordinate"]]
    ys = [float(v) for v in cfg[pre + "YCoordinate"]]
    enc, w_ref, w_ours = ReferenceGfvEncoder(), SeiWriter(), SeiWriter()
    k = gfv[0].coordinates.num_kps
    for i, m in enumerate(gfv):
        pts = np.stack([xs[i * k : (i + 1) * k], ys[i * k : (i + 1) * k]], 1)
        ref = enc.message(
            m.cnt,
            base=m.base_picture,
            coordinates=pts,
            precision=m.coordinates.precision,
            coord_pred=m.coordinates.pred,
        )
        ref.nn = m.nn
        assert w_ref.gfv(ref) == w_ours.gfv(m)
    if gfve:
        e_enc = ReferenceGfveEncoder(0, 0, gfve[0].pupils.precision)
        cols = [[float(v) for v in cfg[pre + "EnhancementPupil" + n]] for n in (
            "LeftEyeCoordinateX", "LeftEyeCoordinateY", "RightEyeCoordinateX", "RightEyeCoordinateY")]  # fmt: skip
        for i, e in enumerate(gfve):
            ref = e_enc.message(
                e.gfv_cnt,
                base=e.base_picture,
                present_idx=e.pupils.present_idx,
                left=(cols[0][i], cols[1][i]),
                right=(cols[2][i], cols[3][i]),
            )
            assert ref.pupils == e.pupils


def test_cfg_for_matrices_reproduces_our_integers():
    h = StreamHeader(2, bytes(8), 256, 256, Fraction(25), 64.0, 1, 1, "yuv420", 30, False, 60)
    accs = random_walk(60, 12, 9, zero_start=True)
    data = make_gfv(2, 64.0, [accs], key_sent=False, picture=hevc_picture())
    gfv, _ = gfv_to_annexb(data)[2][0]
    cfg = _cfg_lists(vtm_cfg(gfv))
    pre = "SEIGenerativeFaceVideo"
    assert (
        cfg[pre + "MatrixTypeIdx"] == ["0"] * 12
        and cfg[pre + "NumMatricestoNumKpsFlag"] == ["1"] * 12
    )
    elems = np.array([float(v) for v in cfg[pre + "MatrixElement"]]).reshape(12, 10, 2, 2)
    xs = np.array([float(v) for v in cfg[pre + "XCoordinate"]]).reshape(12, 10)
    ys = np.array([float(v) for v in cfg[pre + "YCoordinate"]]).reshape(12, 10)
    enc, w1, w2 = ReferenceGfvEncoder(), SeiWriter(), SeiWriter()
    for i, m in enumerate(gfv):
        ref = enc.message(
            m.cnt,
            base=m.base_picture,
            coordinates=np.stack([xs[i], ys[i]], 1),
            precision=m.coordinates.precision,
            coord_pred=m.coordinates.pred,
            matrices=[(0, elems[i])],
            matrix_precision=m.matrices.precision,
            matrix_pred=m.matrices.pred,
        )
        ref.nn = m.nn
        assert w1.gfv(ref) == w2.gfv(m)
    assert h.feature_dim == 60


def test_non_power_of_two_qstep_and_several_key_units_round_trip():
    frames = moving_frames(12)
    s = EncodeSettings(model="toy-sent", size=64, crop=False, qstep=3.0, gop=5)
    data = encode_frames(frames, s)
    stream, rep, msgs = gfv_to_annexb(data)
    assert not rep.exact and rep.key_pictures == 3 and len(msgs) == 3
    kinds = [u.nal_type for u in split_nal_units(stream)]
    assert kinds.count(40) == 3 and kinds.count(19) + kinds.count(20) == 3
    assert annexb_to_gfv(stream)[0] == data
    import av  # FFmpeg plays the three key pictures and skips the SEI

    ctx = av.CodecContext.create("hevc", "r")
    decoded = [f for pkt in ctx.parse(stream) + ctx.parse(None) for f in ctx.decode(pkt)]
    assert len(decoded + list(ctx.decode(None))) == 3


def test_absolute_anchor_needs_and_uses_the_model():
    frames = moving_frames(8)
    model = ToyModel(64)
    data = encode_frames(frames, EncodeSettings(model="toy", size=64, crop=False), model=model)
    with pytest.raises(InputError, match="needs the model"):
        gfv_to_annexb(data, anchor="absolute")
    stream, rep, msgs = gfv_to_annexb(data, anchor="absolute", model=ToyModel(64))
    assert rep.anchor == "absolute" and not rep.exact
    # the SEI now holds the model's real key feature (within half a grid step)
    from gfvc.keyframe import keyframe_codec

    _, groups = gfv_groups(data)
    key = ToyModel(64).analyse_key(keyframe_codec("x265").decode(groups[0].picture, 64, 64))
    v = SeiReader().gfv(SeiWriter().gfv(msgs[0][0][0]))
    assert np.abs(v.matrix_arrays()[0].ravel() - key).max() <= 2.0 ** -(rep.matrix_precision + 1)
    with pytest.raises(InputError, match="pass the same model"):
        annexb_to_gfv(stream)
    assert annexb_to_gfv(stream, model=ToyModel(64))[0] == data


def test_vvc_key_frames_travel_in_vvc_nal_units():
    fake_vvc = bytes.fromhex("00000001 0079 1234 000001 0041 abcdef")  # SPS, IDR_N_LP
    accs = random_walk(16, 10, 4, zero_start=False)
    data = make_gfv(251, 64.0, [accs], key_sent=True, picture=fake_vvc, kf_id=3, width=64)
    stream, rep, _ = gfv_to_annexb(data)
    assert rep.codec == "vvc" and not rep.reencoded
    assert stream.startswith(fake_vvc) and stream[
        len(fake_vvc) : len(fake_vvc) + 5
    ] == bytes.fromhex("00000100c1")
    back, irep = annexb_to_gfv(stream, hint=".266")
    assert irep.codec == "vvc" and back == data


def test_lossless_key_frame_is_reencoded_losslessly_and_features_survive():
    frames = moving_frames(6)
    s = EncodeSettings(model="toy-sent", size=64, crop=False, keyframe_codec="lossless")
    data = encode_frames(frames, s)
    stream, rep, _ = gfv_to_annexb(data)
    assert rep.reencoded and rep.codec == "hevc"
    back, _ = annexb_to_gfv(stream)
    assert_same_integers(data, back)
    from gfvc.bitstream import parse_stream
    from gfvc.keyframe import keyframe_codec

    h = parse_stream(back).header
    assert (h.keyframe_codec_id, h.keyframe_format) == (1, "rgb444")
    _, g_orig = gfv_groups(data)
    _, g_back = gfv_groups(back)
    orig = keyframe_codec("lossless").decode(g_orig[0].picture, 64, 64)
    assert np.array_equal(
        keyframe_codec("x265", fmt="rgb444").decode(g_back[0].picture, 64, 64), orig
    )


def test_key_side_information_travels_as_user_data():
    accs = random_walk(16, 6, 2, zero_start=False)
    data = make_gfv(
        251,
        64.0,
        [accs, accs],
        key_sent=True,
        picture=hevc_picture(),
        width=64,
        sides=[b"\x01\x02", b"side"],
    )
    stream, _, _ = gfv_to_annexb(data)
    assert annexb_to_gfv(stream)[0] == data
    assert annexb_to_gfv(gfv_to_annexb(data, one_nal_per_frame=True)[0])[0] == data


def test_foreign_stream_import_with_a_given_model():
    """A stream as VTM would write it from a configuration: no gfvc URI, mesh layout."""
    from gfvc.models.mesh import MeshModel

    mesh = MeshModel(256)
    layout = plan_layout(mesh.fields, "mesh", 256)
    gm = GridMap.create(layout, 0.5)
    accs = [a + 64 for a in random_walk(100, 8, 7, zero_start=False)]  # pixels 48..208
    gfv_enc, pup_enc = GfvGridEncoder(1), GfvePupilGridEncoder(0, 1, gm.coord_precision)
    w, msgs = SeiWriter(), []
    for t, a in enumerate(accs):
        coords, mats, pup = gm.grids(a)
        m = gfv_enc.message(t, base=t == 0, coordinates=coords, precision=gm.coord_precision)
        msgs += [
            SeiMessage(223, w.gfv(m)),
            SeiMessage(224, w.gfve(pup_enc.message(t, base=t == 0, left=pup[0], right=pup[1]))),
        ]
    stream = hevc_picture(256) + sei_nal_unit(msgs, "hevc")
    with pytest.raises(InputError, match="not written by gfvc"):
        annexb_to_gfv(stream)
    back, rep = annexb_to_gfv(stream, model="mesh")
    assert rep.foreign and rep.frames == 8
    h, groups = gfv_groups(back)
    assert h.qstep == 0.5 and h.model_id == 1 and h.key_feature_sent
    assert all(np.array_equal(x, y) for x, y in zip(groups[0].acc, accs, strict=True))


def test_stream_level_errors_and_ignored_reserved_messages():
    accs = random_walk(16, 5, 8, zero_start=False)
    data = make_gfv(251, 64.0, [accs], key_sent=True, picture=hevc_picture(), width=64)
    stream, _, _ = gfv_to_annexb(data)
    # a message with a reserved gfv_id in its own suffix SEI is ignored, as required
    reserved = payload(ue(300) + "1 1 0 0 0 1 0 1 1 0 1 1 0")  # gfv_id 300
    extra = sei_nal_unit([SeiMessage(223, reserved)], "hevc")
    back, rep = annexb_to_gfv(stream + extra)
    assert back == data and rep.ignored_messages == 1
    with pytest.raises(InputError, match="Annex-B"):
        annexb_to_gfv(data)
    with pytest.raises(BitstreamError, match="no GFV SEI"):
        annexb_to_gfv(hevc_picture())
    prefix = hevc_picture() + sei_nal_unit([SeiMessage(223, reserved)], "hevc", suffix=False)
    with pytest.raises(BitstreamError, match="prefix SEI"):
        annexb_to_gfv(prefix)
    bad_uri = GfvMessage(
        cnt=0,
        base_picture=True,
        nn=NeuralNetworkInfo(
            1, "tag:gfvc,2025:gfv-features", "urn:gfvc:gfv:1?model=mesh&qstep=abc"
        ),
        coordinates=Coordinates(False, 1, [(0, 0)]),
    )
    with pytest.raises(BitstreamError, match="URI"):
        annexb_to_gfv(
            hevc_picture() + sei_nal_unit([SeiMessage(223, SeiWriter().gfv(bad_uri))], "hevc")
        )
    rng = np.random.default_rng(11)
    for _ in range(60):
        d = bytearray(stream)
        i = int(rng.integers(len(hevc_picture()), len(d)))
        d[i] ^= 1 << int(rng.integers(8))
        cut = bytes(d[: int(rng.integers(len(d) // 2, len(d) + 1))])
        try:
            annexb_to_gfv(cut)
        except GfvcError:
            pass
