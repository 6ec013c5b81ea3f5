"""A live call between an encoder and a decoder in one worker thread, as the page shows it.

The sender's side captures frames at their real rate (a clip is paced on its own clock; a
camera at the rate frames arrive), encodes each into a live packet and "sends" it; the
receiver's side decodes the packet with its own model, and the thread reports per frame:
the packet itself (so the page counts what travelled), its kind, the original and decoded
pictures (display only), and encode, decode and capture-to-display times. A frame whose
successor is already due when the encoder gets to it is dropped, as a camera pipeline
that cannot keep up drops frames; the call never falls behind real time.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gfvc.bitstream import KEY, open_packet
from gfvc.codec import Decoder, Encoder, build_model, check_kbps
from gfvc.keyframe import keyframe_codec
from gfvc.serve.media import (
    CameraSource,
    ClipSource,
    Stopped,
    Worker,
    frames_late,
    jpeg_b64,
)

#: a key frame may take at most this long to send at the target rate (rate control on)
BURST_S = 1.0


@dataclass
class CallStats:
    """Totals of one call: what was sent, on the call's clock."""

    frames: int = 0
    dropped: int = 0
    key_frames: int = 0
    bytes: int = 0  # lengths of the packets the encoder produced
    seconds: float = 0.0  # media time covered (the last frame's time plus one interval)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def kbps(self) -> float:
        return 8 * self.bytes / 1000 / self.seconds if self.seconds > 0 else 0.0

    def as_message(self, kind: str = "stats") -> dict:
        return {
            "type": kind,
            "frames": self.frames,
            "dropped": self.dropped,
            "key_frames": self.key_frames,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 4),
            "kbps": round(self.kbps, 3),
        }


class LiveCall(Worker):
    """Runs one call in its own thread; ``send`` receives JSON text messages for the page.

    ``model`` names the motion model (``build_model``); each side gets its own instance,
    so calls in other tabs share nothing mutable. ``kbps`` None keeps the key-frame codec's
    fixed QP until ``set_kbps`` is called.
    """

    thread_name = "gfvc-call"

    def __init__(
        self,
        source: ClipSource | CameraSource,
        send: Callable[[str], None],
        *,
        model: str = "landmark",
        checkpoint: str | None = None,
        kbps: float | None = None,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(send)
        self.source = source
        if isinstance(source, CameraSource):
            source.notify = self._emit
        self.model_name, self.checkpoint = model, checkpoint
        self.kbps = None if kbps is None else check_kbps(kbps)
        self.stop_event = stop or threading.Event()
        self.clock = clock
        self.stats = CallStats()
        self._pending_kbps: float | None = None
        self._lock = threading.Lock()

    # -- control (any thread)
    def set_kbps(self, kbps: float) -> None:
        kbps = check_kbps(kbps)
        with self._lock:
            self._pending_kbps = kbps

    def stop(self) -> None:
        self.stop_event.set()
        self.source.interrupt()  # a camera waiting for its next frame wakes up

    # -- the call (its own thread)
    def _run(self) -> None:
        reason = "stopped"
        try:
            reason = self._call()
        except Stopped:
            pass
        except Exception as e:
            reason = "error"
            self._report(e)
        finally:
            self.source.close()
        self._emit(self.stats.as_message("ended") | {"reason": reason})

    def _models(self):
        opts = {"checkpoint": self.checkpoint}
        return build_model(self.model_name, **opts), build_model(self.model_name, **opts)

    def _call(self) -> str:
        enc_model, dec_model = self._models()
        fps = self.source.fps
        kf = keyframe_codec(enc_model.default_keyframe_codec)
        enc = Encoder(enc_model, kf, fps=fps, kbps=self.kbps, burst_s=BURST_S)
        header = enc.header.to_bytes()
        dec = Decoder(header, dec_model)
        self._emit(
            {
                "type": "started",
                "fps": float(fps),
                "size": enc_model.size,
                "model": enc_model.name,
                "header": base64.b64encode(header).decode("ascii"),
                "kbps": self.kbps,
            }
        )
        interval = 1 / float(fps)
        start: float | None = None  # the clock at media time 0 (once the source is ready)
        carry: str | None = None  # a key-frame reason of a dropped frame
        last_stats = 0.0
        for cap in self.source.frames():
            if self.stop_event.is_set():
                return "stopped"
            if start is None:
                start = self.clock() - cap.t
            due = start + cap.t if cap.arrived is None else cap.arrived
            if self.source.paced:
                if self.stop_event.wait(max(0.0, due - self.clock())):
                    return "stopped"
                if frames_late(due, self.clock(), float(fps)) >= 1:
                    self.stats.dropped += 1
                    enc.skip()  # its time passes for rate control
                    self.stats.seconds = cap.t + interval
                    carry = carry or cap.refresh
                    continue
            if cap.skipped:  # camera frames the encoder was too busy to take
                self.stats.dropped += cap.skipped
                enc.skip(cap.skipped)
            self._apply_rate(enc)
            if cap.refresh or carry:
                enc.request_refresh(cap.refresh or carry)  # type: ignore[arg-type]
                carry = None
            self._emit(self._frame(enc, dec, cap, due, interval))
            if cap.t - last_stats >= 1.0:
                last_stats = cap.t
                self._emit(self.stats.as_message())
        return "finished"

    def _apply_rate(self, enc: Encoder) -> None:
        with self._lock:
            kbps, self._pending_kbps = self._pending_kbps, None
        if kbps is not None:
            enc.set_kbps(kbps)
            self.kbps = kbps

    def _frame(self, enc: Encoder, dec: Decoder, cap, due: float, interval: float) -> dict:
        t0 = self.clock()
        packet = enc.encode_frame(cap.frame)
        t1 = self.clock()
        got = dec.receive(packet)
        t2 = self.clock()
        if got.needs_refresh:  # over the back channel
            enc.request_refresh()
        shown = got.frame if got.frame is not None else cap.frame
        msg = {
            "type": "frame",
            "seq": enc.frame_index - 1,
            "t": round(cap.t, 4),
            "unit": base64.b64encode(packet).decode("ascii"),
            "bytes": len(packet),
            "kind": "k" if open_packet(packet)[0][0] == KEY else "f",
            "original": jpeg_b64(cap.frame),
            "decoded": jpeg_b64(shown),
            "encode_ms": round(1000 * (t1 - t0), 2),
            "decode_ms": round(1000 * (t2 - t1), 2),
            "problem": got.problem,
            "kbps_target": self.kbps,
        }
        latency = 1000 * (self.clock() - due)
        msg["latency_ms"] = round(latency, 2)
        s = self.stats
        s.frames += 1
        s.key_frames += msg["kind"] == "k"
        s.bytes += len(packet)
        s.seconds = cap.t + interval
        s.latencies_ms.append(latency)
        return msg
