"""gfvc.io: raw and container round trips, input validation, atomic output, face crop."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from gfvc.errors import GfvcError, InputError, NoFaceError, OutputError
from gfvc.io import (
    CropBox,
    FaceLandmarker,
    VideoInfo,
    VideoReader,
    VideoWriter,
    crop_and_resize,
    find_face_crop,
    read_frames,
)
from gfvc.io.face import fit_in_frame
from gfvc.io.video import parse_raw_name

FACES = Path(__file__).parents[1].parent / "shared" / "data" / "faces"
needs_clips = pytest.mark.skipif(
    not FACES.is_dir(), reason=f"real face clips not found at {FACES} (shared data absent)"
)

W, H = 96, 64  # not square, so width/height mix-ups show


def synthetic_frames(n: int = 3, w: int = W, h: int = H) -> list[np.ndarray]:
    """Smooth colour gradients that move a little per frame (easy for lossy codecs)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = []
    for t in range(n):
        r = 128 + 100 * np.sin((xx + 3 * t) / 17)
        g = 128 + 100 * np.cos((yy - 2 * t) / 13)
        b = 128 + 80 * np.sin((xx + yy + 5 * t) / 23)
        out.append(np.stack([r, g, b], axis=-1).round().astype(np.uint8))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def write_video(path: Path, frames: list[np.ndarray], fps: Fraction = Fraction(25)) -> None:
    h, w = frames[0].shape[:2]
    with VideoWriter(path, fps=fps, width=w, height=h) as writer:
        for f in frames:
            writer.write(f)


# ---------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize(
    ("suffix", "min_psnr"),
    [(".rgb", float("inf")), (".yuv", 38.0), (".y4m", 45.0), (".mp4", 38.0), (".mkv", 38.0)],
)
def test_write_read_round_trip(tmp_path: Path, suffix: str, min_psnr: float) -> None:
    frames = synthetic_frames()
    path = tmp_path / f"clip{suffix}"
    write_video(path, frames)
    size = (W, H) if suffix in (".rgb", ".yuv") else None
    with VideoReader(path, size=size) as reader:
        assert (reader.info.width, reader.info.height) == (W, H)
        assert reader.info.fps == 25
        got = list(reader)
    assert len(got) == len(frames)
    for a, b in zip(frames, got, strict=True):
        assert b.shape == (H, W, 3) and b.dtype == np.uint8
        assert psnr(a, b) >= min_psnr


def test_raw_info_counts_frames(tmp_path: Path) -> None:
    path = tmp_path / "clip.yuv"
    write_video(path, synthetic_frames(4))
    info = VideoReader(path, size=(W, H), fps=Fraction(30)).info
    assert info == VideoInfo(W, H, Fraction(30), 4)


def test_read_frames_limits_and_streams(tmp_path: Path) -> None:
    path = tmp_path / "clip.rgb"
    frames = synthetic_frames(5)
    write_video(path, frames)
    got = list(read_frames(path, max_frames=2, size=(W, H)))
    assert len(got) == 2
    np.testing.assert_array_equal(got[1], frames[1])
    assert list(read_frames(path, max_frames=0, size=(W, H))) == []


@pytest.mark.parametrize(
    ("name", "size", "fps"),
    [
        ("seq_256x256_25_8bit_444.rgb", (256, 256), Fraction(25)),
        ("x/y_1920x1080_50fps.yuv", (1920, 1080), Fraction(50)),
        ("clip_640x480.yuv", (640, 480), None),
        ("a_96x64_29.97_8bit.rgb", (96, 64), Fraction(2997, 100)),
        ("plain.rgb", None, None),
    ],
)
def test_parse_raw_name(name: str, size: tuple[int, int] | None, fps: Fraction | None) -> None:
    assert parse_raw_name(name) == (size, fps)


def test_raw_size_and_fps_from_name(tmp_path: Path) -> None:
    path = tmp_path / f"face_{W}x{H}_30_8bit_444.rgb"
    frames = synthetic_frames(2)
    write_video(path, frames)
    reader = VideoReader(path)
    assert reader.info == VideoInfo(W, H, Fraction(30), 2)
    np.testing.assert_array_equal(next(iter(reader)), frames[0])


# ---------------------------------------------------------------------------------------------
# input errors


def test_missing_file() -> None:
    with pytest.raises(InputError, match="does not exist"):
        VideoReader("/no/such/clip.mp4")


def test_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(InputError, match="not a video PyAV can read"):
        VideoReader(path)


def test_raw_without_size(tmp_path: Path) -> None:
    path = tmp_path / "clip.rgb"
    path.write_bytes(bytes(W * H * 3))
    with pytest.raises(InputError, match="--size WxH"):
        VideoReader(path)


def test_raw_size_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "clip.rgb"
    path.write_bytes(bytes(W * H * 3 + 7))
    with pytest.raises(InputError, match="not a whole number"):
        VideoReader(path, size=(W, H))


@pytest.mark.parametrize(
    ("size", "match"),
    [((32, 64), "at least"), ((65, 64), "even"), ((10000, 64), "larger than")],
)
def test_bad_dimensions(tmp_path: Path, size: tuple[int, int], match: str) -> None:
    path = tmp_path / "clip.rgb"
    path.write_bytes(bytes(size[0] * size[1] * 3))
    with pytest.raises(InputError, match=match):
        VideoReader(path, size=size)


def test_size_for_container_must_match(tmp_path: Path) -> None:
    path = tmp_path / "clip.y4m"
    write_video(path, synthetic_frames(1))
    assert VideoReader(path, size=(W, H)).info.width == W
    with pytest.raises(InputError, match="only for raw"):
        VideoReader(path, size=(128, 128))


def test_grey_video_reads_as_rgb(tmp_path: Path) -> None:
    path = tmp_path / "grey.y4m"
    luma = np.tile(np.linspace(16, 235, W).astype(np.uint8), (H, 1))
    header = f"YUV4MPEG2 W{W} H{H} F25:1 Ip A1:1 Cmono\n".encode()
    path.write_bytes(header + (b"FRAME\n" + luma.tobytes()) * 2)
    frames = list(read_frames(path))
    assert len(frames) == 2 and frames[0].shape == (H, W, 3)
    np.testing.assert_array_equal(frames[0][..., 0], frames[0][..., 1])
    np.testing.assert_array_equal(frames[0][..., 0], frames[0][..., 2])
    assert frames[0][0, -1, 0] > frames[0][0, 0, 0] + 200  # the gradient survives


# ---------------------------------------------------------------------------------------------
# output errors and atomicity


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="unknown extension"):
        VideoWriter(tmp_path / "out.avi", fps=Fraction(25), width=W, height=H)


def test_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        VideoWriter(blocker / "out.rgb", fps=Fraction(25), width=W, height=H)


def test_exception_inside_with_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(path, fps=Fraction(25), width=W, height=H) as writer:
            writer.write(synthetic_frames(1)[0])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_abort_keeps_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "out.rgb"
    path.write_bytes(b"old")
    writer = VideoWriter(path, fps=Fraction(25), width=W, height=H)
    writer.write(synthetic_frames(1)[0])
    assert path.read_bytes() == b"old"  # nothing visible before close
    writer.abort()
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.rgb"]


def test_writer_rejects_wrong_frames(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "out.yuv", fps=Fraction(25), width=W, height=H) as writer:
        with pytest.raises(InputError, match="opened for"):
            writer.write(np.zeros((H + 2, W, 3), np.uint8))
        with pytest.raises(InputError, match="uint8"):
            writer.write(np.zeros((H, W, 3), np.float32))
        writer.write(np.zeros((H, W), np.uint8))  # grey is fine
    with pytest.raises(OutputError, match="closed"):
        writer.write(np.zeros((H, W, 3), np.uint8))
    with pytest.raises(OutputError, match="even"):
        VideoWriter(tmp_path / "odd.mp4", fps=Fraction(25), width=W + 1, height=H)


# ---------------------------------------------------------------------------------------------
# cropping and faces


def test_crop_pads_by_edge_replication() -> None:
    frame = np.zeros((100, 100, 3), np.uint8)
    frame[:, 0] = 200  # left column
    out = crop_and_resize(frame, CropBox(-10, 10, 40), 40)
    assert out.shape == (40, 40, 3)
    assert (out[:, :11, 0] == 200).all() and (out[:, 11:, 0] == 0).all()


def test_crop_none_is_centre_square() -> None:
    frame = np.zeros((100, 160, 3), np.uint8)
    frame[:, 30:130] = 255
    out = crop_and_resize(frame, None, 50)
    assert out.shape == (50, 50, 3) and (out == 255).all()


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        (CropBox(10, 20, 100), CropBox(10, 20, 100)),  # inside: unchanged
        (CropBox(-30, -10, 100), CropBox(0, 0, 100)),  # shifted in
        (CropBox(250, 50, 100), CropBox(220, 50, 100)),
        (CropBox(-17, 24, 560), CropBox(80, 0, 240)),  # larger than the frame: shrunk
    ],
)
def test_fit_in_frame(box: CropBox, expected: CropBox) -> None:
    assert fit_in_frame(box, 320, 240) == expected


def test_no_face_in_blank_video() -> None:
    frames = [np.full((128, 128, 3), 90, np.uint8) for _ in range(3)]
    with pytest.raises(NoFaceError, match="--no-crop") as info:
        find_face_crop(frames, source="blank.mp4")
    assert "blank.mp4" in str(info.value) and "3 frames" in str(info.value)
    assert isinstance(info.value, GfvcError)


@needs_clips
def test_face_crop_on_body_shot() -> None:
    frames = list(read_frames(FACES / "lp_s13.mp4", max_frames=8))
    box = find_face_crop(frames)
    # lp_s13 is 720x1080 with a ~90 px face near (365, 115); the head crop must contain it
    cx, cy = box.x + box.size / 2, box.y + box.size / 2
    assert 330 < cx < 400 and 70 < cy < 160
    assert 120 < box.size < 260
    crop = crop_and_resize(frames[0], box, 256)
    with FaceLandmarker() as landmarker:
        pts = landmarker(crop)
        assert landmarker(np.full((256, 256, 3), 90, np.uint8)) is None
    assert pts is not None and pts.shape == (478, 3) and pts.dtype == np.float32
    # face centred in the crop, landmarks in pixels
    assert 90 < pts[:, 0].mean() < 166 and 90 < pts[:, 1].mean() < 180
