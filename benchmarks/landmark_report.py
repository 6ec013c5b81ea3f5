"""The default model against issue 6's bars, from a finished ``gfvc ctc`` run.

    gfvc ctc configs/ctc_landmark.yaml -o ctc-landmark --workers 2
    python benchmarks/landmark_report.py ctc-landmark docs/results/landmark

For every clip it takes the x265 anchor's lowest-rate point (QP 51) and the landmark point
with the highest rate not above a third of it (the lowest-rate point when none is), prints a
markdown table of rates and metrics, and writes one figure of the strip frames (original,
x265 QP 51, landmark, its warp-only variant) captioned with that frame's own metric values.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

METRICS = ("ms_ssim", "lmd", "id_dist", "psnr_y")
BETTER_HIGH = {"ms_ssim": True, "lmd": False, "id_dist": False, "psnr_y": True}


def load(out: Path) -> dict[tuple[str, str, int], dict]:
    rows = {}
    for f in sorted((out / "runs").glob("*.json")):
        r = json.loads(f.read_text())
        rows[(r["sequence"], r["codec"], int(r["qp"]))] = r
    return rows


def operating_points(
    rows: dict, anchor: str, model: str, anchor_qp: int
) -> list[tuple[dict, dict]]:
    """(anchor at ``anchor_qp``, model point at <= 1/3 of its rate) for every clip with both."""
    pairs = []
    for seq in sorted({k[0] for k in rows}):
        a = rows.get((seq, anchor, anchor_qp))
        pts = sorted((r for k, r in rows.items() if k[:2] == (seq, model)), key=lambda r: r["kbps"])
        if a is None or not pts:
            continue
        under = [r for r in pts if r["kbps"] <= a["kbps"] / 3]
        pairs.append((a, under[-1] if under else pts[0]))
    return pairs


def table(pairs: list[tuple[dict, dict]], warp: dict) -> str:
    head = "| clip | codec | kbps | rate / x265 | " + " | ".join(METRICS) + " |"
    lines = [head, "|" + "---|" * (4 + len(METRICS))]
    wins = dict.fromkeys(METRICS, 0)
    for a, m in pairs:
        w = warp.get((m["sequence"], m["qp"]))
        for r in (a, m) + ((w,) if w else ()):
            vals = " | ".join(f"{r[k]:.4f}" if r.get(k) is not None else "-" for k in METRICS)
            lines.append(
                f"| {r['sequence']} | {r['codec']} QP {r['qp']} | {r['kbps']:.2f} | "
                f"{r['kbps'] / a['kbps']:.2f} | {vals} |"
            )
        for k in METRICS:
            if m.get(k) is not None and a.get(k) is not None:
                better = m[k] >= a[k] if BETTER_HIGH[k] else m[k] <= a[k]
                wins[k] += int(better)
    ok = [(a, m) for a, m in pairs if m["kbps"] <= a["kbps"] / 3]
    mean = {k: np.mean([m[k] - a[k] for a, m in pairs if m.get(k) is not None]) for k in METRICS}
    lines.append("")
    lines.append(
        f"{len(ok)}/{len(pairs)} clips have a landmark point at or below a third of x265 QP 51's "
        "rate (the others show their lowest-rate point). Landmark at least as good as x265 QP 51 on: "
        + ", ".join(f"{k} {wins[k]}/{len(pairs)} clips" for k in METRICS)
        + ". Mean difference landmark - x265: "
        + ", ".join(f"{k} {mean[k]:+.4f}" for k in METRICS)
        + "."
    )
    return "\n".join(lines)


def figure(out: Path, pairs: list[tuple[dict, dict]], warp: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    def frame_metrics(r: dict) -> str:
        fm = r.get("frames_metrics", {})
        n = len(next(iter(fm.values()), []))
        k = int(round(0.5 * (n - 1))) if n else 0
        vals = {
            m: fm[m][k] for m in ("ms_ssim", "lmd", "id_dist") if m in fm and fm[m][k] is not None
        }
        return "  ".join(f"{m} {v:.3f}" for m, v in vals.items())

    cols = 4
    fig, axes = plt.subplots(len(pairs), cols, figsize=(3.2 * cols, 3.6 * len(pairs)))
    axes = np.atleast_2d(axes)
    for row, (a, m) in enumerate(pairs):
        seq = a["sequence"]
        w = warp.get((seq, m["qp"]))
        panels = [("original", out / "frames" / f"{seq}__original.png", None)]
        for r in (a, m, w):
            if r is not None:
                panels.append(
                    (
                        f"{r['codec']} QP {r['qp']}  {r['kbps']:.2f} kbps",
                        out / "frames" / f"{seq}__{r['codec']}__qp{r['qp']}.png",
                        r,
                    )
                )
        for col in range(cols):
            ax = axes[row, col]
            ax.set_axis_off()
            if col < len(panels):
                title, png, r = panels[col]
                ax.imshow(mpimg.imread(png))
                ax.set_title(title + ("" if r is None else "\n" + frame_metrics(r)), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(out: Path, docs: Path, anchor: str = "x265", model: str = "landmark") -> None:
    rows = load(out)
    pairs = operating_points(rows, anchor, model, 51)
    if not pairs:
        sys.exit(f"no clip of {out} has both {anchor} QP 51 and {model} results")
    warp = {(k[0], k[2]): r for k, r in rows.items() if k[1] == f"{model}-warp"}
    text = table(pairs, warp)
    print(text)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "bars.md").write_text(text + "\n")
    figure(out, pairs, warp, docs / "strips_at_third_of_x265.png")
    print(f"wrote {docs / 'bars.md'} and {docs / 'strips_at_third_of_x265.png'}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python benchmarks/landmark_report.py CTC_OUT DOCS_DIR")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
