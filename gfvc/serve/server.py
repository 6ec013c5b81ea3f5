"""Running the app with uvicorn: in the foreground (``gfvc serve``) or in a thread (tests,
benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from gfvc.errors import InputError


def check_port(host: str, port: int) -> None:
    """InputError when ``host:port`` cannot be bound (taken, or not an address here)."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be in 0..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise InputError(f"--host {host!r} is not an address of this machine") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise InputError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _server(app: Any, host: str, port: int):
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", ws_max_size=4_000_000, lifespan="on"
    )
    return uvicorn.Server(config)


def serve(app: Any, host: str, port: int) -> None:
    """Serve until Ctrl-C (uvicorn stops cleanly: sockets closed, sessions removed)."""
    check_port(host, port)
    _server(app, host, port).run()


class ServerThread:
    """``with ServerThread(app) as url:`` a real server on a free local port, stopped (and
    its app shut down) on leaving the block."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host, self.port = host, port or free_port(host)
        self.server = _server(app, self.host, self.port)
        self.thread = threading.Thread(target=self.server.run, name="gfvc-serve", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(60)
