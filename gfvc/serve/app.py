"""The ``gfvc serve`` web app (Starlette, ASGI): the page, uploads, one WebSocket per tab.

Protocol and limits: ``docs/serve.md``. Each WebSocket connection is a session with its own
temporary folder (uploads), its own call and editor threads and its own model instances;
when it disconnects, or the server shuts down, its threads stop and its folder is removed.
A message that breaks the protocol closes that one connection (code 1008, with the reason);
a request that is well formed but cannot be served (an unknown clip, a rate out of range, a
video without a face) gets an ``error`` message and the connection stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from urllib.parse import unquote, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from gfvc.codec import EncodeSettings, FramePreparer, check_kbps
from gfvc.control.rate import KBPS_RANGE
from gfvc.errors import GfvcError, InputError
from gfvc.serve.call import LiveCall
from gfvc.serve.editor import EditWorker
from gfvc.serve.media import CameraSource, ClipSource, Limits, TooLong, probe_upload, samples

STATIC = Path(__file__).parent / "static"
MAX_CAMERA_FRAME = 2_000_000  # bytes of one JPEG from the page's camera
CAMERA_FPS = (1.0, 30.0)
KBPS_SLIDER = (2.0, 64.0, 16.0)  # the page's slider: low, high, start
POLICY = 1008  # WebSocket close code: the message broke the protocol
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: mediastream:; "
    "connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
)


class Malformed(Exception):
    """A WebSocket message that breaks the protocol: the connection closes."""


# ----------------------------------------------------------------------------- messages

_NUMBER = (int, float)
#: type -> field -> (accepted types, required)
_FIELDS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "start": {
        "source": ((str,), True),
        "name": ((str,), False),
        "upload": ((str,), False),
        "kbps": (_NUMBER + (type(None),), False),
        "loop": ((bool,), False),
        "fps": (_NUMBER, False),
    },
    "rate": {"kbps": (_NUMBER, True)},
    "stop": {},
    "edit_open": {"source": ((str,), True), "name": ((str,), False), "upload": ((str,), False)},
    "edit": {"id": ((int,), True), "values": ((dict,), True)},
}


def parse_message(text: str) -> dict:
    """A page message as a dict, its fields checked against the protocol (else Malformed)."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        raise Malformed("message is not JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise Malformed("message must be a JSON object with a 'type'")
    fields = _FIELDS.get(msg["type"])
    if fields is None:
        raise Malformed(f"unknown message type {msg['type'][:40]!r}")
    for key in msg:
        if key != "type" and key not in fields:
            raise Malformed(f"unexpected field {key[:40]!r} in {msg['type']}")
    for key, (types, required) in fields.items():
        if key not in msg:
            if required:
                raise Malformed(f"{msg['type']} needs '{key}'")
            continue
        v = msg[key]
        if isinstance(v, bool) and bool not in types or not isinstance(v, types):
            raise Malformed(f"{msg['type']}.{key} has the wrong type")
        if isinstance(v, float) and not math.isfinite(v):
            raise Malformed(f"{msg['type']}.{key} is not a finite number")
    return msg


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def host_name(header: str) -> str:
    """The name in a Host header, without its port: 'localhost:8000' -> 'localhost'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    """ASGI wrapper: requests whose Host is not one of ``allowed`` are refused (HTTP 400,
    WebSocket close 1008). Against DNS rebinding: a site whose name an attacker points at
    127.0.0.1 reaches the server with its own name as Host and is turned away."""

    def __init__(self, app, allowed: tuple[str, ...] | None) -> None:
        self.app = app
        self.allowed = None if allowed is None else {a.lower() for a in allowed}

    async def __call__(self, scope, receive, send) -> None:
        if self.allowed is None or scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        if host_name(host) in self.allowed:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": POLICY})
            return
        await PlainTextResponse("unexpected Host", status_code=400)(scope, receive, send)


def _same_origin(ws: WebSocket) -> bool:
    """Browsers send Origin with every WebSocket: refuse pages of other sites (a web page
    anywhere could otherwise drive a server on 127.0.0.1)."""
    origin = ws.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == ws.headers.get("host")


# ----------------------------------------------------------------------------- sessions


class Session:
    """One browser tab: its folder, uploads, call and editor."""

    def __init__(self, config: dict, send: Callable[[str], None], tmp_root: str | None) -> None:
        self.id = secrets.token_urlsafe(16)
        self.dir = Path(tempfile.mkdtemp(prefix="gfvc-serve-", dir=tmp_root))
        self.config = config
        self.send = send  # thread-safe: queues a text message for this tab
        self.uploads: dict[str, object] = {}
        self.call: LiveCall | None = None
        self.camera: CameraSource | None = None
        self.editor: EditWorker | None = None
        self._next_upload = 0

    def new_upload_path(self) -> tuple[str, Path]:
        self._next_upload += 1
        uid = f"u{self._next_upload}"
        return uid, self.dir / f"upload-{self._next_upload}"

    def clip(self, msg: dict) -> Path:
        """The video a start/edit_open message names: a built-in sample or an upload."""
        if msg["source"] == "sample":
            name = msg.get("name", "sample")
            found = samples().get(name)
            if found is None:
                raise InputError(f"no built-in clip named {name!r}")
            return found
        if msg["source"] == "upload":
            info = self.uploads.get(msg.get("upload", ""))
            if info is None:
                raise InputError("that upload is not in this session (upload it again)")
            return info.path  # type: ignore[attr-defined]
        raise InputError(f"unknown source {msg['source'][:40]!r}")

    def start_call(self, msg: dict) -> None:
        self.stop_call()
        stop = threading.Event()
        kbps = msg.get("kbps")
        if kbps is not None:
            check_kbps(kbps)
        if msg["source"] == "camera":
            fps = msg.get("fps", 15)
            if not CAMERA_FPS[0] <= fps <= CAMERA_FPS[1]:
                raise InputError(f"camera fps must be in {CAMERA_FPS[0]:g}..{CAMERA_FPS[1]:g}")
            source = self.camera = CameraSource(fps, clock=time.monotonic)
        else:
            source = ClipSource(self.clip(msg), stop, loop=msg.get("loop", True))
        call = LiveCall(source, self.send, kbps=kbps, stop=stop, **self.config)
        self.call = call
        call.start()

    def stop_call(self) -> None:
        if self.call is not None:
            self.call.stop()
        self.call = self.camera = None

    def open_editor(self, msg: dict) -> None:
        path = self.clip(msg)
        self.stop_editor()
        self.editor = EditWorker(lambda: first_crop(path), self.send, **self.config)
        self.editor.start()

    def stop_editor(self) -> None:
        if self.editor is not None:
            self.editor.stop()
        self.editor = None

    def close(self) -> None:
        """Stop this tab's threads, wait for them briefly, remove everything it stored."""
        call, editor = self.call, self.editor
        self.stop_call()
        self.stop_editor()
        for worker in (call, editor):
            if worker is not None:
                worker.join(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def first_crop(path: Path):
    """The face crop of a clip's first frame (the Edit tab's key frame)."""
    prep = FramePreparer(path, EncodeSettings(frames=2))
    try:
        return next(iter(prep))
    finally:
        prep.close()


# ----------------------------------------------------------------------------- the app


def create_app(
    *,
    model: str = "landmark",
    checkpoint: str | None = None,
    limits: Limits | None = None,
    tmp_root: str | None = None,
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_NAMES,
) -> HostCheck:
    """The ASGI app. ``tmp_root``: where session folders go (default: the system's);
    ``allowed_hosts``: names the page may be reached by (None: any, for a server bound to a
    network address)."""
    limits = limits or Limits()
    config = {"model": model, "checkpoint": checkpoint}
    sessions: dict[str, Session] = {}

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": CSP})

    async def upload(request: Request) -> Response:
        session = sessions.get(request.query_params.get("session", ""))
        if session is None:
            return _refuse(403, "no such session: reload the page")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_bytes:
            return _refuse(413, f"uploads may be at most {limits.max_mb:g} MB")
        name = _display_name(unquote(request.headers.get("x-filename", "upload")))
        uid, path = session.new_upload_path()
        try:
            size = await _receive_to(request, path, limits.max_bytes)
            if size is None:
                raise TooLong(f"uploads may be at most {limits.max_mb:g} MB")
            if size == 0:
                raise InputError(f"{name} is empty")
            info = await asyncio.to_thread(probe_upload, path, name, limits)
        except TooLong as e:
            path.unlink(missing_ok=True)
            return _refuse(413, str(e))
        except InputError as e:
            path.unlink(missing_ok=True)
            return _refuse(415, str(e))
        except OSError:  # the session ended while the file arrived: its folder is gone
            return _refuse(410, "the session ended during the upload")
        session.uploads[uid] = info
        body = {k: v for k, v in asdict(info).items() if k != "path"}
        return JSONResponse({"upload": uid, **body})

    async def socket(ws: WebSocket) -> None:
        if not _same_origin(ws):
            await ws.close(code=POLICY, reason="connections from other sites are refused")
            return
        await ws.accept()
        loop = asyncio.get_running_loop()
        outbox: asyncio.Queue[str | None] = asyncio.Queue()

        def send(text: str) -> None:
            loop.call_soon_threadsafe(outbox.put_nowait, text)

        session = Session(config, send, tmp_root)
        sessions[session.id] = session
        pump = asyncio.create_task(_pump(ws, outbox))
        try:
            send(json.dumps(_hello(session, limits)))
            await _serve(ws, session)
        except Malformed as e:
            with contextlib.suppress(Exception):
                await ws.close(code=POLICY, reason=str(e)[:120])
        except WebSocketDisconnect:
            pass
        finally:
            sessions.pop(session.id, None)
            pump.cancel()
            # a thread of its own, not asyncio.to_thread: a handler cancelled at disconnect
            # (as the test client cancels it) cancelled the executor job before a loaded
            # machine had started it, and the session's folder stayed
            threading.Thread(target=session.close, name=f"close-{session.id}").start()

    @asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        for s in list(sessions.values()):  # at shutdown: nothing a user uploaded stays
            sessions.pop(s.id, None)
            await asyncio.to_thread(s.close)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/upload", upload, methods=["POST"]),
            WebSocketRoute("/ws", socket),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.sessions = sessions
    app.state.limits = limits
    checked = HostCheck(app, allowed_hosts)
    checked.state = app.state  # type: ignore[attr-defined]
    return checked


def _hello(session: Session, limits: Limits) -> dict:
    lo, hi, start = KBPS_SLIDER
    return {
        "type": "hello",
        "session": session.id,
        "samples": list(samples()),
        "limits": {"upload_mb": limits.max_mb, "seconds": limits.max_seconds},
        "kbps": {"min": max(lo, KBPS_RANGE[0]), "max": hi, "default": start},
        "model": session.config["model"],
    }


async def _serve(ws: WebSocket, session: Session) -> None:
    """Read this tab's messages until it disconnects (Malformed ends it early)."""
    while True:
        event = await ws.receive()
        if event["type"] == "websocket.disconnect":
            return
        data = event.get("bytes")
        if data is not None:
            if session.camera is None:
                raise Malformed("binary message without a camera call")
            if len(data) > MAX_CAMERA_FRAME:
                raise Malformed("camera frame too large")
            session.camera.push(data)
            continue
        msg = parse_message(event.get("text") or "")
        try:
            _handle(session, msg)
        except GfvcError as e:
            session.send(json.dumps({"type": "error", "message": str(e)}))


def _handle(session: Session, msg: dict) -> None:
    kind = msg["type"]
    if kind == "start":
        session.start_call(msg)
    elif kind == "rate":
        if session.call is None:
            raise InputError("no call to change the rate of")
        session.call.set_kbps(msg["kbps"])
    elif kind == "stop":
        session.stop_call()
    elif kind == "edit_open":
        session.open_editor(msg)
    elif kind == "edit":
        if session.editor is None:
            raise InputError("open a key frame for editing first")
        session.editor.request(msg["id"], msg["values"])


async def _pump(ws: WebSocket, outbox: asyncio.Queue) -> None:
    """Send this tab's queued messages in order (worker threads only queue them)."""
    with contextlib.suppress(Exception):
        while True:
            await ws.send_text(await outbox.get())


async def _receive_to(request: Request, path: Path, most: int) -> int | None:
    """Stream the request body into ``path``; None once it passes ``most`` bytes."""
    size = 0
    with open(path, "wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > most:
                return None
            f.write(chunk)
    return size


def _display_name(name: str) -> str:
    """A file name as the page gave it, safe to echo back (never used as a path)."""
    return re.sub(r"[^\w.\- ]", "_", name)[:80] or "upload"


def _refuse(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
