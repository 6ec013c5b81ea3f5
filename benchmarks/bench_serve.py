"""Measure ``gfvc serve`` as the page uses it: a live call of N seconds and Edit-tab updates.

Starts the server on a free local port, drives its WebSocket like app.js does and prints
what the page would show: frames shown per second (arrival rate), capture-to-display
latency (mean, 95th percentile), kbps of the units sent, frames dropped to keep real time;
then re-synthesis time of the Edit tab (server-side ms and round trip).

    python benchmarks/bench_serve.py [--seconds 20] [--kbps 16] [--clip FILE] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from pathlib import Path

import numpy as np


def _recv(ws, timeout: float = 120) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def _until(ws, kind: str) -> tuple[dict, list[dict]]:
    seen = []
    while True:
        m = _recv(ws)
        if m["type"] == kind:
            return m, seen
        if m["type"] == "error":
            raise SystemExit(f"server error: {m['message']}")
        seen.append(m)


def live_call(url: str, seconds: float, kbps: float | None, clip: Path | None) -> dict:
    import httpx
    from websockets.sync.client import connect

    with connect(url.replace("http", "ws") + "/ws", max_size=None) as ws:
        session = _recv(ws)["session"]
        start = {"type": "start", "source": "sample", "kbps": kbps, "loop": True}
        if clip is not None:
            res = httpx.post(
                f"{url}/upload?session={session}", content=clip.read_bytes(), timeout=120
            )
            res.raise_for_status()
            start = {**start, "source": "upload", "upload": res.json()["upload"]}
        ws.send(json.dumps(start))
        _until(ws, "started")
        frames, arrivals = [], []
        t_end = None
        while t_end is None or time.monotonic() < t_end:
            m = _recv(ws)
            if m["type"] == "frame":
                frames.append(m)
                arrivals.append(time.monotonic())
                t_end = t_end or time.monotonic() + seconds
            elif m["type"] == "error":
                raise SystemExit(f"server error: {m['message']}")
        ws.send(json.dumps({"type": "stop"}))
        ended, rest = _until(ws, "ended")
    frames += [m for m in rest if m["type"] == "frame"]
    sent = sum(len(base64.b64decode(f["unit"])) for f in frames)
    lat = np.array([f["latency_ms"] for f in frames[1:]])  # the first waits for the models
    inter = [f for f in frames[1:] if f["kind"] == "f"]
    return {
        "frames": len(frames),
        "dropped": ended["dropped"],
        "key_frames": ended["key_frames"],
        "fps_shown": round((len(arrivals) - 1) / (arrivals[-1] - arrivals[0]), 2),
        "clip_fps": round(len(frames + [None] * ended["dropped"]) / ended["seconds"], 2),
        "latency_ms_mean": round(float(lat.mean()), 1),
        "latency_ms_p95": round(float(np.percentile(lat, 95)), 1),
        "encode_ms_mean": round(float(np.mean([f["encode_ms"] for f in inter])), 1),
        "decode_ms_mean": round(float(np.mean([f["decode_ms"] for f in inter])), 1),
        "kbps_sent": round(8 * sent / 1000 / ended["seconds"], 3),
        "server_kbps": ended["kbps"],
        "target_kbps": kbps,
        "seconds": ended["seconds"],
    }


def edit_updates(url: str, n: int) -> dict:
    from websockets.sync.client import connect

    with connect(url.replace("http", "ws") + "/ws", max_size=None) as ws:
        _recv(ws)
        ws.send(json.dumps({"type": "edit_open", "source": "sample"}))
        ready, _ = _until(ws, "edit_ready")
        lo, hi = ready["components"]["yaw"]
        server_ms, round_ms = [], []
        for i in range(n):  # a slider dragged across its range, one update at a time
            values = dict(ready["values"], yaw=lo + (hi - lo) * i / max(n - 1, 1))
            t0 = time.monotonic()
            ws.send(json.dumps({"type": "edit", "id": i, "values": values}))
            reply, _ = _until(ws, "edit_frame")
            round_ms.append(1000 * (time.monotonic() - t0))
            server_ms.append(reply["ms"])
    return {
        "edit_updates": n,
        "edit_ms_mean": round(float(np.mean(server_ms[1:])), 1),
        "edit_ms_p95": round(float(np.percentile(server_ms[1:], 95)), 1),
        "edit_round_trip_ms_mean": round(float(np.mean(round_ms[1:])), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--kbps", type=float, default=16.0, help="target rate (0: fixed QP)")
    ap.add_argument("--clip", type=Path, help="upload this clip instead of the built-in one")
    ap.add_argument("--checkpoint", help="landmark weights (e.g. gfvc/data/landmark_warp.pt)")
    ap.add_argument("--edits", type=int, default=30)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from gfvc.serve.app import create_app
    from gfvc.serve.server import ServerThread

    app = create_app(checkpoint=args.checkpoint)
    with ServerThread(app) as url:
        out = live_call(url, args.seconds, args.kbps or None, args.clip)
        out |= edit_updates(url, args.edits)
    out["torch_threads"] = torch.get_num_threads()
    out["clip"] = str(args.clip or "built-in sample")
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:26} {v}")


if __name__ == "__main__":
    main()
