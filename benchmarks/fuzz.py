"""Long fuzzing runs of every parser gfvc exposes to outside data (see gfvc/fuzz.py).

    python benchmarks/fuzz.py                         # 100,000 cases over all targets
    python benchmarks/fuzz.py --cases 5000 --target gfv --seed 7
    python benchmarks/fuzz.py --replay gfv:7:1234     # rerun one case, with its traceback

Prints, per target, cases run, how many were refused with a gfvc error (expected), the
slowest case, and every failure (an exception outside gfvc's error classes, a case slower
than gfvc.fuzz.SLOW_CASE_S or one that grew the peak RSS by more than MEMORY_CASE_MB).
Exit status 1 when anything failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

os.environ.setdefault("GLOG_minloglevel", "2")

# Share of the cases per target (the whole-file and unit targets cost the most per case).
WEIGHTS = {
    "gfv": 0.2,
    "units": 0.2,
    "annexb": 0.15,
    "sei": 0.15,
    "raw": 0.1,
    "config": 0.1,
    "checkpoint": 0.1,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000, help="total cases (split by weight)")
    ap.add_argument("--target", action="append", choices=sorted(WEIGHTS), help="only these")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hours", type=float, default=None, help="stop after this long in all")
    ap.add_argument("--replay", help="TARGET:SEED:CASE, rerun one case and show its traceback")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from gfvc import fuzz

    corpus = fuzz.Corpus.build()
    if args.replay:
        name, seed, case = args.replay.split(":")
        import numpy as np

        fn = fuzz.TARGETS[name](corpus)
        fn(np.random.default_rng([int(seed), int(case)]), corpus)  # raises what it raised
        print("no failure")
        return 0
    targets = args.target or list(WEIGHTS)
    total_w = sum(WEIGHTS[t] for t in targets)
    budget = None if args.hours is None else args.hours * 3600
    t0 = time.monotonic()
    failed = 0
    print(f"{'target':<11} {'cases':>8} {'refused':>8} {'s':>8} {'slowest':>8} failures")
    for name in targets:
        n = max(1, round(args.cases * WEIGHTS[name] / total_w))
        left = None if budget is None else max(1.0, budget - (time.monotonic() - t0))
        share = None if left is None else left * WEIGHTS[name] / total_w
        res = fuzz.run(name, cases=n, seconds=share, seed=args.seed, corpus=corpus)
        print(
            f"{name:<11} {res.cases:>8} {res.refused:>8} {res.seconds:>8.0f} "
            f"{res.slowest_s:>8.2f} {len(res.failures)}",
            flush=True,
        )
        for f in res.failures:
            print(f"    {f.target}:{f.seed}:{f.case}  {f.error}  at {f.where}", flush=True)
        failed += len(res.failures)
    print(f"total failures: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
