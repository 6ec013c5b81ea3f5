"""The enhancement layer (issue 13): a low-resolution x265 base picture in every unit, fused
with the animated key frame. Real clips from ../shared/data/faces, people the fusion network
never saw in training."""

from __future__ import annotations

import struct
import zlib
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, clip, clip_frames, run_cli
from pytorch_msssim import ms_ssim

from gfvc.bitstream import KEY, StreamHeader, open_packet, parse_stream
from gfvc.bitstream.extension import enhancement_info, without_enhancement
from gfvc.codec import (
    Decoder,
    Encoder,
    EncodeSettings,
    decode_frames,
    encode_frames,
    stream_report,
)
from gfvc.enhance import ENHANCE_FROM_KBPS, BaseLayerSettings, plan_layers
from gfvc.enhance.base_layer import BaseLayerDecoder, BaseLayerEncoder
from gfvc.errors import BitstreamError, InputError
from gfvc.keyframe import keyframe_codec


@pytest.fixture(scope="module")
def model():
    from gfvc.models import model_class

    return model_class("landmark").create()


@pytest.fixture(scope="module")
def held_out():
    return clip_frames("vr_1.mp4", 40)


def _msssim(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    ta = torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).float()
    tb = torch.from_numpy(np.stack(b)).permute(0, 3, 1, 2).float()
    return float(ms_ssim(ta, tb, data_range=255))


def test_plan_features_only_at_the_bottom_then_a_base_that_grows():
    assert plan_layers(4).base_size is None and plan_layers(4).generative_kbps == 4
    assert plan_layers(8).base_size is None  # the generative layer alone beats a starved base
    low, high = plan_layers(11), plan_layers(20)
    assert low.base_size == high.base_size == 128  # foveated: it beats 64x64 from 7.5 kbps
    assert low.base_kbps < high.base_kbps
    for r, p in ((ENHANCE_FROM_KBPS, plan_layers(ENHANCE_FROM_KBPS)), (11, low), (20, high)):
        assert p.generative_kbps + p.base_kbps == pytest.approx(r)
        assert 2 <= p.generative_kbps <= 3


def test_base_layer_one_picture_per_chunk_and_restarts(held_out):
    enc, dec = BaseLayerEncoder(64, qp=30), BaseLayerDecoder(64)
    chunks = [enc.encode(f, restart=i % 10 == 0) for i, f in enumerate(held_out[:20])]
    out = [dec.decode(c, restart=i % 10 == 0) for i, c in enumerate(chunks)]
    assert all(o.shape == (64, 64, 3) for o in out)
    # a restart is an entry point: a fresh decoder from frame 10 gives the same pictures
    fresh = BaseLayerDecoder(64)
    again = [fresh.decode(c, restart=i == 0) for i, c in enumerate(chunks[10:])]
    assert all(np.array_equal(a, b) for a, b in zip(again, out[10:], strict=True))
    with pytest.raises(BitstreamError):
        BaseLayerDecoder(64).decode(chunks[3])  # not at a start


@pytest.mark.parametrize("size", [64, 128])
def test_base_layer_codes_a_clip_the_same_way_every_time(size):
    """Reproducible streams: x265 coded 64x64 pictures (one CTU) differently between runs."""
    frames, runs = clip_frames("lp_d3.mp4", 50), []
    for _ in range(3):
        enc = BaseLayerEncoder(size, qp=40)
        runs.append([enc.encode(f, restart=i == 0) for i, f in enumerate(frames)])
    assert runs[1] == runs[0] and runs[2] == runs[0]


def test_fused_frames_beat_the_generative_layer_and_the_base(model, held_out):
    model.reset()
    gen = encode_frames(held_out, EncodeSettings(), Fraction(25), model=model)
    enh = encode_frames(
        held_out, EncodeSettings(base_size=128, base_qp=36), Fraction(25), model=model
    )
    g = list(decode_frames(gen, model=model))
    e = list(decode_frames(enh, model=model))
    rep = stream_report(enh)
    assert rep.enhancement_bits > 0 and stream_report(gen).enhancement_bits == 0
    assert rep.total_bits == (
        rep.keyframe_bits + rep.feature_bits + rep.enhancement_bits + rep.overhead_bits
    )
    # the base alone, upscaled the way the decoder does
    from gfvc.bitstream.format import split_enhancement
    from gfvc.enhance.fovea import defoveate

    b = BaseLayerDecoder(128, foveated=True)
    base = []
    # the chunk follows a key unit's five info bytes and starts a feature unit's payload
    for i, u in enumerate(parse_stream(enh).units):
        pic = b.decode(split_enhancement(u[6:] if u[0] == KEY else u[1:], "unit")[0], i == 0)
        t = torch.from_numpy(pic).permute(2, 0, 1)[None].float() / 255
        base.append((defoveate(t, b.fovea, 256)[0].permute(1, 2, 0) * 255).round().byte().numpy())
    s_gen = _msssim(held_out[1:], g[1:])
    s_enh = _msssim(held_out[1:], e[1:])
    s_base = _msssim(held_out[1:], base[1:])
    assert s_enh > s_gen + 0.005, (s_enh, s_gen)
    assert s_enh > s_base, (s_enh, s_base)


def test_every_key_unit_stays_an_entry_point(model, held_out):
    model.reset()
    data = encode_frames(
        held_out[:30], EncodeSettings(base_size=64, base_qp=34, gop=10), Fraction(25), model=model
    )
    full = list(decode_frames(data, model=model))
    parsed = parse_stream(data)
    dec = Decoder(parsed.header, model)
    tail = [dec.decode_unit(u) for u in parsed.units[20:]]
    assert all(np.array_equal(a, b) for a, b in zip(tail, full[20:], strict=True))


def test_damaged_base_picture_is_refused_until_the_next_key(model, held_out):
    model.reset()
    enc = Encoder(
        model, keyframe_codec("svtav1", qp=45), gop=8, base_layer=BaseLayerSettings(64, qp=34)
    )
    packets = [enc.encode_frame(f) for f in held_out[:12]]
    dec = Decoder(enc.header.to_bytes(), type(model).create())
    for p in packets[:3]:
        last = dec.receive(p)
        assert last.decoded
    unit, seq = open_packet(packets[3])
    bad = bytearray(unit)
    bad[2:8] = b"\x00\x00\x00\x01\xff\xff"  # the HEVC picture's first bytes, not the length
    from gfvc.bitstream import pack_packet

    got = dec.receive(pack_packet(bytes(bad), seq))
    assert not got.decoded and got.needs_refresh
    assert np.array_equal(got.frame, last.frame)  # the last good frame is held
    shown = [dec.receive(p) for p in packets[4:]]
    assert not any(s.decoded for s in shown[:4])  # frames 4-7 wait for the key at 8
    assert all(s.decoded for s in shown[4:])


def test_header_needs_its_settings_and_older_versions_refuse_the_flag(model):
    enc = Encoder(model, keyframe_codec("svtav1"), base_layer=BaseLayerSettings(64, qp=34))
    h = enc.header
    assert h.enhanced and enhancement_info(h).size == 64
    stripped = without_enhancement(h)
    assert not stripped.enhanced and enhancement_info(stripped) is None
    # flag bit 1 set but no extension tag 2: the header parses, the decoder refuses it
    from dataclasses import replace

    broken = replace(stripped, enhanced=True)
    with pytest.raises(BitstreamError, match="enhancement"):
        Decoder(broken.to_bytes(), model)
    # a version-2 header with flag bit 1 is corrupt
    raw = bytearray(h.to_bytes()[:-4])
    raw[4] = 2
    data = bytes(raw) + struct.pack(">I", zlib.crc32(bytes(raw)))
    with pytest.raises(BitstreamError, match="flags"):
        StreamHeader.parse(data)


def test_settings_mistakes_are_one_line(tmp_path):
    with pytest.raises(InputError):
        BaseLayerSettings(100, qp=30)
    with pytest.raises(InputError):
        EncodeSettings(base_size=64)
    with pytest.raises(InputError):
        EncodeSettings(base_size=64, base_qp=30, kbps=8)
    src = clip("vr_1.mp4")
    for args, pattern in (
        (["--base-size", "100", "--base-qp", "30"], "base-size"),
        (["--base-size", "64"], "base-size and --base-qp"),
        (["--base-size", "64", "--base-qp", "60"], "base-qp"),
        (["--model", "mesh", "--base-size", "64", "--base-qp", "30"], "enhancement layer"),
    ):
        res = run_cli("encode", src, "-o", tmp_path / "x.gfv", "--frames", "3", *args)
        assert_one_line_error(res, pattern)
        assert not (tmp_path / "x.gfv").exists()


def test_info_shows_the_share_and_export_says_it_drops_the_layer(tmp_path):
    src = clip("vr_1.mp4")
    out = tmp_path / "e.gfv"
    res = run_cli(
        "encode", src, "-o", out, "--frames", "20", "--base-size", "64", "--base-qp", "34"
    )
    assert res.exit_code == 0, res.output
    info = run_cli("info", out).output
    assert "enhancement" in info and "HEVC base layer 64x64, fusion weights fusion.pt" in info
    res = run_cli("export", out, "-o", tmp_path / "e.265")
    assert res.exit_code == 0 and "dropped" in res.output
    back = tmp_path / "b.gfv"
    assert run_cli("import", tmp_path / "e.265", "-o", back).exit_code == 0
    assert "enhancement" not in run_cli("info", back).output
    assert run_cli("decode", back, "-o", tmp_path / "b.mp4").exit_code == 0


def test_fusion_training_runs_resumes_and_ships(tmp_path):
    """Two steps on a tiny synthetic set, then two more from the checkpoint; the weights
    load as the decoder loads them, and say whether they were trained on aligned warps."""
    from gfvc.enhance import load_fuser
    from gfvc.enhance.align import ALIGN_NAME
    from gfvc.train.fusion import FusionTrainConfig, train_fusion

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        gt = rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
        np.savez(tmp_path / f"{name}.npz", gt=gt, warp=gt, b64_30=gt[:, ::4, ::4])
    cfg = FusionTrainConfig(
        data_dir=str(tmp_path), run_dir=str(tmp_path / "run"), steps=2, batch=2, crop=32,
        checkpoint_every=1,
    )  # fmt: skip
    train_fusion(cfg, log=lambda s: None)
    cfg.steps = 4
    logs: list[str] = []
    out = train_fusion(cfg, log=logs.append)
    assert any("resumed at step 2" in s for s in logs)
    net, digest, align, regions, detail = load_fuser(str(out))
    assert len(digest) == 8 and net.head.weight.abs().sum() > 0 and align == ""
    assert regions == 0 and detail == 0
    cfg.align, cfg.steps, cfg.run_dir = True, 1, str(tmp_path / "aligned")
    assert load_fuser(str(train_fusion(cfg, log=lambda s: None))).align == ALIGN_NAME


def test_gradient_term_punishes_blur_and_fine_tuning_starts_from_weights(tmp_path):
    """The gradient term is zero for the target itself and grows when the output is blurred;
    ``init`` starts training from given weights (fine-tuning), not from scratch."""
    import torch
    import torch.nn.functional as F

    from gfvc.enhance import fusion_weights_path
    from gfvc.train.fusion import FusionTrainConfig, loss_fn, train_fusion

    t = torch.rand(1, 3, 32, 32)
    blur = F.avg_pool2d(t, 3, 1, 1, count_include_pad=False)
    assert loss_fn(t, t, 0.5, 1.0)[1]["grad"] == 0
    assert loss_fn(blur, t, 0.5, 1.0)[1]["grad"] > 0.1
    assert "grad" not in loss_fn(blur, t, 0.5)[1]
    gt = np.random.default_rng(1).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", gt=gt, warp=gt, b64_30=gt[:, ::4, ::4])
    cfg = FusionTrainConfig(
        data_dir=str(tmp_path), run_dir=str(tmp_path / "run"), steps=1, batch=2, crop=32,
        lr=1e-9, grad_weight=1.0, init=str(fusion_weights_path()),
    )  # fmt: skip
    out = torch.load(train_fusion(cfg, log=lambda s: None), weights_only=True)["net"]
    shipped = torch.load(fusion_weights_path(), weights_only=True)["net"]
    assert all(torch.allclose(out[k], shipped[k], atol=1e-5) for k in shipped)


def test_eye_weighted_training_finds_the_eyes_and_weights_them(held_out, tmp_path):
    """``eye_weight``: the masks cover both eyes of a real face (a small part of the frame,
    in its upper half), the weighted L1 counts an error there more than the same error
    elsewhere, and a training step runs with them."""
    import torch

    from gfvc.train.fusion import FusionData, FusionTrainConfig, loss_fn, train_fusion

    gt = np.stack(held_out[:4])
    np.savez(tmp_path / "a.npz", gt=gt, warp=gt, b64_30=gt[:, ::4, ::4])
    data = FusionData(tmp_path)
    mask = data.eye_mask(0, 1)
    rows, cols = np.nonzero(mask)
    assert 0.005 < mask.mean() < 0.15 and rows.max() < 0.6 * mask.shape[0]
    assert cols.min() < mask.shape[1] / 2 < cols.max()  # both eyes, either side of the middle
    t = torch.zeros(1, 3, *mask.shape)
    weight = 1.0 + 4.0 * torch.from_numpy(mask)[None, None]
    inside, outside = t.clone(), t.clone()
    inside[..., rows[0], cols[0]] = 1.0
    outside[..., 0, 0] = 1.0
    assert loss_fn(inside, t, 0.0, weight=weight)[0] > loss_fn(outside, t, 0.0, weight=weight)[0]
    cfg = FusionTrainConfig(
        data_dir=str(tmp_path), run_dir=str(tmp_path / "run"), steps=1, batch=2, crop=64,
        eye_weight=4.0,
    )  # fmt: skip
    assert train_fusion(cfg, log=lambda s: None).exists()


def test_alignment_moves_the_warp_onto_the_base(held_out):
    """A warp 3 pixels off the (blurry) base comes back onto it: the aligned warp is closer
    to the frame the base shows than the warp was."""
    import cv2

    from gfvc.enhance.align import WarpAligner

    frame = held_out[10]
    shift = np.float32([[1, 0, 3], [0, 1, -2]])
    warped = cv2.warpAffine(frame, shift, (256, 256), borderMode=cv2.BORDER_REPLICATE)
    base_up = cv2.resize(cv2.resize(frame, (64, 64), interpolation=cv2.INTER_AREA), (256, 256))
    aligned = WarpAligner()(warped, base_up)
    inner = (slice(16, -16), slice(16, -16))
    err = [np.abs(x[inner].astype(float) - frame[inner]).mean() for x in (warped, aligned)]
    assert err[1] < 0.5 * err[0]


def test_take_regions_replaces_only_the_grown_openings():
    """Inside a driving opening (grown, feathered) the fused picture becomes the base's by
    the given weight; far from it, it stays as fused."""
    from gfvc.enhance.fusion import REGION_GROW, take_regions

    fused, base = torch.zeros(1, 3, 64, 64), torch.ones(1, 3, 64, 64)
    masks = torch.zeros(1, 3, 64, 64)
    masks[0, 1, 28:36, 20:40] = 1.0  # an eye opening
    out = take_regions(fused, base, masks, 1.0)
    assert torch.allclose(out[..., 30:34, 24:36], base[..., 30:34, 24:36], atol=0.01)
    assert out[..., :10, :].abs().max() == 0 and out[..., 50:, :].abs().max() == 0
    edge = out[0, 0, 36 + REGION_GROW, 30]  # the grown ring's border: feathered
    assert 0.1 < edge < 0.9
    half = take_regions(fused, base, masks, 0.5)
    assert torch.allclose(half, out * 0.5, atol=1e-6)
    assert torch.equal(take_regions(fused, base, torch.zeros_like(masks), 1.0), fused)


def test_add_detail_moves_only_the_warps_fine_detail_inside_the_face():
    """Inside the face's hull (eroded) and away from the grown openings the fused picture's
    fine detail becomes the warp's and its coarse shading stays; outside the hull, inside an
    opening, at weight 0 or without a face nothing changes."""
    import cv2

    from gfvc.enhance.fusion import DETAIL_SIGMA, add_detail, detail_mask
    from gfvc.models.landmark import face_hull

    yy, xx = np.mgrid[0:96, 0:96].astype(np.float32)
    shading = np.repeat((0.3 + 0.3 * xx / 96)[..., None], 3, -1)
    texture = np.repeat((((yy // 2 + xx // 2) % 2) * 0.2 + 0.4)[..., None], 3, -1)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()

    def hwc(x: torch.Tensor) -> np.ndarray:
        return x[0].permute(1, 2, 0).numpy()

    fused, warped = t(shading), t(texture)
    corners = np.array([[16.0, 16.0], [80.0, 16.0], [80.0, 80.0], [16.0, 80.0]])
    hull = torch.from_numpy(face_hull(corners, 96))[None, None]
    assert hull[0, 0, 48, 48] == 1 and hull[0, 0, 8, 48] == 0
    masks = torch.zeros(1, 3, 96, 96)
    masks[0, 0, 60:64, 40:56] = 1.0  # a mouth opening
    out = hwc(add_detail(fused, warped, masks, hull, 1.0))
    m = detail_mask(hull[0, 0].numpy(), masks[0].numpy())
    assert m[36, 36] > 0.99 and m[62, 48] < 0.05 and m[4, 48] < 1e-4

    def fine(a: np.ndarray) -> np.ndarray:
        return a - cv2.GaussianBlur(a, (0, 0), DETAIL_SIGMA)

    inner = np.s_[30:42, 30:42]
    assert np.abs(fine(out)[inner] - fine(texture)[inner]).max() < 0.02
    coarse = (
        cv2.GaussianBlur(out, (0, 0), 3.0)[inner] - cv2.GaussianBlur(shading, (0, 0), 3.0)[inner]
    )
    assert np.abs(coarse).max() < 0.02
    assert np.abs(out[:4] - shading[:4]).max() < 1e-4  # outside the face
    assert np.abs(out[61:63, 46:50] - shading[61:63, 46:50]).max() < 0.01  # the mouth
    assert torch.equal(add_detail(fused, warped, masks, hull, 0.0), fused)
    assert torch.equal(add_detail(fused, warped, masks, torch.zeros_like(hull), 1.0), fused)


def test_streams_name_the_fusion_their_base_can_serve():
    """A base layer asked for less than ``REGIONS_FROM_BASE_KBPS`` codes for the network
    without the openings taken from the base (too coarse to show them) and with the warp's
    fine detail; from it up, and at a fixed base QP, for the current weights, which take
    the openings and leave the detail to the base."""
    import gfvc.enhance as enhance
    from gfvc.enhance import REGIONS_FROM_BASE_KBPS, BaseLayerSettings, fusion_for

    current = enhance.load_fuser()
    low = fusion_for(BaseLayerSettings(128, kbps=REGIONS_FROM_BASE_KBPS - 0.1))
    assert low.regions == 0 and low.hash != current.hash and low.align == current.align
    assert low.detail > 0 and current.detail == 0  # the warp's detail over a coarse base only
    for base in (
        BaseLayerSettings(128, kbps=REGIONS_FROM_BASE_KBPS),
        BaseLayerSettings(128, qp=30),
    ):
        assert fusion_for(base) is current
    assert enhance.fuser_for(low.hash) is low  # a decoder finds it by the hash it names


def test_a_coarse_bases_stream_takes_the_warps_detail_in_the_face_only(monkeypatch, held_out):
    """At 12 kbps (a base asked for less than ``REGIONS_FROM_BASE_KBPS``) the stream names
    weights with ``detail``, and its decoded feature frames differ from the same fusion
    without it inside the face, not in the picture's corners nor on the key frame."""
    import gfvc.enhance as enhance

    frames = held_out[:6]
    data = encode_frames(frames, EncodeSettings(kbps=12), Fraction(25))
    named = enhancement_info(parse_stream(data).header).fusion_hash
    assert enhance.fuser_for(named).detail > 0
    shown = np.stack(list(decode_frames(data))).astype(int)
    monkeypatch.setattr(enhance, "add_detail", lambda fused, *rest: fused)
    plain = np.stack(list(decode_frames(data))).astype(int)
    diff = np.abs(shown - plain)
    assert diff[0].max() == 0 and diff[1:, 108:148, 108:148].mean() > 0.1
    assert diff[:, :24, :24].max() == 0 and diff[:, :24, -24:].max() == 0


def test_streams_coded_for_earlier_fusion_weights_still_decode(monkeypatch, held_out):
    """A stream names its fusion weights by hash: one coded for an earlier release's weights
    decodes with them, as they were (v1: no alignment; v2: aligned, the base's eye and
    mouth not taken over); an unknown hash is a one-line refusal."""
    import gfvc.enhance as enhance
    from gfvc.errors import CheckpointError

    older = {p.stem: p for p in enhance._older_fusion_weights()}
    assert {"fusion-v1", "fusion-v2"} <= set(older), "earlier fusion weights ship in gfvc/data"
    current = enhance.load_fuser()
    assert current.regions > 0 and current.align
    frames = held_out[:6]
    for name, (align, regions) in {"fusion-v1": (False, 0), "fusion-v2": (True, 0)}.items():
        monkeypatch.setattr(enhance, "fusion_weights_path", lambda p=older[name]: p)
        enhance.load_fuser.cache_clear()
        data = encode_frames(frames, EncodeSettings(kbps=14), Fraction(25))
        monkeypatch.undo()
        enhance.load_fuser.cache_clear()
        named = enhancement_info(parse_stream(data).header).fusion_hash
        assert named == enhance.load_fuser(str(older[name])).hash != current.hash
        dec = enhance.EnhancementDecoder(128, True, named)
        assert (dec.aligner is not None) == align and dec.regions == regions
        assert dec.detail == 0
        assert len(list(decode_frames(data))) == len(frames)
    with pytest.raises(CheckpointError, match="does not have"):
        enhance.fuser_for(b"\0" * 8)


def test_a_second_pass_spends_the_base_layers_margin_on_the_key():
    """x265 is asked for 90 % of the base layer's share. One pass reserves the whole share
    for the frames ahead and never spends the margin; a second pass reserves what the first
    pass's features and base pictures really cost, so the key picture gets the rest and the
    stream comes to its target (vr_1's first 4 s at 12 kbps: 10.2 -> 12.0 kbps, key 4.8 ->
    12.3 kbit; over 1.6 s the key alone takes the margin, so the clip is longer here)."""
    frames = clip_frames("vr_1.mp4", 100)
    reports = {}
    for two in (False, True):
        s = EncodeSettings(kbps=12, two_pass=two)
        reports[two] = stream_report(encode_frames(frames, s, Fraction(25)))
    one, two = reports[False], reports[True]
    assert one.kbps < 0.95 * 12 and abs(two.kbps / 12 - 1) <= 0.04, (one.kbps, two.kbps)
    assert two.keyframe_bits > one.keyframe_bits
    assert abs(two.enhancement_bits / one.enhancement_bits - 1) <= 0.05  # the base is as it was


def _facemesh_points(frame: np.ndarray) -> np.ndarray:
    """The landmark model's points of a real frame ((P, 2) pixels), FaceMesh on the frame."""
    from gfvc.io import FaceLandmarker
    from gfvc.models.faceshape import POINTS

    with FaceLandmarker() as lm:
        pts = lm(frame)
    assert pts is not None
    return pts[list(POINTS), :2].astype(np.float64)


def test_fusion_guide_marks_the_openings_the_warp_changed(held_out):
    """Masks of the inner mouth and both eyes, where a real face has them; the signed
    channels are zero where the driving openings equal the key's and positive in the mouth
    when the mouth opens wider than the key's."""
    from gfvc.models.faceshape import POINTS
    from gfvc.models.landmark import GUIDE_CHANNELS, fusion_guide

    key = _facemesh_points(held_out[5])
    g = fusion_guide(key, key, 256)
    assert g.shape == (GUIDE_CHANNELS, 256, 256) and g.dtype == np.float32
    mouth, left, right = g[:3]
    for m in (left, right):
        assert 0 < m.mean() < 0.02 and np.nonzero(m)[0].max() < 0.6 * 256
    assert np.nonzero(right)[1].mean() < np.nonzero(left)[1].mean()  # the person's right eye
    assert np.abs(g[3:]).max() == 0
    drv = key.copy()
    lower = list(POINTS).index(14)  # the lower inner lip's middle
    drv[lower, 1] += 8
    g = fusion_guide(drv, key, 256)
    assert g[3][g[0] > 0.5].min() > 0 and np.abs(g[4:]).max() == 0


def test_widened_fusion_network_starts_where_the_old_one_was_and_learns_the_hints():
    import torch

    from gfvc.enhance import load_fuser
    from gfvc.enhance.fusion import Fuser, widen_from

    old = load_fuser().net
    new = Fuser(width=old.head.in_channels, guide=6)
    widen_from(new, old.state_dict())
    b, w, g = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64), torch.rand(1, 6, 64, 64)
    with torch.no_grad():
        assert (old(b, w) - new(b, w, g)).abs().max() < 1e-5
    new(b, w, g).mean().backward()
    assert new.stem[0].weight.grad[:, 6:].abs().sum() > 0  # the hints' weights move
    assert new.full.pw.weight.grad[:, -6:].abs().sum() > 0
    with pytest.raises(ValueError, match="6 guide channels"):
        new(b, w)


def test_guided_fusion_weights_train_ship_and_decode(monkeypatch, held_out, tmp_path):
    """Training data carries each decoded frame's driving and key landmarks; one step of
    guided training from the packaged weights ships a network the decoder recognises as
    guided, and streams coded for it decode with the hints: from the widened start, the
    same pictures as the packaged network's (within rounding)."""
    import torch

    import gfvc.enhance as enhance
    from gfvc.codec import build_model
    from gfvc.train.fusion import FusionTrainConfig, _decode_with_landmarks, train_fusion

    frames = held_out[:8]
    model = build_model("landmark")
    data = encode_frames(frames, EncodeSettings(qp=40), Fraction(25), model=model)
    model.refiner = None
    warps, drv, key = _decode_with_landmarks(data, model)
    assert warps.shape == (8, 256, 256, 3) and drv.shape == key.shape == (8, drv.shape[1], 2)
    np.testing.assert_array_equal(drv[0], key[0])  # the key frame itself
    assert np.abs(drv[1:] - key[1:]).max() > 0.5 and "synthesize" not in vars(model)
    gt = np.stack(frames)
    np.savez(
        tmp_path / "a.npz", gt=gt, warp=warps, drv_pts=drv, key_pts=key, b64_30=gt[:, ::4, ::4]
    )
    cfg = FusionTrainConfig(
        data_dir=str(tmp_path), run_dir=str(tmp_path / "run"), steps=1, batch=2, crop=64,
        lr=1e-9, guide=True, init=str(enhance.fusion_weights_path()),
    )  # fmt: skip
    ck = torch.load(train_fusion(cfg, log=lambda s: None), weights_only=True)
    assert ck["guide"] == 6
    ck["align"] = enhance.load_fuser().align  # as the packaged network's
    ck["regions"] = enhance.load_fuser().regions
    ck["detail"] = enhance.load_fuser().detail
    guided = tmp_path / "fusion.pt"
    torch.save(ck, guided)

    plain = list(decode_frames(encode_frames(frames, EncodeSettings(kbps=16), Fraction(25))))
    monkeypatch.setattr(enhance, "fusion_weights_path", lambda: guided)
    monkeypatch.setattr(enhance, "_older_fusion_weights", lambda: [])
    enhance.load_fuser.cache_clear()
    try:
        data = encode_frames(frames, EncodeSettings(kbps=16), Fraction(25))
        info = enhancement_info(parse_stream(data).header)
        assert enhance.EnhancementDecoder(128, True, info.fusion_hash).guided
        out = list(decode_frames(data))
    finally:
        enhance.load_fuser.cache_clear()
    diff = np.abs(np.stack(out).astype(int) - np.stack(plain))
    assert diff.max() <= 2 and diff.mean() < 0.01
