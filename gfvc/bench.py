"""``gfvc bench``: measured speed of each stage, on the built-in sample (or any clip).

Prints numbers; asserts nothing. Encode fps covers analysis, key-frame coding, prediction,
quantization and entropy coding of frames already in memory; decode fps covers entropy
decoding and synthesis. Reading and face cropping are reported separately as I/O.
``duplex_fps`` is a video call: one encoder and one decoder (each with its own model) run at
the same time in two threads of one process, sharing the machine (torch gets half the cores
on each side); it is the frame rate at which both keep up.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.bitstream import open_packet
from gfvc.codec import (
    Decoder,
    EncodeSettings,
    FramePreparer,
    build_model,
    make_encoder,
    settings_keyframe,
)


def _ms(seconds: float, n: int) -> float:
    return round(1000 * seconds / max(n, 1), 3)


def _duplex_seconds(clip: list[np.ndarray], units: list[bytes], s: EncodeSettings, header) -> float:
    """Wall time to encode ``clip`` and, at the same time, decode ``units`` (another stream)."""
    from concurrent.futures import ThreadPoolExecutor

    def model():
        return build_model(
            s.model, checkpoint=s.checkpoint, config=s.config, device=s.device, size=s.size
        )

    import torch

    enc = make_encoder(s, header.fps, model=model())
    dec = Decoder(header, model())
    threads = torch.get_num_threads()
    # each side gets its share of the cores (as two processes of a call would), instead of
    # both splitting every convolution over all of them: measured 32 vs 28 fps on 2 cores
    torch.set_num_threads(duplex_threads())
    try:
        with ThreadPoolExecutor(2) as pool:
            t0 = time.perf_counter()
            jobs = [
                pool.submit(lambda: [enc.encode_frame(f) for f in clip]),
                pool.submit(lambda: [dec.decode_unit(u) for u in units]),
            ]
            for j in jobs:
                j.result()
            return time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)


def duplex_threads() -> int:
    """torch threads per side when an encoder and a decoder run at once: half the cores."""
    import torch

    return max(1, torch.get_num_threads() // 2)


def run_bench(
    src: str | Path | None = None, settings: EncodeSettings | None = None, frames: int = 100
) -> dict[str, Any]:
    import torch

    from gfvc.demo import sample_path

    s = settings or EncodeSettings()
    src = Path(src) if src else sample_path()
    s.frames = frames
    t0 = time.perf_counter()
    prep = FramePreparer(src, s)
    clip = list(prep)
    prep.close()
    t_io = time.perf_counter() - t0
    n = len(clip)

    model = build_model(
        s.model, checkpoint=s.checkpoint, config=s.config, device=s.device, size=s.size
    )
    kf = settings_keyframe(s, model)
    enc = make_encoder(s, prep.fps, model=model, frames=n)  # the watch and --kbps included
    t0 = time.perf_counter()
    units = [enc.encode_frame(f) for f in clip]
    t_enc = time.perf_counter() - t0
    kbps = sum(8 * len(open_packet(u)[0]) for u in units) / n * float(prep.fps) / 1000

    model.reset()
    dec = Decoder(enc.header, model)
    t0 = time.perf_counter()
    out = [dec.decode_unit(u) for u in units]
    t_dec = time.perf_counter() - t0
    assert len(out) == n

    t_duplex = _duplex_seconds(clip, units, s, enc.header)

    # Stages on their own.
    model.reset()
    t0 = time.perf_counter()
    feats = [model.analyse(f) for f in clip]
    t_an = time.perf_counter() - t0
    key_feat = feats[0]
    t0 = time.perf_counter()
    for f in feats[1:]:
        model.synthesize(out[0], key_feat, f)
    t_syn = time.perf_counter() - t0
    t0 = time.perf_counter()
    pic = kf.encode(clip[0])
    t_kfe = time.perf_counter() - t0
    t0 = time.perf_counter()
    kf.decode(pic, s.size, s.size)
    t_kfd = time.perf_counter() - t0
    from gfvc.features.entropy import feature_coder
    from gfvc.features.quant import quantize

    q = np.diff(quantize(np.stack(feats), enc.qstep), axis=0)
    ce, cd = feature_coder(s.coder, model.dim), feature_coder(s.coder, model.dim)
    t0 = time.perf_counter()
    payloads = [ce.encode(r) for r in q]
    t_ee = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in payloads:
        cd.decode(p)
    t_ed = time.perf_counter() - t0

    return {
        "encode_fps": round(n / t_enc, 1),
        "decode_fps": round(n / t_dec, 1),
        "duplex_fps": round(n / t_duplex, 1),
        "kbps": round(kbps, 2),
        "target_kbps": s.kbps,
        "key_frames": [list(k[:3]) for k in enc.keys],
        "model": s.model,
        "frames": n,
        "size": s.size,
        "threads": torch.get_num_threads(),
        "duplex_threads_per_side": duplex_threads(),
        "analyse_ms": _ms(t_an, n),
        "synthesize_ms": _ms(t_syn, n - 1),
        "keyframe_encode_ms": _ms(t_kfe, 1),
        "keyframe_decode_ms": _ms(t_kfd, 1),
        "entropy_encode_ms": _ms(t_ee, len(q)),
        "entropy_decode_ms": _ms(t_ed, len(q)),
        "feature_bits_per_frame": round(8 * sum(map(len, payloads)) / len(q), 1),
        "io_read_crop_ms": _ms(t_io, n),
    }
