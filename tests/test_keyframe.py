"""gfvc.keyframe: rate/quality behaviour on a real face frame, ids, errors, VVC plumbing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from gfvc.errors import (
    BackendUnavailableError,
    BitstreamError,
    GfvcError,
    InputError,
    UnknownNameError,
)
from gfvc.keyframe import (
    KEYFRAME_CODECS,
    KeyframeCodec,
    keyframe_codec,
    keyframe_codec_class,
    keyframe_codec_class_by_id,
)
from gfvc.keyframe.svtav1 import strip_obus
from gfvc.keyframe.vvc import ENCODER_ENV, find_vvc_encoder, vvc_command

FACES = Path(__file__).parents[1].parent / "shared" / "data" / "faces"
needs_clips = pytest.mark.skipif(
    not FACES.is_dir(), reason=f"real face clips not found at {FACES} (shared data absent)"
)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """Frame 0 of lp_d3.mp4, centre square resized to 256x256."""
    if not FACES.is_dir():
        pytest.skip(f"real face clips not found at {FACES} (shared data absent)")
    from gfvc.io import crop_and_resize, read_frames

    return crop_and_resize(next(read_frames(FACES / "lp_d3.mp4", max_frames=1)), None, 256)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def round_trip(codec: KeyframeCodec, frame: np.ndarray) -> tuple[int, float]:
    data = codec.encode(frame)
    out = codec.decode(data, frame.shape[1], frame.shape[0])
    assert out.shape == frame.shape and out.dtype == np.uint8
    return len(data), psnr(frame, out)


@needs_clips
@pytest.mark.parametrize(
    ("name", "fmt", "qps"),
    [
        ("x265", "yuv420", (22, 32, 42, 51)),
        ("x265", "rgb444", (22, 37, 51)),
        ("svtav1", "yuv420", (20, 40, 63)),
    ],
)
def test_rate_and_quality_follow_qp(
    face: np.ndarray, name: str, fmt: str, qps: tuple[int, ...]
) -> None:
    results = [round_trip(keyframe_codec(name, qp=q, fmt=fmt), face) for q in qps]
    sizes = [r[0] for r in results]
    quality = [r[1] for r in results]
    assert sizes == sorted(sizes, reverse=True), sizes
    assert quality == sorted(quality, reverse=True), quality
    assert quality[0] > 38 and quality[-1] > 24
    assert sizes[0] < 20_000 and sizes[-1] < 800


@needs_clips
def test_lossless_is_exact(face: np.ndarray) -> None:
    codec = keyframe_codec("lossless", qp=40, fmt="rgb444")
    data = codec.encode(face)
    np.testing.assert_array_equal(codec.decode(data, 256, 256), face)
    assert len(data) < face.size  # it does compress


@needs_clips
def test_x265_payload_is_bare(face: np.ndarray) -> None:
    data = keyframe_codec("x265", qp=32).encode(face)
    assert b"x265" not in data  # no version/settings SEI (info=0)
    assert data.startswith(b"\x00\x00\x00\x01\x40\x01")  # Annex-B start code + VPS


@needs_clips
def test_svtav1_payload_starts_with_sequence_header(face: np.ndarray) -> None:
    data = keyframe_codec("svtav1", qp=40).encode(face)
    assert (data[0] >> 3) & 0xF == 1  # OBU_SEQUENCE_HEADER; no temporal delimiter


@needs_clips
@pytest.mark.parametrize(
    ("name", "fmt"), [("x265", "yuv420"), ("x265", "rgb444"), ("svtav1", "yuv420")]
)
def test_decode_is_repeatable_and_needs_no_settings(face: np.ndarray, name: str, fmt: str) -> None:
    data = keyframe_codec(name, qp=37, fmt=fmt).encode(face)
    cls = keyframe_codec_class(name)
    first = cls().decode(data, 256, 256)  # decoder side knows only the id and the size
    np.testing.assert_array_equal(
        first, keyframe_codec_class_by_id(cls.codec_id)().decode(data, 256, 256)
    )


@needs_clips
@pytest.mark.parametrize("name", ["x265", "svtav1", "lossless"])
def test_wrong_size_is_a_bitstream_error(face: np.ndarray, name: str) -> None:
    codec = keyframe_codec(name)
    data = codec.encode(face)
    with pytest.raises(BitstreamError, match="the stream says"):
        codec.decode(data, 128, 256)


@pytest.mark.parametrize("name", ["x265", "svtav1", "vvc", "lossless"])
@pytest.mark.parametrize(
    "payload",
    [b"", b"garbage" * 40, b"\x00\x00\x00\x01" + bytes(range(256)), b"\x12\x00\x0a\x0b\x00"],
)
def test_garbage_decodes_to_bitstream_error(name: str, payload: bytes) -> None:
    with pytest.raises(BitstreamError):
        keyframe_codec_class(name)().decode(payload, 256, 256)


@needs_clips
@pytest.mark.parametrize("name", ["x265", "svtav1", "lossless"])
def test_truncated_payload_is_not_a_crash(face: np.ndarray, name: str) -> None:
    codec = keyframe_codec(name)
    data = codec.encode(face)
    try:
        out = codec.decode(data[: len(data) // 3], 256, 256)
    except GfvcError:
        return  # BitstreamError: fine
    assert out.shape == (256, 256, 3)  # decoders may conceal instead


def test_ids_are_fixed() -> None:
    ids = {name: cls.codec_id for name, cls in KEYFRAME_CODECS.items()}
    assert ids == {"x265": 1, "svtav1": 2, "vvc": 3, "lossless": 4}
    for name, i in ids.items():
        assert keyframe_codec_class_by_id(i).name == name


def test_unknown_names_and_ids() -> None:
    with pytest.raises(UnknownNameError, match="x265"):
        keyframe_codec("jpeg")
    with pytest.raises(UnknownNameError, match="1=x265"):
        keyframe_codec_class_by_id(99)


@pytest.mark.parametrize(
    ("name", "kw", "match"),
    [
        ("x265", {"qp": 52}, "0..51"),
        ("x265", {"qp": -1}, "0..51"),
        ("x265", {"qp": 30.5}, "integer"),
        ("svtav1", {"qp": 64}, "0..63"),
        ("svtav1", {"fmt": "rgb444"}, "yuv420"),
        ("vvc", {"fmt": "rgb444"}, "yuv420"),
        ("x265", {"fmt": "yuv422"}, "rgb444"),
        ("x265", {"speed": 3}, "preset"),
    ],
)
def test_bad_arguments(name: str, kw: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        keyframe_codec(name, **kw)


def test_lossless_ignores_qp_but_it_must_fit_the_header() -> None:
    assert keyframe_codec("lossless", qp=200).qp == 200
    with pytest.raises(InputError, match="leave --qp unset"):
        keyframe_codec("lossless", qp=300)


@pytest.mark.parametrize(
    ("shape", "fmt", "match"),
    [
        ((64, 64), "yuv420", "uint8 RGB"),
        ((64, 66, 3), "yuv420", None),
        ((63, 64, 3), "yuv420", "even"),
    ],
)
def test_bad_frames(shape: tuple[int, ...], fmt: str, match: str | None) -> None:
    codec = keyframe_codec("x265", qp=51, fmt=fmt)
    frame = np.full(shape, 128, np.uint8)
    if match is None:
        assert codec.decode(codec.encode(frame), 66, 64).shape == (64, 66, 3)
    else:
        with pytest.raises(InputError, match=match):
            codec.encode(frame)


def test_strip_obus_drops_delimiter_and_padding() -> None:
    td = b"\x12\x00"
    seq = b"\x0a\x02\xaa\xbb"
    pad = b"\x7a\x01\x00"
    frame = b"\x32\x03\x01\x02\x03"
    assert strip_obus(td + seq + pad + frame) == seq + frame
    with pytest.raises(BitstreamError):
        strip_obus(seq + b"\x32\x09\x01")  # truncated


# ---------------------------------------------------------------------------------------------
# VVC: only the plumbing can be tested here (no VVC encoder is installed)


def test_vvc_absent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(ENCODER_ENV, raising=False)
    with pytest.raises(BackendUnavailableError, match="--keyframe-codec x265"):
        keyframe_codec("vvc").encode(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(BackendUnavailableError, match="not an executable"):
        find_vvc_encoder(str(tmp_path / "missing-vvencapp"))


def test_vvc_command_lines() -> None:
    vv = vvc_command("/opt/bin/vvencapp", "in.yuv", "out.266", 256, 192, 37, "fast")
    assert vv[0] == "/opt/bin/vvencapp"
    assert vv[vv.index("-s") + 1] == "256x192" and vv[vv.index("--qp") + 1] == "37"
    assert vv[vv.index("-o") + 1] == "out.266" and vv[vv.index("--preset") + 1] == "fast"
    vtm = vvc_command("EncoderApp", "in.yuv", "out.266", 256, 192, 37, config="intra.cfg")
    assert vtm[1:3] == ["-c", "intra.cfg"]
    assert vtm[vtm.index("-wdt") + 1] == "256" and vtm[vtm.index("-hgt") + 1] == "192"
    assert vtm[vtm.index("-q") + 1] == "37" and vtm[vtm.index("-b") + 1] == "out.266"
    assert "--SEIDecodedPictureHash=0" in vtm
    assert vvc_command("/x/vvencFFapp", "i", "o", 64, 64, 30)[1] == "-i"  # VTM-style options


def _fake_encoder(folder: Path, body: str) -> Path:
    path = folder / "vvencapp"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_vvc_runs_the_encoder_it_finds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A stand-in that writes a fixed "bitstream" after -o: checks the subprocess plumbing.
    fake = _fake_encoder(
        tmp_path,
        'while [ "$1" != "-o" ]; do shift; done; printf PAYLOAD > "$2"\n',
    )
    monkeypatch.setenv(ENCODER_ENV, str(fake))
    assert keyframe_codec("vvc").encode(np.zeros((64, 64, 3), np.uint8)) == b"PAYLOAD"
    failing = _fake_encoder(tmp_path, "echo 'bad option --qp' >&2; exit 3\n")
    with pytest.raises(GfvcError, match="bad option"):
        keyframe_codec("vvc", encoder=str(failing)).encode(np.zeros((64, 64, 3), np.uint8))
    assert os.environ[ENCODER_ENV] == str(fake)
