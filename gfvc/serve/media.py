"""What the server feeds the encoder: built-in clips, uploads (checked), camera frames.

Everything here runs in worker threads; nothing touches the event loop.
"""

from __future__ import annotations

import base64
import json
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Generic, TypeVar

import cv2
import numpy as np

from gfvc.codec import EncodeSettings, FramePreparer
from gfvc.errors import GfvcError, InputError

T = TypeVar("T")


class TooLong(InputError):
    """An upload over the size or duration limit."""


class Stopped(Exception):
    """The session ended while a source was still being read."""


# ----------------------------------------------------------------------------- small helpers


def jpeg_b64(frame: np.ndarray, quality: int = 85) -> str:
    """An RGB frame as base64 JPEG, for display on the page (never counted as sent bits)."""
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB picture
        raise InputError("cannot encode a frame as JPEG")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def decode_jpeg(data: bytes) -> np.ndarray:
    """A camera frame sent by the page (JPEG or PNG bytes) as RGB; InputError if it is not."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if img is None or img.ndim != 3 or min(img.shape[:2]) < 16:
        raise InputError("a camera frame is not a JPEG picture")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def samples() -> dict[str, Path]:
    """The built-in clips, by name: the videos that ship inside the package."""
    data = Path(str(resources.files("gfvc") / "data"))
    return {p.stem: p for p in sorted(data.glob("*.mp4"))}


class Worker:
    """A session's background job in its own daemon thread; it talks to the page only
    through ``send`` (JSON text, queued for the tab's socket)."""

    thread_name = "gfvc-worker"

    def __init__(self, send: Callable[[str], None]) -> None:
        self.send = send
        self.thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has ended."""
        if self.thread.is_alive():
            self.thread.join(timeout)
        return not self.thread.is_alive()

    def _emit(self, msg: dict) -> None:
        self.send(json.dumps(msg))

    def _report(self, e: Exception) -> None:
        """Tell the page why the job ended: the user's message, or a short note of a bug
        (which ends this job only; the server and other tabs go on)."""
        text = str(e) if isinstance(e, GfvcError) else f"internal error ({type(e).__name__}: {e})"
        self._emit({"type": "error", "message": text})

    def _run(self) -> None:  # pragma: no cover - subclasses
        raise NotImplementedError


class Latest(Generic[T]):
    """A one-item mailbox where a newer item replaces an older unread one: a worker that
    falls behind (slider moves, camera frames) always works on the freshest request."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._cond = threading.Condition()
        self._closed = False
        self.replaced = 0  # items dropped unread

    def put(self, item: T) -> None:
        with self._cond:
            if self._item is not None:
                self.replaced += 1
            self._item = item
            self._cond.notify()

    def get(self, timeout: float | None = None) -> T:
        """The newest item; raises ``Stopped`` once closed (or after ``timeout`` seconds)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._item is not None or self._closed, timeout):
                raise Stopped
            if self._closed:
                raise Stopped
            item, self._item = self._item, None
            return item  # type: ignore[return-value]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


# ----------------------------------------------------------------------------- uploads


@dataclass(frozen=True)
class Limits:
    """What an upload may be: a video of at most ``max_mb`` megabytes and ``max_seconds``."""

    max_mb: float = 50.0
    max_seconds: float = 60.0

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1_000_000)


@dataclass(frozen=True)
class UploadInfo:
    name: str
    path: Path
    width: int
    height: int
    fps: float
    seconds: float


def probe_upload(path: Path, name: str, limits: Limits) -> UploadInfo:
    """Check that an uploaded file is a video PyAV reads and short enough; InputError with a
    message for the page otherwise. Raw .rgb/.yuv never qualify (the file has no suffix)."""
    from gfvc.io import VideoReader

    try:
        with VideoReader(path) as reader:
            info = reader.info
    except InputError:
        raise InputError(f"{name} is not a video this server can read") from None
    seconds = _duration(path, info.frames, float(info.fps), limits.max_seconds)
    if seconds > limits.max_seconds:
        raise TooLong(
            f"{name} lasts {seconds:.0f} s; uploads may last at most {limits.max_seconds:g} s"
        )
    return UploadInfo(name, path, info.width, info.height, float(info.fps), seconds)


def _duration(path: Path, frames: int | None, fps: float, most: float) -> float:
    """Seconds of video: the container's word, else the frame count, else counted (up to
    just past ``most``, so a long file without an index is not decoded to its end)."""
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        if c.duration:
            return c.duration / 1_000_000
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        if frames:
            return frames / fps
        n = 0
        for _ in c.decode(stream):
            n += 1
            if n > most * fps + 1:
                break
        return n / fps


# ----------------------------------------------------------------------------- sources


@dataclass
class Captured:
    """One frame as the sender's camera gives it."""

    frame: np.ndarray  # (size, size, 3) face crop
    t: float  # capture time on the call's clock, seconds from its start
    refresh: str | None = None  # the crop jumped here: this must be a key frame
    arrived: float | None = None  # camera frames: when it reached the server (its clock)
    skipped: int = 0  # camera frames replaced unread by this one (the encoder was busy)


class _StoppablePreparer(FramePreparer):
    """``FramePreparer`` whose reading (the face-tracking pass too) ends when ``stop`` is set."""

    def __init__(self, path: Path, settings: EncodeSettings, stop: threading.Event) -> None:
        super().__init__(path, settings)
        self._stop = stop

    def _frames(self) -> Iterator[np.ndarray]:
        for f in super()._frames():
            if self._stop.is_set():
                raise Stopped
            yield f


class ClipSource:
    """A video file played as a camera would: frames due at the clip's own rate (looped
    when ``loop``), face-cropped and tracked as ``gfvc encode`` does."""

    paced = True

    def __init__(
        self, path: Path, stop: threading.Event, *, loop: bool = True, size: int = 256
    ) -> None:
        self.prep = _StoppablePreparer(path, EncodeSettings(size=size), stop)
        self.fps = self.prep.fps
        self.loop = loop

    def frames(self) -> Iterator[Captured]:
        """Crops with their due times; the loop's wrap-around is a cut (a key frame)."""
        refresh_at = self.prep.refresh_at  # runs the tracking pass
        i = 0
        while True:
            for j, frame in enumerate(self.prep):
                reason = refresh_at.get(j) or ("cut" if j == 0 and i else None)
                yield Captured(frame, i / float(self.fps), reason)
                i += 1
            if not self.loop:
                return

    def interrupt(self) -> None:
        """Nothing to wake: reading checks the stop event between frames."""

    def close(self) -> None:
        """Release the file (from the thread that reads it)."""
        self.prep.close()


class CameraSource:
    """Frames the page captures from a webcam and sends up the socket (JPEG bytes), at
    the rate they arrive; the newest wins when the encoder is busy. The call starts once a
    face is in view (the key frame needs one); its square is then held for the call."""

    paced = False

    def __init__(self, fps: float, clock, size: int = 256) -> None:
        self.fps = Fraction(fps).limit_denominator(1001)
        self.inbox: Latest[tuple[bytes, float]] = Latest()
        self._clock = clock
        self.size = size
        self.notify: Callable[[dict], None] = lambda msg: None  # status lines for the page

    def push(self, data: bytes) -> None:
        self.inbox.put((data, self._clock()))

    def frames(self) -> Iterator[Captured]:
        from gfvc.io import crop_and_resize

        box = self._wait_for_face()
        start = None
        replaced = self.inbox.replaced
        while True:
            data, arrived = self.inbox.get()
            start = arrived if start is None else start
            skipped, replaced = self.inbox.replaced - replaced, self.inbox.replaced
            frame = crop_and_resize(decode_jpeg(data), box, self.size)
            yield Captured(frame, arrived - start, arrived=arrived, skipped=skipped)

    def _wait_for_face(self):  # -> CropBox
        """The head square of the first frame that shows a face (frames before it are not
        sent: there is nothing to animate yet)."""
        from gfvc.errors import NoFaceError
        from gfvc.io import find_face_crop

        told = False
        while True:
            data, _ = self.inbox.get()
            try:
                box = find_face_crop([decode_jpeg(data)])
            except NoFaceError:
                if not told:
                    self.notify({"type": "status", "message": "waiting for a face in view"})
                    told = True
                continue
            self.notify({"type": "status", "message": "face found: the call starts"})
            return box

    def interrupt(self) -> None:
        self.inbox.close()

    def close(self) -> None:
        self.inbox.close()


def frames_late(due: float, now: float, fps: float) -> int:
    """Whole frame intervals by which a frame due at ``due`` has been overtaken at ``now``;
    a live sender drops a frame once the next one is already due."""
    return max(0, math.floor((now - due) * fps))
