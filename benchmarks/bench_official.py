"""CPU speed of the official GFVC models' synthesis (one 256x256 frame), full-size configs.

The networks get *random* weights: the cost of a forward pass does not depend on the weight
values (no data-dependent control flow; CFTE's 4x4 Farneback flow is negligible), so no
checkpoint is needed. For each model it prints, in ms per frame (median of ``--repeat`` runs
after two warm-ups; the two per-frame columns are timed alternately in the same loop, so a
busy machine slows both alike):

* ``generator``: the full generator call as the reference decoder makes it (key-frame encoding
  included, the networks in the reference form: batch norms, contiguous memory), comparable
  with the reference timings (FOMM 674 ms, CFTE 715 ms, FV2V 2.1 s on 2 threads of this
  machine class);
* ``decode``: gfvc's per-frame decoding: the key-frame encoding cached once per key frame,
  the synthesis networks in their inference form (``set_fast_inference``: batch norms folded,
  nearest upsampling merged into the next convolution, channels-last);
* ``speedup``: generator / decode;
* ``key``: the one-off key-frame encoding (for FV2V this includes the canonical 3-D keypoint
  detector and the head-pose estimator on the key frame, which the reference also runs once);
* ``max diff``: the largest difference between the two predictions (both in [0, 1]);
* GFLOP of the generator call and of the cached decoding (torch's flop counter: convolutions
  and matrix products), a load-independent measure of the same costs.

Usage: ``python benchmarks/bench_official.py [--models fomm cfte fv2v] [--threads 2]
[--repeat 5]``. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from gfvc.models.official.base import OfficialModel
from gfvc.models.official.cfte import CfteModel
from gfvc.models.official.dac import DacModel
from gfvc.models.official.fomm import FommModel
from gfvc.models.official.fv2v import Fv2vModel
from gfvc.models.official.hdac import HdacModel
from gfvc.models.official.rdac import RdacModel

MODELS: dict[str, type[OfficialModel]] = {
    "fomm": FommModel,
    "cfte": CfteModel,
    "fv2v": Fv2vModel,
    "dac": DacModel,
    "hdac": HdacModel,
    "rdac": RdacModel,
}


def _median_ms(fn: Callable[[], object], repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _frames(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two smooth synthetic 256x256 frames (content does not change the cost)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(32, 32, 3)).astype(np.float64)
    big = np.kron(base, np.ones((8, 8, 1)))
    return big.astype(np.uint8), np.roll(big, 3, axis=1).astype(np.uint8)


def _generator_call(
    model: OfficialModel,
    key: np.ndarray,
    key_vec: np.ndarray,
    cur_vec: np.ndarray,
    base: np.ndarray,
) -> Callable[[], object]:
    """The reference decoder's generator call (key-frame encoding included, no caching)."""
    gen = model.nets["generator"]
    x = model.frame_tensor(key, "contiguous")
    if isinstance(model, Fv2vModel):
        enc = model.key_encoding(key)  # canonical + posed key keypoints (once per key frame)
        kp_d = model.driving_keypoints(enc, model.from_vector(cur_vec))
        return lambda: gen(x, kp_d, enc.kp_source)
    if isinstance(model, HdacModel):
        b = model.frame_tensor(base, "contiguous")
        return lambda: gen.predict(x, model.from_vector(key_vec), model.from_vector(cur_vec), b)
    if isinstance(model, (DacModel, RdacModel)):
        return lambda: gen.animate(x, model.from_vector(key_vec), model.from_vector(cur_vec))
    if isinstance(model, CfteModel):
        return lambda: gen(x, model.from_vector(key_vec), model.from_vector(cur_vec))
    assert isinstance(model, FommModel)
    return lambda: gen(x, model.from_vector(cur_vec), model.from_vector(key_vec))


def bench(name: str, repeat: int) -> dict[str, float]:
    ref = MODELS[name].random(seed=0).set_fast_inference(False)  # the reference form
    model = MODELS[name].random(seed=0)  # gfvc's decoding: inference form (the default)
    key, cur = _frames()
    key_vec, cur_vec = model.analyse_key(key), model.analyse(cur)
    if isinstance(model, HdacModel):
        for m in (ref, model):
            m.set_base_layer(cur)

    full_generator = _generator_call(ref, key, key_vec, cur_vec, cur)

    def decode() -> object:
        return model.synthesize(key, key_vec, cur_vec)

    def key_only() -> object:
        model.reset()
        return model.key_encoding(key, key_vec)

    with torch.inference_mode():
        decode()  # fill the key-frame cache
        flops = {}
        for tag, fn in (("generator", full_generator), ("decode", decode)):
            with FlopCounterMode(display=False) as counter:
                fn()
            flops[tag] = counter.get_total_flops() / 1e9
        times = _alternate_ms((full_generator, decode), repeat)
        prediction = _prediction(full_generator())
        ours = _prediction(_synthesis(model, key, key_vec, cur_vec))
        res = {
            "generator": times[0],
            "decode": times[1],
            "key": _median_ms(key_only, max(1, repeat // 2), warmup=1),
            "analyse": _median_ms(lambda: model.analyse(cur), repeat),
            "max_diff": float((prediction - ours).abs().max()),
            "gflop_generator": flops["generator"],
            "gflop_decode": flops["decode"],
        }
    return res


def _alternate_ms(fns: tuple[Callable[[], object], ...], repeat: int) -> list[float]:
    """Median ms of each function, timed in turn within each round (after two warm-ups)."""
    for _ in range(2):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, out in zip(fns, times, strict=True):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
    return [statistics.median(x) for x in times]


def _synthesis(model: OfficialModel, key: np.ndarray, key_vec: np.ndarray, cur_vec: np.ndarray):
    """The raw (float) prediction of gfvc's decoding path."""
    if isinstance(model, HdacModel):
        return model.synthesize_tensor(
            key, model.from_vector(key_vec), model.from_vector(cur_vec), model._base_layer
        )
    if isinstance(model, Fv2vModel):
        return model.synthesize_tensor(key, model.from_vector(cur_vec))
    return model.synthesize_tensor(key, model.from_vector(key_vec), model.from_vector(cur_vec))


def _prediction(out: object) -> torch.Tensor:
    return (out if torch.is_tensor(out) else out.prediction).float()  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", nargs="+", default=["fomm", "cfte", "fv2v"], choices=sorted(MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, random weights")
    print(
        f"{'model':6} {'generator':>10} {'decode':>8} {'speedup':>8} {'key (once)':>11}"
        f" {'analyse':>8} {'max diff':>9}   (ms/frame)   GFLOP generator / decode"
    )
    for name in args.models:
        r = bench(name, args.repeat)
        print(
            f"{name:6} {r['generator']:10.1f} {r['decode']:8.1f} {r['generator'] / r['decode']:7.2f}x"
            f" {r['key']:11.1f} {r['analyse']:8.1f} {r['max_diff']:9.1e}"
            f"                {r['gflop_generator']:8.1f} / {r['gflop_decode']:.1f}"
        )


if __name__ == "__main__":
    main()
