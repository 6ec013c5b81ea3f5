"""Streaming video input and atomic video output.

Frames are always (H, W, 3) uint8 RGB numpy arrays. Containers (mp4, mov, mkv, webm, y4m,
...) go through PyAV; the raw formats of the GFVC test conditions are read and written here:

* ``.rgb``: planar 8-bit RGB 4:4:4, per frame the whole R plane, then G, then B.
* ``.yuv``: planar 8-bit I420 (Y, then Cb, then Cr at half size), BT.601 limited range.

Raw files carry no header, so their size comes from ``size=(W, H)`` or from a name like
``clip_256x256_25_8bit_444.rgb``; the frame rate from ``fps`` or that name, else 25.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

from gfvc.errors import InputError, OutputError
from gfvc.io.color import i420_bytes, i420_from_buffer, rgb_to_yuv444

MIN_SIDE = 64
MAX_SIDE = 8192
RAW_DEFAULT_FPS = Fraction(25)
RAW_SUFFIXES = (".rgb", ".yuv")
CONTAINER_FORMATS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov"}
WRITE_SUFFIXES = (*CONTAINER_FORMATS, ".y4m", *RAW_SUFFIXES)

_SIZE_RE = re.compile(r"(?<![0-9])([0-9]{1,5})x([0-9]{1,5})(?![0-9])", re.IGNORECASE)
_FPS_RE = re.compile(
    r"(?<![0-9])[0-9]{1,5}x[0-9]{1,5}_([0-9]{1,3}(?:\.[0-9]+)?)(?:fps|hz|p)?(?=[_.\-]|$)",
    re.IGNORECASE,
)

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a video before decoding it (``frames`` is None when unknown).

    ``width`` and ``height`` are those of the frames as shown: a phone video stored in
    landscape with a 90-degree display rotation reads as portrait. ``rotation`` is that
    display rotation (counter-clockwise degrees, 0/90/180/270), already applied to frames.
    """

    width: int
    height: int
    fps: Fraction
    frames: int | None
    rotation: int = 0


# ---------------------------------------------------------------------------------------------
# small pure helpers


def parse_raw_name(name: str) -> tuple[tuple[int, int] | None, Fraction | None]:
    """Read ``(W, H)`` and the frame rate from a raw file name such as ``x_256x256_25_8bit.rgb``.

    Either part is None when the name does not contain it.
    """
    stem = Path(name).name
    size_m = _SIZE_RE.search(stem)
    size = (int(size_m.group(1)), int(size_m.group(2))) if size_m else None
    fps_m = _FPS_RE.search(stem)
    fps = Fraction(fps_m.group(1)) if fps_m else None
    if fps is not None and fps <= 0:
        fps = None
    return size, fps


def raw_frame_bytes(suffix: str, width: int, height: int) -> int:
    """Bytes per frame of a raw file: 3 planes for ``.rgb``, 1.5 for I420 ``.yuv``."""
    return width * height * 3 if suffix == ".rgb" else width * height * 3 // 2


def check_dimensions(width: int, height: int, source: str, *, even: bool = True) -> None:
    """Reject sizes the codec cannot handle: under 64 px, over 8192 px, and odd ones when
    ``even`` (raw files; a container's odd picture is cropped to a face anyway)."""
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InputError(
            f"{source} is {width}x{height}; frames must be at least {MIN_SIDE}x{MIN_SIDE} pixels"
        )
    if width > MAX_SIDE or height > MAX_SIDE:
        raise InputError(
            f"{source} is {width}x{height}; frames larger than {MAX_SIDE} pixels are not "
            "supported, scale the video down first"
        )
    if even and (width % 2 or height % 2):
        raise InputError(
            f"{source} is {width}x{height}; width and height must be even (4:2:0 coding)"
        )


def as_fraction(fps: Fraction | int | float | str, what: str = "fps") -> Fraction:
    """Turn a user frame rate into a positive Fraction (29.97 -> 2997/100)."""
    try:
        value = Fraction(fps).limit_denominator(1_000_000)
    except (TypeError, ValueError, ZeroDivisionError):
        raise InputError(f"{what} {fps!r} is not a number; pass e.g. 25 or 30000/1001") from None
    if value <= 0:
        raise InputError(f"{what} must be positive, got {fps!r}")
    return value


def to_rgb_frame(frame: np.ndarray) -> np.ndarray:
    """Accept (H, W, 3) RGB or (H, W) / (H, W, 1) grey uint8; return contiguous (H, W, 3)."""
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        raise InputError(f"frames must be uint8, got {arr.dtype}; convert with np.clip(...).astype")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"frames must be (H, W, 3) RGB arrays, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


# ---------------------------------------------------------------------------------------------
# reading


def _probe_raw(
    path: Path, suffix: str, size: tuple[int, int] | None, fps: Fraction | None
) -> VideoInfo:
    name_size, name_fps = parse_raw_name(path.name)
    if size is None:
        size = name_size
    if size is None:
        raise InputError(
            f"{path} is a raw {suffix} file without a size in its name; pass --size WxH"
        )
    width, height = int(size[0]), int(size[1])
    check_dimensions(width, height, str(path))
    rate = fps if fps is not None else (name_fps or RAW_DEFAULT_FPS)
    frame_bytes = raw_frame_bytes(suffix, width, height)
    total = path.stat().st_size
    if total % frame_bytes:
        raise InputError(
            f"{path} is {total} bytes, not a whole number of {width}x{height} {suffix} frames "
            f"({frame_bytes} bytes each); check --size"
        )
    return VideoInfo(width, height, as_fraction(rate), total // frame_bytes)


def _open_container(path: Path):  # -> av.container.InputContainer
    import av

    try:
        return av.open(str(path), mode="r")
    except OSError as exc:  # before FFmpegError: av's PermissionError etc. are both
        raise InputError(f"{path} cannot be opened: {exc.strerror or exc}") from None
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path} is not a video PyAV can read ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    """One short line for an exception (FFmpeg's own text, without errno and path)."""
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return str(text).splitlines()[0][:120]


def _probe_container(path: Path, fps: Fraction | None) -> VideoInfo:
    import av

    container = _open_container(path)
    try:
        if not container.streams.video:
            raise InputError(f"{path} is not a video PyAV can read (it has no video stream)")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise InputError(f"{path} is not a video PyAV can read (no picture size)")
        check_dimensions(width, height, str(path), even=False)
        rate = fps or stream.average_rate or stream.base_rate or stream.guessed_rate
        frames = stream.frames or None
        try:  # the display rotation is side data of the frames: look at the first one
            rotation = next((_rotation(f) for f in container.decode(stream)), 0)
        except av.FFmpegError:
            rotation = 0  # reading the frames will say what is wrong
    finally:
        container.close()
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(width, height, as_fraction(rate or RAW_DEFAULT_FPS), frames, rotation)


def _rotation(frame) -> int:  # av.VideoFrame
    """Display rotation of a decoded frame, counter-clockwise, snapped to 0/90/180/270."""
    try:
        deg = float(getattr(frame, "rotation", 0) or 0)
    except (TypeError, ValueError):
        return 0
    return int(round(deg / 90)) % 4 * 90 if np.isfinite(deg) else 0


def _native_rate(stream) -> Fraction | None:  # av.VideoStream
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else None


def _iter_raw(path: Path, suffix: str, info: VideoInfo) -> Iterator[np.ndarray]:
    w, h = info.width, info.height
    frame_bytes = raw_frame_bytes(suffix, w, h)
    with open(path, "rb") as fh:
        while True:
            buf = np.fromfile(fh, dtype=np.uint8, count=frame_bytes)
            if buf.size == 0:
                return
            if buf.size != frame_bytes:
                raise InputError(f"{path} ends with a partial frame; check --size")
            if suffix == ".rgb":
                yield np.ascontiguousarray(buf.reshape(3, h, w).transpose(1, 2, 0))
            else:
                yield i420_from_buffer(buf, w, h)


def _iter_container(path: Path, info: VideoInfo) -> Iterator[np.ndarray]:
    import av

    container = _open_container(path)
    index = 0
    k = info.rotation // 90
    stored = (info.height, info.width) if k % 2 else (info.width, info.height)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"

        def pictures() -> Iterator[tuple[float | None, np.ndarray]]:
            nonlocal index
            for frame in container.decode(stream):
                if (frame.width, frame.height) != stored:
                    raise InputError(
                        f"{path} changes picture size at frame {index} "
                        f"({stored[0]}x{stored[1]} -> {frame.width}x{frame.height}); "
                        "re-encode it at one size"
                    )
                rgb = frame.to_ndarray(format="rgb24", src_color_range=frame.color_range)
                if k:
                    rgb = np.ascontiguousarray(np.rot90(rgb, k))
                index += 1
                yield frame.time, rgb

        yield from on_time_grid(pictures(), _native_rate(stream) or info.fps)
    except av.FFmpegError as exc:
        raise InputError(f"{path} is corrupt near frame {index} ({_short(exc)})") from None
    finally:
        container.close()


MAX_HOLD_S = 10  # longest gap in the timestamps filled by repeating a frame


def on_time_grid(
    frames: Iterator[tuple[float | None, np.ndarray]], rate: Fraction
) -> Iterator[np.ndarray]:
    """Frames with presentation times -> frames at a constant ``rate``, by the timestamps.

    Slot k (time t0 + k / rate) shows the newest frame at or before it (times are rounded
    to the nearest slot): a variable-frame-rate video has frames repeated in its slow parts
    and dropped in its fast ones, so time runs as in the source. A constant-rate video
    passes unchanged. Frames without a time take the next slot; gaps longer than
    MAX_HOLD_S are shortened to it (a broken timestamp cannot make unbounded output).
    """
    t0: float | None = None
    next_slot = 0
    last: np.ndarray | None = None
    max_hold = int(MAX_HOLD_S * rate)
    for t, img in frames:
        if t is None or not np.isfinite(t):
            slot = next_slot
        else:
            if t0 is None:
                t0 = t
            slot = int(round((t - t0) * rate))
        if slot < next_slot:  # a second frame in a slot already shown: keep it for holds
            last = img
            continue
        if last is not None:
            for _ in range(min(slot - next_slot, max_hold)):
                yield last
        if slot - next_slot > max_hold and t0 is not None:
            t0 += (slot - next_slot - max_hold) / rate
            slot = next_slot + max_hold
        yield img
        last = img
        next_slot = slot + 1


class VideoReader:
    """Iterate over a video's frames as (H, W, 3) uint8 RGB arrays, one at a time.

    ``size`` and ``fps`` are needed for raw ``.rgb``/``.yuv`` files whose name does not carry
    them (``.yuv`` is read as I420, BT.601 limited range). For containers ``fps`` only
    overrides the reported rate (no resampling) and ``size``, if given, must match the stream.
    Grey videos come out as RGB with three equal channels. Each ``iter()`` starts from the first
    frame; ``close()`` (or leaving the ``with`` block) stops any iteration still running.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        size: tuple[int, int] | None = None,
        fps: Fraction | None = None,
    ) -> None:
        self.path = Path(path)
        self._suffix = self.path.suffix.lower()
        self._iters: list[Iterator[np.ndarray]] = []
        if not self.path.exists():
            raise InputError(f"{self.path} does not exist")
        if not self.path.is_file():
            raise InputError(f"{self.path} is not a file")
        rate = as_fraction(fps) if fps is not None else None
        if size is not None:
            size = _check_size_arg(size)
        if self.is_raw:
            self.info = _probe_raw(self.path, self._suffix, size, rate)
        else:
            self.info = _probe_container(self.path, rate)
            if size is not None and tuple(size) != (self.info.width, self.info.height):
                raise InputError(
                    f"{self.path} is {self.info.width}x{self.info.height} but size "
                    f"{size[0]}x{size[1]} was given; --size is only for raw .rgb/.yuv files"
                )

    @property
    def is_raw(self) -> bool:
        return self._suffix in RAW_SUFFIXES

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.is_raw:
            it = _iter_raw(self.path, self._suffix, self.info)
        else:
            it = _iter_container(self.path, self.info)
        self._iters.append(it)
        return it

    def close(self) -> None:
        """Release files held by unfinished iterations."""
        for it in self._iters:
            it.close()  # type: ignore[attr-defined]
        self._iters.clear()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VideoReader({str(self.path)!r}, {self.info})"


def _check_size_arg(size: tuple[int, int]) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InputError(f"size must be (width, height), got {size!r}") from None
    return width, height


def read_frames(
    path: PathLike, max_frames: int | None = None, **kw: object
) -> Iterator[np.ndarray]:
    """Yield up to ``max_frames`` RGB frames of ``path`` (all when None), streaming.

    ``kw`` goes to :class:`VideoReader` (``size``, ``fps``). The file is opened right away,
    so a bad path raises here rather than at the first ``next()``.
    """
    if max_frames is not None and max_frames < 0:
        raise InputError(f"max_frames must be >= 0, got {max_frames}")
    reader = VideoReader(path, **kw)  # type: ignore[arg-type]
    return _limited(reader, max_frames)


def _limited(reader: VideoReader, max_frames: int | None) -> Iterator[np.ndarray]:
    with reader:
        if max_frames == 0:
            return
        for i, frame in enumerate(reader, start=1):
            yield frame
            if max_frames is not None and i >= max_frames:
                return


# ---------------------------------------------------------------------------------------------
# writing


class _RawSink:
    """Headerless ``.rgb`` / ``.yuv`` frames, or a ``.y4m`` stream in 4:4:4."""

    def __init__(self, fh: BinaryIO, suffix: str, width: int, height: int, fps: Fraction):
        self.fh = fh
        self.suffix = suffix
        if suffix == ".y4m":
            header = (
                f"YUV4MPEG2 W{width} H{height} F{fps.numerator}:{fps.denominator} "
                "Ip A1:1 C444 XYSCSS=444 XCOLORRANGE=LIMITED\n"
            )
            fh.write(header.encode("ascii"))

    def write(self, frame: np.ndarray) -> None:
        if self.suffix == ".rgb":
            self.fh.write(frame.transpose(2, 0, 1).tobytes())
        elif self.suffix == ".yuv":
            self.fh.write(i420_bytes(frame))
        else:
            self.fh.write(b"FRAME\n")
            self.fh.write(rgb_to_yuv444(frame).tobytes())

    def close(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()

    def abort(self) -> None:
        self.fh.close()


class _AvSink:
    """A viewing copy: H.264 (libx264, yuv420p, crf 12, preset fast) in mp4/mkv/mov, with
    the first audio stream of ``audio_from`` copied in (as long as the video) when given."""

    def __init__(
        self,
        path: Path,
        fmt: str,
        width: int,
        height: int,
        fps: Fraction,
        audio_from: Path | None = None,
    ):
        import av

        self.container = av.open(str(path), mode="w", format=fmt)
        stream = self.container.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "fast"}
        self.stream = stream
        self.fps = fps
        self.pts = 0
        self.audio_src = self.audio_out = None
        if audio_from is not None:
            self.audio_src = _open_container(audio_from)
            if not self.audio_src.streams.audio:
                self.audio_src.close()
                raise InputError(f"--audio-from {audio_from}: it has no audio stream")
            self.audio_out = self.container.add_stream_from_template(
                self.audio_src.streams.audio[0]
            )

    def write(self, frame: np.ndarray) -> None:
        import av

        vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
        vf = vf.reformat(format="yuv420p", dst_colorspace="ITU601", dst_color_range="MPEG")
        vf.pts = self.pts
        self.pts += 1
        for packet in self.stream.encode(vf):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        if self.audio_src is not None:
            self._copy_audio()
        self.container.close()

    def _copy_audio(self) -> None:
        """Remux the source's audio packets that fall within the video's duration, timed
        from the start of the source's video (where decoded frame 0 comes from)."""
        src = self.audio_src
        ain = src.streams.audio[0]
        tb = ain.time_base
        v = src.streams.video[0] if src.streams.video else None
        start = v.start_time * v.time_base if v is not None and v.start_time is not None else 0
        shift = int(round(start / tb))
        end = shift + int(self.pts / self.fps / tb)
        try:
            for packet in src.demux(ain):
                if packet.pts is None or packet.dts is None:
                    continue
                if packet.pts >= end:
                    break
                if packet.pts < shift:
                    continue
                packet.pts -= shift
                packet.dts -= shift
                packet.stream = self.audio_out
                self.container.mux(packet)
        finally:
            src.close()

    def abort(self) -> None:
        if self.audio_src is not None:
            self.audio_src.close()
        self.container.close()


def _create_temp(final: Path) -> tuple[Path, int]:
    """Create an empty hidden file next to ``final`` (same file system, so replace is atomic)."""
    for _ in range(100):
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.part")
        try:
            return tmp, os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
    raise OutputError(f"cannot create a temporary file next to {final}")


class VideoWriter:
    """Write RGB frames to ``path``; the file appears only when ``close()`` succeeds.

    The format follows the extension: ``.mp4``/``.mkv``/``.mov`` (H.264 viewing copy, lossy),
    ``.y4m`` (4:4:4 BT.601 limited), ``.rgb`` (planar RGB 4:4:4, exact), ``.yuv`` (I420 BT.601
    limited, like the reader). Frames go to a hidden temporary file in the same folder that is
    renamed over ``path`` on close, and deleted when the ``with`` block raises or on
    ``abort()``, so a crash never leaves a half-written file that looks complete.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        fps: Fraction,
        width: int,
        height: int,
        audio_from: PathLike | None = None,
    ) -> None:
        self.path = Path(path)
        self.audio_from = Path(audio_from) if audio_from is not None else None
        self.suffix = self.path.suffix.lower()
        if self.suffix not in WRITE_SUFFIXES:
            raise OutputError(
                f"cannot write {self.path}: unknown extension {self.suffix or '(none)'!r}; "
                f"use one of {', '.join(WRITE_SUFFIXES)}"
            )
        self.width, self.height = int(width), int(height)
        if self.width <= 0 or self.height <= 0:
            raise OutputError(f"cannot write {self.path}: bad frame size {width}x{height}")
        if (self.suffix in CONTAINER_FORMATS or self.suffix == ".yuv") and (
            self.width % 2 or self.height % 2
        ):
            raise OutputError(
                f"cannot write {self.path}: {self.suffix} needs even width and height, "
                f"got {self.width}x{self.height}"
            )
        if self.audio_from is not None:
            if self.suffix not in CONTAINER_FORMATS:
                raise OutputError(
                    f"cannot write {self.path} with audio: --audio-from needs an "
                    f"{', '.join(CONTAINER_FORMATS)} output"
                )
            if not self.audio_from.is_file():
                raise InputError(f"--audio-from {self.audio_from} does not exist")
        self.fps = as_fraction(fps)
        self.frames_written = 0
        self._tmp, self._sink = self._open()
        self._closed = False

    def _open(self) -> tuple[Path, _RawSink | _AvSink]:
        if self.path.is_dir():
            raise OutputError(f"cannot write {self.path}: it is a folder")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp, fd = _create_temp(self.path)
        except OSError as exc:
            raise OutputError(
                f"cannot write {self.path}: {exc.strerror or exc}; pick a writable folder"
            ) from None
        try:
            if self.suffix in CONTAINER_FORMATS:
                os.close(fd)
                sink: _RawSink | _AvSink = _AvSink(
                    tmp,
                    CONTAINER_FORMATS[self.suffix],
                    self.width,
                    self.height,
                    self.fps,
                    self.audio_from,
                )
            else:
                fh = os.fdopen(fd, "wb", buffering=1 << 20)
                sink = _RawSink(fh, self.suffix, self.width, self.height, self.fps)
        except InputError:
            _unlink_quietly(tmp)
            raise
        except Exception as exc:
            _unlink_quietly(tmp)
            raise OutputError(f"cannot write {self.path}: {_short(exc)}") from None
        return tmp, sink

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame (grey (H, W) frames are accepted too)."""
        if self._closed:
            raise OutputError(f"cannot write to {self.path}: the writer is already closed")
        rgb = to_rgb_frame(frame)
        if rgb.shape[:2] != (self.height, self.width):
            raise InputError(
                f"frame is {rgb.shape[1]}x{rgb.shape[0]} but {self.path} was opened for "
                f"{self.width}x{self.height}"
            )
        try:
            self._sink.write(rgb)
        except Exception as exc:
            self.abort()
            raise OutputError(f"writing {self.path} failed: {_short(exc)}") from None
        self.frames_written += 1

    def close(self) -> None:
        """Finish the file and move it into place (a second call does nothing)."""
        if self._closed:
            return
        try:
            self._sink.close()
            os.replace(self._tmp, self.path)
        except Exception as exc:
            self.abort()
            raise OutputError(f"finishing {self.path} failed: {_short(exc)}") from None
        self._closed = True

    def abort(self) -> None:
        """Drop everything written so far; ``path`` is left as it was before."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sink.abort()
        except Exception:  # the file is being thrown away anyway
            pass
        _unlink_quietly(self._tmp)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # A writer dropped without close() must not leave its temporary file behind.
        if getattr(self, "_closed", True) is False:
            self.abort()


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
