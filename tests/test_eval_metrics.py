"""Metric definitions against hand-computed values, identity conventions, face metrics on real
clips, LPIPS/DISTS code paths with constructed weights, and the sequence evaluator."""

from __future__ import annotations

import json
import math
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gfvc.errors import BackendUnavailableError, CheckpointError, InputError, UnknownNameError
from gfvc.eval import perceptual, pixel, vmaf
from gfvc.eval._frames import resize_rgb
from gfvc.eval.metrics import ALL_METRICS, SequenceEvaluator, evaluate_sequences

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FACES = SHARED / "data" / "faces"
needs_clips = pytest.mark.skipif(not FACES.is_dir(), reason=f"real clips not found at {FACES}")


def read_clip(name: str, n: int, start: int = 0) -> list[np.ndarray]:
    """n frames from a clip, centre square crop resized to 256x256 (PyAV only, no gfvc.io)."""
    import av

    frames: list[np.ndarray] = []
    with av.open(str(FACES / f"{name}.mp4")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i < start:
                continue
            a = frame.to_ndarray(format="rgb24")
            h, w = a.shape[:2]
            s = min(h, w)
            a = a[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
            frames.append(resize_rgb(np.ascontiguousarray(a), 256, 256))
            if len(frames) == n:
                break
    return frames


def textured(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------ PSNR
def test_psnr_rgb_constant_offset() -> None:
    ref = np.full((32, 48, 3), 100, np.uint8)
    dec = ref + np.uint8(5)  # MSE = 25 in every channel
    assert pixel.psnr_rgb(ref, dec) == pytest.approx(10 * math.log10(255**2 / 25))


def test_psnr_rgb_pools_mse_over_channels() -> None:
    """One MSE over R, G and B, not the mean of three per-channel PSNRs."""
    ref = np.zeros((8, 8, 3), np.uint8)
    dec = ref.copy()
    dec[..., 0] = 10  # MSE 100 in R, 0 in G and B -> pooled MSE 100/3
    assert pixel.psnr_rgb(ref, dec) == pytest.approx(10 * math.log10(255**2 / (100 / 3)))


def test_psnr_y_bt709_full_range_hand_value() -> None:
    ref = np.zeros((4, 4, 3), np.uint8)
    dec = ref.copy()
    dec[..., 0] = 255  # pure red: Y = 0.2126 * 255
    assert pixel.rgb_to_y(dec)[0, 0] == pytest.approx(54.213)
    assert pixel.psnr_y(ref, dec) == pytest.approx(-20 * math.log10(0.2126))  # 13.449 dB
    assert pixel.psnr_y(ref, dec) == pytest.approx(13.4487, abs=1e-4)


def test_bt709_luma_of_grey_and_green() -> None:
    grey = np.full((1, 1, 3), 128, np.uint8)
    green = np.array([[[0, 200, 0]]], np.uint8)
    assert pixel.rgb_to_y(grey)[0, 0] == pytest.approx(128.0)
    assert pixel.rgb_to_y(green)[0, 0] == pytest.approx(0.7152 * 200)


def test_identical_frames_conventions() -> None:
    f = textured()
    assert pixel.psnr_rgb(f, f) == pixel.PSNR_IDENTICAL_DB == 100.0
    assert pixel.psnr_y(f, f) == 100.0
    assert pixel.ssim(f, f) == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------ SSIM / MS-SSIM
def test_ssim_matches_pytorch_msssim_on_luma() -> None:
    from pytorch_msssim import ssim as torch_ssim

    ref = textured(80, 96, 1)
    noise = np.random.default_rng(2).normal(0, 12, ref.shape)
    dec = np.clip(ref + noise, 0, 255).astype(np.uint8)
    y = [torch.from_numpy(pixel.rgb_to_y(f))[None, None] for f in (ref, dec)]
    expected = float(torch_ssim(y[0], y[1], data_range=255))
    assert pixel.ssim(ref, dec) == pytest.approx(
        expected, abs=1e-7
    )  # torch builds its window in float32
    assert 0 < pixel.ssim(ref, dec) < 1


def test_ssim_constant_planes_hand_value() -> None:
    """Flat planes: variances are 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1)."""
    ref = np.full((20, 20, 3), 100, np.uint8)
    dec = np.full((20, 20, 3), 120, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert pixel.ssim(ref, dec) == pytest.approx((2 * 100 * 120 + c1) / (100**2 + 120**2 + c1))


def test_ms_ssim_needs_161_pixels() -> None:
    small = textured(160, 200)
    assert pixel.ms_ssim(small, small) is None
    assert "161" in pixel.ms_ssim_unavailable_reason(160, 200)
    big = textured(161, 161)
    assert pixel.ms_ssim(big, big) == pytest.approx(1.0, abs=1e-6)


def test_pair_checks() -> None:
    f = textured()
    with pytest.raises(InputError, match="decoded frame is 64x63"):
        pixel.psnr_rgb(f, f[:63])
    with pytest.raises(InputError, match="uint8"):
        pixel.psnr_y(f, f.astype(np.float32))
    with pytest.raises(InputError, match=r"\(H, W, 3\)"):
        pixel.ssim(f[..., 0], f[..., 0])


# ------------------------------------------------------------------ face metrics
@needs_clips
def test_face_metrics_identical_and_identity_order() -> None:
    from gfvc.eval import face

    a0, a60 = read_clip("lp_d3", 1)[0], read_clip("lp_d3", 1, start=60)[0]
    other = read_clip("vr_2", 1)[0]
    got = face.dlib_pair_metrics(a0, a0)
    assert got["lmd"] == 0.0
    assert got["id_dist"] == pytest.approx(0.0, abs=1e-6)
    same = face.id_dist(a0, a60)
    different = face.id_dist(a0, other)
    assert same < 0.5 < different
    assert face.lmd(a0, a60) > 0.5  # the talking face moved


@needs_clips
@pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")
def test_lmd_mediapipe_identical_is_zero() -> None:
    from gfvc.eval import face

    a0 = read_clip("lp_d3", 1)[0]
    assert face.lmd_mediapipe(a0, a0) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.filterwarnings("ignore:SymbolDatabase.GetPrototype:UserWarning")
def test_no_face_frames_are_left_out_and_noted() -> None:
    flat = [np.full((64, 64, 3), v, np.uint8) for v in (90, 120)]
    report = evaluate_sequences(flat, flat, metrics=["lmd_mediapipe", "lmd"])
    assert report["frames"]["lmd_mediapipe"] == [None, None] and report["lmd_mediapipe"] is None
    assert "2 of 2" in report["notes"]["lmd_mediapipe"]
    assert report["lmd"] == 0.0  # dlib falls back to the whole frame, same fit on both


# ------------------------------------------------------------------ eye and mouth openness
def face68(
    right: float = 1.0, left: float = 1.0, gap: float = 1.0, shift: tuple[float, float] = (0, 0)
) -> np.ndarray:
    """A 68-point array where only the eyes and the mouth matter (all else at the origin).

    Right eye 36-41: corners (0, 0) and (4, 0), lids at x = 1 and 3, y = -right / +right:
    EAR = (2 right + 2 right) / (2 * 4) = right / 2. Left eye 42-47: corners (10, 0) and
    (18, 0), lids at x = 12 and 16, y = -left / +left: EAR = 4 left / 16 = left / 4. Mouth:
    outer corners 48 (0, 20) and 54 (40, 20), inner corners 60 (5, 20) and 64 (35, 20); inner
    lip pairs 61/67, 62/66, 63/65 apart by 2, 4, 6 times ``gap``: mouth openness =
    4 gap / 40 = gap / 10 (with the inner corners it would be 4 gap / 30).
    """
    p = np.zeros((68, 2))
    p[36:42] = [(0, 0), (1, -right), (3, -right), (4, 0), (3, right), (1, right)]
    p[42:48] = [(10, 0), (12, -left), (16, -left), (18, 0), (16, left), (12, left)]
    p[48], p[54], p[60], p[64] = (0, 20), (40, 20), (5, 20), (35, 20)
    for (up, down), d in zip(((61, 67), (62, 66), (63, 65)), (2, 4, 6), strict=True):
        x = 10 + 5 * (up - 61)
        p[up], p[down] = (x, 20 - d * gap / 2), (x, 20 + d * gap / 2)
    return p + np.asarray(shift)


def test_eye_aspect_ratio_and_mouth_openness_hand_values() -> None:
    from gfvc.eval import face

    p = face68()
    assert face.eye_aspect_ratio(p, face.RIGHT_EYE) == pytest.approx(0.5)
    assert face.eye_aspect_ratio(p, face.LEFT_EYE) == pytest.approx(0.25)
    assert face.mouth_openness(p) == pytest.approx(0.1)
    assert face.mouth_openness(face68(gap=0)) == 0.0  # closed lips
    # Rotation, scale and translation change nothing: the ratios are of distances.
    c, s_ = math.cos(0.5), math.sin(0.5)
    moved = 2.5 * p @ np.array([[c, -s_], [s_, c]]).T + (100, 40)
    assert face.eye_aspect_ratio(moved, face.LEFT_EYE) == pytest.approx(0.25)
    assert face.mouth_openness(moved) == pytest.approx(0.1)
    # Per frame: mean over both eyes of |EAR_dec - EAR_ref|, and |MO_dec - MO_ref|.
    eye, mouth = face.openness_errors(p, face68(right=0.5, left=1.0, gap=0.5))
    assert eye == pytest.approx((abs(0.25 - 0.5) + 0) / 2) and mouth == pytest.approx(0.05)
    assert face.openness_errors(None, p) == (None, None)  # no face in the reference
    degenerate = p.copy()
    degenerate[54] = degenerate[48]  # mouth corners coincide: no ratio, frame left out
    assert face.openness_errors(p, degenerate)[1] is None
    with pytest.raises(InputError, match="68"):
        face.mouth_openness(p[:60])


def test_openness_errors_over_two_tiny_sequences(monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluator on known landmarks: frame k of each sequence is a flat image of value k,
    and the dlib fits are replaced by the ``face68`` arrays below."""
    from types import SimpleNamespace

    from gfvc.eval import face

    ref_pts = [face68(), face68(right=0.8), face68()]  # frame 2: no face in the reference
    dec_pts = [face68(shift=(3, 1)), face68(right=0.4, left=1.2, gap=1.5), face68(gap=3)]
    found = [True, True, False]

    def fake_fit(frame: np.ndarray) -> SimpleNamespace:
        k = int(frame[0, 0, 0])
        return SimpleNamespace(box=k, points=ref_pts[k], found=found[k])

    def fake_shape(frame: np.ndarray, box: int) -> SimpleNamespace:
        pts = dec_pts[int(frame[0, 0, 0])]
        return SimpleNamespace(parts=lambda: [SimpleNamespace(x=x, y=y) for x, y in pts])

    monkeypatch.setattr(face, "_reference_fit", fake_fit)
    monkeypatch.setattr(face, "_dlib_shape", fake_shape)
    frames = [np.full((16, 16, 3), k, np.uint8) for k in range(3)]
    report = evaluate_sequences(frames, frames, metrics=["eye_err", "mouth_err"])
    # frame 0: shifted copy, 0 and 0. frame 1: right EAR 0.4 vs 0.2 (0.2), left 0.3 vs 0.25
    # (0.05): eye error 0.125; mouth 0.15 vs 0.1: 0.05. frame 2: skipped.
    assert report["frames"]["eye_err"] == pytest.approx([0.0, 0.125, None])
    assert report["frames"]["mouth_err"] == pytest.approx([0.0, 0.05, None])
    assert report["eye_err"] == pytest.approx(0.0625) and report["mouth_err"] == pytest.approx(
        0.025
    )
    assert report["skipped"] == {"eye_err": 1, "mouth_err": 1}
    assert "1 of 3" in report["notes"]["eye_err"] and "reference" in report["notes"]["mouth_err"]


@needs_clips
def test_openness_errors_on_a_real_clip() -> None:
    from gfvc.eval.anchors import anchor_code

    frames = read_clip("lp_d3", 3)
    names = ["lmd", "eye_err", "mouth_err"]
    same = evaluate_sequences(frames, frames, metrics=names)
    assert same["eye_err"] == 0.0 and same["mouth_err"] == 0.0 and same["skipped"] == {}
    dec = anchor_code(frames, "x265", 46).decoded_frames
    coded = evaluate_sequences(frames, dec, metrics=names)
    assert coded["skipped"] == {}
    # A strongly coded face keeps its expression roughly: small but non-zero errors (EAR of an
    # open eye is about 0.3 here, mouth openness 0-0.3).
    assert 0 < coded["eye_err"] < 0.1 and 0 <= coded["mouth_err"] < 0.1
    assert coded["lmd"] > 0


def test_metric_directions_have_one_source() -> None:
    from gfvc.eval.bd import LOWER_IS_BETTER, bd_rate
    from gfvc.eval.metrics import CTC_DEFAULT_METRICS, HIGHER_IS_BETTER
    from gfvc.eval.plots import METRIC_LABELS

    assert LOWER_IS_BETTER <= set(ALL_METRICS) and set(METRIC_LABELS) == set(ALL_METRICS)
    assert [m for m in ALL_METRICS if not HIGHER_IS_BETTER[m]] == [
        "lmd", "eye_err", "mouth_err", "lmd_mediapipe", "id_dist", "lpips", "dists",
    ]  # fmt: skip
    assert {"eye_err", "mouth_err", "vmaf"} <= set(CTC_DEFAULT_METRICS)
    # Lower is better: the same errors at half the rate save 50 %.
    errs = [0.06, 0.04, 0.02]
    assert bd_rate([10, 20, 40], errs, [5, 10, 20], errs, metric="eye_err") == pytest.approx(-50)


def test_dlib_model_dir_found_without_import() -> None:
    from gfvc.eval import face

    folder = face.dlib_model_dir()
    assert (folder / "shape_predictor_68_face_landmarks.dat").is_file()
    assert "face_recognition_models" not in sys.modules


# ------------------------------------------------------------------ LPIPS / DISTS
@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A torch hub dir holding RANDOM trunk/head weights, for code-path tests only."""
    monkeypatch.delenv("GFVC_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("GFVC_ALLOW_DOWNLOAD", raising=False)
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    g = torch.Generator().manual_seed(0)
    trunk = perceptual.vgg16_features()
    state = {
        f"features.{k}": torch.randn(v.shape, generator=g) * 0.05
        for k, v in trunk.state_dict().items()
    }
    torch.save(state, ckpt / perceptual.VGG16.name)
    heads = {
        f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
        for i, c in enumerate((64, 128, 256, 512, 512))
    }
    torch.save(heads, ckpt / perceptual.LPIPS_VGG_HEADS.name)
    ab = {
        "alpha": torch.rand(1, 1475, 1, 1, generator=g),
        "beta": torch.rand(1, 1475, 1, 1, generator=g),
    }
    torch.save(ab, ckpt / perceptual.DISTS_HEADS.name)
    yield ckpt
    torch.hub.set_dir(old)


def test_missing_weights_give_one_line_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GFVC_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("GFVC_ALLOW_DOWNLOAD", raising=False)
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        with pytest.raises(BackendUnavailableError) as info:
            perceptual.load_lpips()
        msg = str(info.value)
        assert (
            "vgg16-397923af.pth" in msg and str(tmp_path / "checkpoints") in msg and "\n" not in msg
        )
        report = evaluate_sequences(
            [textured()], [textured()], metrics=["psnr_y", "lpips", "dists"]
        )
        assert report["lpips"] is None and report["dists"] is None
        assert report["frames"]["lpips"] is None
        assert "vgg16-397923af.pth" in report["unavailable"]["dists"]
    finally:
        torch.hub.set_dir(old)


def test_random_trunk_is_refused_by_hash(fake_hub: Path) -> None:
    with pytest.raises(CheckpointError, match="sha256"):
        perceptual.load_lpips()
    with pytest.raises(CheckpointError, match="sha256"):
        SequenceEvaluator(["lpips", "dists"])


@pytest.mark.parametrize("kind", ["lpips", "dists"])
def test_perceptual_properties_with_constructed_weights(fake_hub: Path, kind: str) -> None:
    model = (
        perceptual.load_lpips(verify_hash=False)
        if kind == "lpips"
        else perceptual.load_dists(verify_hash=False)
    )
    pair = perceptual.lpips_pair if kind == "lpips" else perceptual.dists_pair
    rng = np.random.default_rng(3)
    x = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((8, 8, 1))).astype(
        np.uint8
    )  # 64x64 blocks
    noise = rng.standard_normal(x.shape)
    noisy = [np.clip(x + a * noise, 0, 255).astype(np.uint8) for a in (4.0, 16.0, 48.0)]
    assert pair(model, x, x) == pytest.approx(0.0, abs=1e-6)
    d = [pair(model, x, y) for y in noisy]
    assert d[0] < d[1] < d[2]
    assert pair(model, x, noisy[1]) == pytest.approx(pair(model, noisy[1], x), rel=1e-5)


def test_dists_input_size() -> None:
    assert perceptual.dists_input_size(256, 256) == (256, 256)
    assert perceptual.dists_input_size(512, 1024) == (256, 512)


def test_bad_head_file(fake_hub: Path) -> None:
    torch.save({"alpha": torch.rand(3)}, fake_hub / perceptual.DISTS_HEADS.name)
    with pytest.raises(CheckpointError):
        perceptual.load_dists(verify_hash=False)


# ------------------------------------------------------------------ VMAF
def test_vmaf_unavailable_without_ffmpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("GFVC_FFMPEG", "/nonexistent/ffmpeg")
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    with pytest.raises(BackendUnavailableError, match="libvmaf"):
        vmaf.find_ffmpeg_with_vmaf()
    report = evaluate_sequences([textured()], [textured()], metrics=["vmaf"])
    assert report["vmaf"] is None and "libvmaf" in report["unavailable"]["vmaf"]


def test_vmaf_with_stub_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in ffmpeg checks the command shape and writes a libvmaf-style JSON log."""
    stub = tmp_path / "ffmpeg"
    stub.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "a = sys.argv[1:]\n"
        "if '-filters' in a:\n"
        "    print(' ... libvmaf  VV->V  Calculate the VMAF');  sys.exit(0)\n"
        "graph = a[a.index('-lavfi') + 1]\n"
        "log = graph.split('log_path=')[1]\n"
        "n = os.path.getsize(a[a.index('-i') + 1]) // (16 * 16 * 3)\n"
        "frames = [{'frameNum': i, 'metrics': {'vmaf': 90.0 + i}} for i in range(n)]\n"
        "json.dump({'frames': frames}, open(log, 'w'))\n"
    )
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("GFVC_FFMPEG", str(stub))
    frames = [textured(16, 16, s) for s in range(3)]
    report = evaluate_sequences(frames, frames, metrics=["psnr_rgb", "vmaf"])
    assert report["frames"]["vmaf"] == [90.0, 91.0, 92.0]
    assert report["vmaf"] == pytest.approx(91.0)


def test_vmaf_by_default_with_the_imageio_ffmpeg_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dependency's bundled ffmpeg has libvmaf: no setting needed (skips on platforms
    whose imageio-ffmpeg build lacks it)."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    monkeypatch.delenv("GFVC_FFMPEG", raising=False)
    monkeypatch.setenv("PATH", "")
    if not vmaf._has_libvmaf(imageio_ffmpeg.get_ffmpeg_exe()):
        pytest.skip("this platform's imageio-ffmpeg binary has no libvmaf")
    assert vmaf.find_ffmpeg_with_vmaf() == imageio_ffmpeg.get_ffmpeg_exe()
    ref = [textured(64, 64, s) for s in range(3)]
    noisy = [np.clip(f.astype(int) + rng, 0, 255).astype(np.uint8) for f, rng in
             zip(ref, np.random.default_rng(1).integers(-40, 41, (3, 64, 64, 3)), strict=True)]  # fmt: skip
    same = evaluate_sequences(ref, ref, metrics=["vmaf"])
    worse = evaluate_sequences(ref, noisy, metrics=["vmaf"])
    assert len(same["frames"]["vmaf"]) == 3 and same["vmaf"] > worse["vmaf"]


def test_parse_vmaf_log_count_mismatch() -> None:
    with pytest.raises(BackendUnavailableError):
        vmaf.parse_vmaf_log({"frames": [{"frameNum": 0, "metrics": {"vmaf": 1.0}}]}, 2)


# ------------------------------------------------------------------ evaluator
def test_evaluate_sequences_keys_and_means() -> None:
    ref = [textured(32, 32, s) for s in range(3)]
    dec = [np.clip(f.astype(int) + 3, 0, 255).astype(np.uint8) for f in ref]
    report = evaluate_sequences(
        iter(ref), iter(dec), metrics=["psnr_rgb", "psnr_y", "ssim", "ms_ssim"]
    )
    assert set(ALL_METRICS) <= set(report) and set(report["frames"]) == set(ALL_METRICS)
    assert report["num_frames"] == 3 and len(report["frames"]["psnr_y"]) == 3
    assert report["psnr_rgb"] == pytest.approx(np.mean(report["frames"]["psnr_rgb"]))
    assert report["ms_ssim"] is None and "161" in report["unavailable"]["ms_ssim"]
    assert report["lmd"] is None and report["unavailable"]["lmd"] == "not requested"
    json.dumps(report)  # JSON-ready


def test_evaluate_sequences_length_and_size_mismatch() -> None:
    a = [textured(32, 32, s) for s in range(3)]
    with pytest.raises(InputError, match="lengths differ"):
        evaluate_sequences(a, a[:2], metrics=["psnr_y"])
    with pytest.raises(InputError, match="lengths differ"):
        evaluate_sequences(a[:2], a, metrics=["psnr_y"])
    with pytest.raises(InputError, match="frame 1"):
        evaluate_sequences([a[0], textured(16, 16)], [a[0], textured(16, 16)], metrics=["psnr_y"])
    with pytest.raises(UnknownNameError, match="psnr"):
        SequenceEvaluator(["psnr"])
    with pytest.raises(InputError, match="no frames"):
        evaluate_sequences([], [], metrics=["psnr_y"])


@needs_clips
def test_evaluate_real_pair_all_face_metrics() -> None:
    frames = read_clip("lp_d3", 2)
    report = evaluate_sequences(
        frames, frames, metrics=["psnr_y", "ssim", "ms_ssim", "lmd", "id_dist"]
    )
    assert report["psnr_y"] == 100.0 and report["ssim"] == pytest.approx(1.0)
    assert report["ms_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert report["lmd"] == 0.0 and report["id_dist"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.skipif(
    not os.environ.get("GFVC_CHECK_REAL_WEIGHTS"),
    reason="set GFVC_CHECK_REAL_WEIGHTS=1 with real VGG16/LPIPS/DISTS files",
)
@needs_clips
def test_perceptual_numbers_with_real_weights() -> None:
    from gfvc.eval.anchors import anchor_code

    frames = read_clip("lp_d3", 2)
    dec = anchor_code(frames, "x265", 42).decoded_frames
    assert 0.05 < perceptual.lpips(frames[1], dec[1]) < 0.6
    assert 0.02 < perceptual.dists(frames[1], dec[1]) < 0.4
