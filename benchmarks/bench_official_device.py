"""Official models through the codec on a device: random access exactness, agreement with the
CPU, and decode speed.

    python benchmarks/bench_official_device.py [--device cuda] [--golden DIR] [--frames 12]

For each family with a golden checkpoint (../shared/reference/golden): encode the golden input
frames with a key frame every 4 (lossless RGB key pictures, so no video codec is needed),
decode the stream on the device from the start and from every key frame (must be equal,
bit for bit), decode it on the CPU as well (max difference in 8-bit levels), and time the
device decode per frame.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from gfvc.bitstream import KEY
from gfvc.codec import Decoder, Encoder
from gfvc.keyframe import keyframe_codec
from gfvc.models import model_class

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "reference" / "golden"


def load(family: str, golden: Path, tmp: Path) -> tuple[str, str, np.ndarray]:
    g = torch.load(golden / f"{family}.pt", weights_only=True)
    frames = torch.load(golden / g["inputs_file"], weights_only=True)["frames_uint8"]
    ckpt, cfg = tmp / f"{family}.pth.tar", tmp / f"{family}.yaml"
    torch.save({**g["state_dict"], "epoch": 1}, ckpt)
    cfg.write_text(yaml.safe_dump(g["config"]))
    return str(ckpt), str(cfg), frames.permute(0, 2, 3, 1).numpy()


def decode(header, model, units) -> tuple[list[np.ndarray], float]:
    dec = Decoder(header, model)
    t0 = time.perf_counter()
    out = [dec.decode_unit(u) for u in units]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, (time.perf_counter() - t0) / len(units)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--golden", type=Path, default=GOLDEN)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--families", default="FOMM,CFTE,FV2V,DAC,RDAC")
    ap.add_argument("--tmp", type=Path, default=Path("/tmp"))
    args = ap.parse_args()
    print(f"device {args.device}, torch {torch.__version__}")
    print(
        f"{'model':6} {'keys':>4} {'entry points exact':>18} {'max |dev-cpu|':>13} {'ms/frame':>9}"
    )
    for fam in args.families.split(","):
        ckpt, cfg, frames = load(fam, args.golden, args.tmp)
        cls = model_class(fam.lower())
        enc_model = cls.create(checkpoint=ckpt, config=cfg, device=args.device)
        enc = Encoder(enc_model, keyframe_codec("lossless", fmt="rgb444"), gop=4, watch=False)
        units = [enc.encode_unit(np.ascontiguousarray(f)) for f in frames[: args.frames]]
        keys = [i for i, u in enumerate(units) if u[0] == KEY]
        dev_model = cls.create(checkpoint=ckpt, config=cfg, device=args.device)
        decode(enc.header, dev_model, units[:2])  # warm-up (kernels, allocator)
        full, ms = decode(enc.header, dev_model, units)
        exact = all(
            all(
                np.array_equal(a, b)
                for a, b in zip(decode(enc.header, dev_model, units[k:])[0], full[k:], strict=True)
            )
            for k in keys
        )
        cpu, _ = decode(enc.header, cls.create(checkpoint=ckpt, config=cfg), units)
        diff = max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(full, cpu, strict=True))
        print(f"{fam:6} {len(keys):>4} {str(exact):>18} {diff:>13} {1000 * ms:>9.1f}")


if __name__ == "__main__":
    main()
