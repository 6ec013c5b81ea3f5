"""``gfvc serve``: the page, upload limits, the WebSocket protocol, sessions that clean up.

Through Starlette's TestClient (no network); the browser test is ``test_browser.py``.
Nothing here is timed: a call on a loaded machine drops more frames, and every assertion
holds whatever the number of frames that got through.
"""

from __future__ import annotations

import base64
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # Starlette 1.x suggests httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from gfvc.bitstream import KEY, open_packet  # noqa: E402
from gfvc.codec import Decoder  # noqa: E402
from gfvc.demo import sample_path  # noqa: E402
from gfvc.serve.app import LOOPBACK_NAMES, Malformed, create_app, parse_message  # noqa: E402
from gfvc.serve.media import Limits  # noqa: E402

SAMPLE_FRAMES = 100  # gfvc/data/sample.mp4: 100 frames at 30 fps


def make_app(**kw):
    """The app as ``gfvc serve`` makes it, reachable by the TestClient's host name."""
    return create_app(allowed_hosts=(*LOOPBACK_NAMES, "testserver"), **kw)


@pytest.fixture()
def tmp_root(tmp_path: Path) -> Path:
    root = tmp_path / "sessions"
    root.mkdir()
    return root


@pytest.fixture()
def client(tmp_root: Path):
    app = make_app(tmp_root=str(tmp_root), limits=Limits(max_mb=1.0, max_seconds=10))
    with TestClient(app) as c:
        yield c


def _until(ws, kind: str, most: int = 10_000) -> tuple[dict, list[dict]]:
    """Messages up to the first of type ``kind``: (that message, the ones before it)."""
    seen = []
    for _ in range(most):
        m = ws.receive_json()
        if m["type"] == kind:
            return m, seen
        assert m["type"] != "error", m
        seen.append(m)
    raise AssertionError(f"no {kind!r} message")


def folders_left(root: Path, expected: int = 0) -> int:
    """Session folders under ``root`` once cleanup had its chance: a closed socket's folder
    is removed by the server's handler after the client has already moved on (in a worker
    thread, which a loaded machine may start late: up to a minute)."""
    for _ in range(1200):
        if len(list(root.iterdir())) == expected:
            break
        time.sleep(0.05)
    return len(list(root.iterdir()))


def _upload(client, session: str, data: bytes, name: str = "clip.mp4"):
    return client.post(f"/upload?session={session}", content=data, headers={"X-Filename": name})


# ----------------------------------------------------------------------------- page


def test_page_and_static_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200
    assert '<script src="/static/app.js">' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "new WebSocket" in js.text
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/../app.py").status_code == 404


# ----------------------------------------------------------------------------- uploads


def test_uploads_that_are_not_videos_or_too_big_or_too_long_are_refused(client, tmp_root):
    with client.websocket_connect("/ws") as ws:
        sid = ws.receive_json()["session"]
        (session_dir,) = tmp_root.iterdir()

        res = _upload(client, sid, b"this is not a video" * 100, "notes.mp4")
        assert res.status_code == 415 and "not a video" in res.json()["error"]

        res = _upload(client, sid, bytes(1_100_000))  # over the 1 MB limit of this app
        assert res.status_code == 413 and "at most 1 MB" in res.json()["error"]

        app = make_app(tmp_root=str(tmp_root), limits=Limits(max_seconds=2))
        with TestClient(app) as short, short.websocket_connect("/ws") as ws2:
            sid2 = ws2.receive_json()["session"]
            res = _upload(short, sid2, sample_path().read_bytes(), "sample.mp4")
            assert res.status_code == 413 and "at most 2 s" in res.json()["error"]

        res = _upload(client, "no-such-session", sample_path().read_bytes())
        assert res.status_code == 403
        assert list(session_dir.iterdir()) == []  # nothing refused is kept


def test_an_upload_is_kept_for_its_session_only_and_removed_on_disconnect(client, tmp_root):
    with client.websocket_connect("/ws") as ws:
        sid = ws.receive_json()["session"]
        res = _upload(client, sid, sample_path().read_bytes(), "my clip.mp4")
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["upload"] == "u1" and body["name"] == "my clip.mp4"
        assert body["seconds"] == pytest.approx(SAMPLE_FRAMES / 30, abs=0.1)
        assert len(list(tmp_root.rglob("upload-*"))) == 1
        with client.websocket_connect("/ws") as other:  # another tab cannot use it
            other.receive_json()
            other.send_json({"type": "start", "source": "upload", "upload": "u1"})
            assert "not in this session" in other.receive_json()["message"]
    assert folders_left(tmp_root) == 0  # both sessions' folders are gone


def test_sessions_still_open_at_shutdown_are_removed(tmp_root):
    """A real server (uvicorn) stopped while a tab is connected and has uploaded a clip."""
    import httpx
    from websockets.sync.client import connect

    from gfvc.serve.server import ServerThread

    server = ServerThread(create_app(tmp_root=str(tmp_root)))
    url = server.__enter__()
    with connect(url.replace("http", "ws") + "/ws") as ws:
        sid = json.loads(ws.recv(timeout=30))["session"]
        res = httpx.post(f"{url}/upload?session={sid}", content=sample_path().read_bytes())
        assert res.status_code == 200, res.text
        assert len(list(tmp_root.rglob("upload-*"))) == 1
        server.__exit__(None, None, None)  # the server stops with the tab still open
        assert not server.thread.is_alive()
        assert list(tmp_root.iterdir()) == []


# ----------------------------------------------------------------------------- the call


def test_a_live_call_sends_real_packets_and_counts_their_bytes(client):
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_json({"type": "start", "source": "sample", "loop": False})
        started, _ = _until(ws, "started")
        ended, before = _until(ws, "ended")
    frames = [m for m in before if m["type"] == "frame"]
    assert ended["reason"] == "finished"
    assert frames and frames[0]["kind"] == "k"
    assert [f["seq"] for f in frames] == list(range(len(frames)))
    assert ended["frames"] + ended["dropped"] == SAMPLE_FRAMES
    units = [base64.b64decode(f["unit"]) for f in frames]
    assert [len(u) for u in units] == [f["bytes"] for f in frames]
    assert sum(map(len, units)) == ended["bytes"]
    assert ended["seconds"] == pytest.approx(SAMPLE_FRAMES / 30, abs=1e-3)
    assert ended["kbps"] == pytest.approx(8 * ended["bytes"] / 1000 / ended["seconds"], abs=1e-3)
    # the units are the encoder's live packets: a decoder built from the header takes them all
    dec = Decoder(base64.b64decode(started["header"]))
    for u, f in zip(units, frames, strict=True):
        assert dec.receive(u).decoded
        assert (open_packet(u)[0][0] == KEY) == (f["kind"] == "k")
    assert all(f["latency_ms"] >= f["encode_ms"] + f["decode_ms"] - 1 for f in frames)
    for key in ("original", "decoded"):
        assert base64.b64decode(frames[-1][key])[:2] == b"\xff\xd8"  # JPEG pictures


def test_an_uploaded_real_clip_goes_through_a_call(tmp_root):
    """A portrait 720x1080 camera clip: checked, tracked, cropped and coded live."""
    from conftest import clip

    path = clip("lp_s13.mp4")  # 103 frames at 25 fps
    with TestClient(make_app(tmp_root=str(tmp_root))) as c, c.websocket_connect("/ws") as ws:
        sid = ws.receive_json()["session"]
        res = _upload(c, sid, path.read_bytes(), path.name)
        assert res.status_code == 200, res.text
        assert (res.json()["width"], res.json()["height"]) == (720, 1080)
        ws.send_json({"type": "start", "source": "upload", "upload": "u1", "loop": False})
        started, _ = _until(ws, "started")
        ended, before = _until(ws, "ended")
    frames = [m for m in before if m["type"] == "frame"]
    assert started["fps"] == 25 and started["size"] == 256
    assert ended["reason"] == "finished" and ended["frames"] + ended["dropped"] == 103
    assert frames[0]["kind"] == "k" and not any(f["problem"] for f in frames)


def test_an_upload_without_a_face_ends_its_call_with_a_message(client, tmp_path):
    from conftest import moving_frames, write_video

    path = write_video(tmp_path / "squares.mp4", moving_frames(20, size=128))
    with client.websocket_connect("/ws") as ws:
        sid = ws.receive_json()["session"]
        assert _upload(client, sid, path.read_bytes()).status_code == 200
        ws.send_json({"type": "start", "source": "upload", "upload": "u1", "loop": False})
        err, _ = _until_error(ws)
        assert "no face" in err["message"]
        ended, _ = _until(ws, "ended")
        assert ended["reason"] == "error"
        ws.send_json({"type": "start", "source": "sample", "loop": False})  # the tab goes on
        _until(ws, "frame")
        ws.send_json({"type": "stop"})
        _until(ws, "ended")


def test_the_rate_slider_reaches_the_encoder(client):
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_json({"type": "start", "source": "sample", "kbps": 16})
        first, _ = _until(ws, "frame")
        assert first["kbps_target"] == 16
        ws.send_json({"type": "rate", "kbps": 2.5})
        for _ in range(500):
            m, _ = _until(ws, "frame")
            if m["kbps_target"] == 2.5:
                break
        else:
            raise AssertionError("the new target never reached the encoder")
        ws.send_json({"type": "rate", "kbps": 10**9})  # out of range: refused, call goes on
        err, _ = _until_error(ws)
        assert "kbps" in err["message"]
        ws.send_json({"type": "stop"})
        ended, _ = _until(ws, "ended")
        assert ended["reason"] == "stopped"


def _until_error(ws):
    seen = []
    while True:
        m = ws.receive_json()
        if m["type"] == "error":
            return m, seen
        seen.append(m)


def test_a_camera_call_encodes_the_frames_the_page_sends(client):
    import cv2

    from gfvc.io import read_frames

    pictures = [
        cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes()
        for f in read_frames(sample_path(), 6)
    ]
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_bytes(pictures[0])  # before a camera call: breaks the protocol
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_json({"type": "start", "source": "camera", "fps": 10})
        _until(ws, "started")
        blank = cv2.imencode(".jpg", np.full((240, 320, 3), 128, np.uint8))[1].tobytes()
        ws.send_bytes(blank)  # nobody in view: the call waits
        assert "waiting for a face" in _until(ws, "status")[0]["message"]
        ws.send_bytes(pictures[0])
        assert "face found" in _until(ws, "status")[0]["message"]
        got = []
        for p in pictures[1:]:  # one at a time, as a slow camera would
            ws.send_bytes(p)
            got.append(_until(ws, "frame")[0])
        ws.send_bytes(b"not a jpeg")
        err, _ = _until_error(ws)
        assert "not a JPEG" in err["message"]
    assert [g["kind"] for g in got[:1]] == ["k"] and len(got) == len(pictures) - 1


# ----------------------------------------------------------------------------- protocol


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"kind": "start"}',
        '{"type": "dance"}',
        '{"type": "start"}',
        '{"type": "start", "source": 3}',
        '{"type": "rate", "kbps": "fast"}',
        '{"type": "rate", "kbps": true}',
        '{"type": "stop", "extra": 1}',
        '{"type": "edit", "id": 1, "values": [1]}',
    ],
)
def test_malformed_messages_are_named(text):
    with pytest.raises(Malformed):
        parse_message(text)


def test_well_formed_messages_pass():
    assert parse_message('{"type": "start", "source": "sample", "kbps": null}')["kbps"] is None
    assert parse_message('{"type": "rate", "kbps": 4}')["kbps"] == 4


def test_a_malformed_message_closes_only_its_own_connection(client, tmp_root):
    with client.websocket_connect("/ws") as good, client.websocket_connect("/ws") as bad:
        good.receive_json()
        bad.receive_json()
        good.send_json({"type": "start", "source": "sample"})
        _until(good, "frame")
        bad.send_text("{ this is not json")
        with pytest.raises(WebSocketDisconnect) as closed:
            bad.receive_json()
        assert closed.value.code == 1008 and "not JSON" in closed.value.reason
        seq = [_until(good, "frame")[0]["seq"] for _ in range(3)]  # the other call goes on
        assert seq == sorted(seq) and len(set(seq)) == 3
        assert folders_left(tmp_root, 1) == 1  # the closed one's folder is gone
        good.send_json({"type": "stop"})
        _until(good, "ended")


def test_a_page_of_another_site_cannot_connect(client):
    with pytest.raises(WebSocketDisconnect) as closed:
        with client.websocket_connect("/ws", headers={"origin": "http://evil.example"}) as ws:
            ws.receive_json()
    assert closed.value.code == 1008


def test_other_host_names_are_refused_against_dns_rebinding():
    with TestClient(create_app()) as c:
        assert c.get("/").status_code == 400  # "testserver" is not a loopback name
        assert c.get("/", headers={"host": "localhost:8000"}).status_code == 200
        assert c.get("/", headers={"host": "127.0.0.1"}).status_code == 200
        with pytest.raises(WebSocketDisconnect) as closed:
            with c.websocket_connect("/ws", headers={"host": "evil.example:8000"}) as ws:
                ws.receive_json()
        assert closed.value.code == 1008
    with TestClient(create_app(allowed_hosts=None)) as c:  # bound to a network address
        assert c.get("/").status_code == 200


def test_requests_that_cannot_be_served_get_a_message_and_the_socket_stays(client):
    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        for msg, words in [
            ({"type": "start", "source": "sample", "name": "nope"}, "no built-in clip"),
            ({"type": "start", "source": "sample", "kbps": 0}, "kbps"),
            ({"type": "start", "source": "camera", "fps": 500}, "fps"),
            ({"type": "rate", "kbps": 4}, "no call"),
            ({"type": "edit", "id": 1, "values": {}}, "first"),
        ]:
            ws.send_json(msg)
            m = ws.receive_json()
            assert m["type"] == "error" and words in m["message"], m


# ----------------------------------------------------------------------------- edit


def test_the_editor_resynthesises_the_key_frame_and_refuses_unknown_names(client):
    import cv2

    def picture(b64: str) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)

    with client.websocket_connect("/ws") as ws:
        ws.receive_json()
        ws.send_json({"type": "edit_open", "source": "sample"})
        ready, _ = _until(ws, "edit_ready")
        assert {"yaw", "pitch", "roll", "jaw_open", "smile"} <= set(ready["components"])
        values = dict(ready["values"])
        ws.send_json({"type": "edit", "id": 1, "values": values})
        same, _ = _until(ws, "edit_frame")
        lo, hi = ready["components"]["yaw"]
        values["yaw"] = hi if abs(hi - values["yaw"]) > abs(lo - values["yaw"]) else lo
        ws.send_json({"type": "edit", "id": 2, "values": values})
        turned, _ = _until(ws, "edit_frame")
        assert (same["id"], turned["id"]) == (1, 2)
        diff = np.abs(picture(turned["image"]).astype(int) - picture(same["image"])).mean()
        assert diff > 2, diff  # the head turned
        ws.send_json({"type": "edit", "id": 3, "values": {"ears": 1}})
        err, _ = _until_error(ws)
        assert "ears" in err["message"]


def test_hello_lists_the_packaged_samples(client):
    with client.websocket_connect("/ws") as ws:
        hello = ws.receive_json()
    assert hello["type"] == "hello" and "sample" in hello["samples"]
    assert hello["limits"] == {"upload_mb": 1.0, "seconds": 10}
    assert json.dumps(hello)  # plain JSON


# ----------------------------------------------------------------------------- the command


def test_serve_command_mistakes_are_one_line_errors():
    import socket

    from conftest import assert_one_line_error, run_cli

    assert_one_line_error(run_cli("serve", "--port", "99999"), "--port")
    assert_one_line_error(run_cli("serve", "--model", "nope"), "unknown model")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert_one_line_error(run_cli("serve", "--port", port), "cannot listen")


def test_serve_command_serves_the_page_and_stops_cleanly_on_ctrl_c(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    import httpx

    from gfvc.serve.server import free_port

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gfvc", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line + proc.stderr.read()
        for _ in range(600):  # until uvicorn listens
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert page.status_code == 200 and "app.js" in page.text
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err
