"""``gfvc ctc``: test-condition runs, sequences x codecs x rate points, and their report.

A YAML config names the sequences, the codecs (GFVC models with a key-frame QP sweep, and
conventional anchors with a QP sweep) and the metrics. Each (sequence, codec, rate point) is a
*job* whose result is one JSON file under ``OUT/runs/``: a finished job is never redone, so
an interrupted run resumes where it stopped, and ``--shard i/n`` lets a cluster array job
split the work. ``report`` gathers every result into CSV/JSONL, BD-rate tables, RD plots and
side-by-side strips, and writes ``OUT/report.md``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from gfvc.errors import GfvcError, InputError

GFVC = "gfvc"
ANCHOR = "anchor"


@dataclass(frozen=True)
class CodecSpec:
    name: str
    kind: str  # "gfvc" | "anchor"
    qps: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class CtcConfig:
    name: str
    sequences: list[Path]
    codecs: list[CodecSpec]
    metrics: tuple[str, ...]
    frames: int | None = 250
    size: int = 256
    fps: Fraction = Fraction(25)
    crop: bool = True
    raw_size: tuple[int, int] | None = None
    reference: str | None = None  # codec name BD-rates are computed against
    strip_frame: float = 0.5  # where in the sequence the strip frame is taken (fraction)

    @classmethod
    def load(cls, path: str | Path) -> CtcConfig:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise InputError(f"config {p} does not exist")
        try:
            d = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise InputError(f"config {p} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(d, dict):
            raise InputError(f"config {p} must be a YAML mapping")
        return cls.from_dict(d, base=p.parent)

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path = Path(".")) -> CtcConfig:
        from gfvc.eval.metrics import check_metric_names

        try:
            seqs = [_resolve(base, s) for s in d["sequences"]]
            codecs = [
                CodecSpec(
                    name=c["name"],
                    kind=c.get("type", GFVC),
                    qps=tuple(int(q) for q in c["qp"]),
                    options={k: v for k, v in c.items() if k not in ("name", "type", "qp")},
                )
                for c in d["codecs"]
            ]
        except (KeyError, TypeError) as e:
            raise InputError(
                f"config is missing {e}: it needs 'sequences' and 'codecs' (name, type, qp)"
            ) from None
        if not seqs or not codecs:
            raise InputError("config needs at least one sequence and one codec")
        for c in codecs:
            if c.kind not in (GFVC, ANCHOR):
                raise InputError(
                    f"codec {c.name!r}: type must be 'gfvc' or 'anchor', got {c.kind!r}"
                )
        names = [c.name for c in codecs]
        if len(set(names)) != len(names):
            raise InputError("codec names in the config must be unique")
        raw = d.get("raw_size")
        ref = d.get("reference")
        if ref is not None and ref not in names:
            raise InputError(f"reference {ref!r} is not one of the codecs: {', '.join(names)}")
        return cls(
            name=str(d.get("name", "ctc")),
            sequences=seqs,
            codecs=codecs,
            metrics=check_metric_names(d.get("metrics", ["psnr_rgb", "psnr_y", "ssim", "ms_ssim"])),
            frames=d.get("frames", 250),
            size=int(d.get("size", 256)),
            fps=Fraction(str(d.get("fps", 25))),
            crop=bool(d.get("crop", True)),
            raw_size=tuple(int(v) for v in str(raw).lower().split("x")) if raw else None,  # type: ignore[arg-type]
            reference=ref,
        )


def _resolve(base: Path, s: Any) -> Path:
    p = Path(os.path.expandvars(str(s["path"] if isinstance(s, dict) else s))).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


@dataclass(frozen=True)
class Job:
    sequence: Path
    codec: CodecSpec
    qp: int

    @property
    def key(self) -> str:
        return f"{self.sequence.stem}__{self.codec.name}__qp{self.qp}"


def jobs(cfg: CtcConfig, shard: tuple[int, int] = (0, 1)) -> list[Job]:
    i, n = shard
    if not 0 <= i < n:
        raise InputError(f"--shard must be i/n with 0 <= i < n, got {i}/{n}")
    every = [Job(s, c, q) for s in cfg.sequences for c in cfg.codecs for q in c.qps]
    return every[i::n]


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return (0, 1)
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    return i, n


# ----------------------------------------------------------------------------- one job


def reference_frames(cfg: CtcConfig, seq: Path, cache: Path) -> np.ndarray:
    """The cropped original every codec of ``seq`` is compared with (cached as .npy)."""
    from gfvc.codec import EncodeSettings, FramePreparer

    f = cache / f"{seq.stem}.npy"
    if f.exists():
        return np.load(f)
    s = EncodeSettings(frames=cfg.frames, size=cfg.size, crop=cfg.crop, raw_size=cfg.raw_size)
    prep = FramePreparer(seq, s)
    try:
        frames = np.stack(list(prep))
    finally:
        prep.close()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".part.npy")
    np.save(tmp, frames)
    os.replace(tmp, f)
    return frames


def run_job(cfg: CtcConfig, job: Job, out: Path) -> dict[str, Any]:
    """Code, decode and evaluate one rate point; returns (and stores) its result row."""
    import cv2

    from gfvc.eval.metrics import evaluate_sequences

    ref = reference_frames(cfg, job.sequence, out / "cache")
    fps = cfg.fps
    split: dict[str, int] = {}
    if job.codec.kind == GFVC:
        from gfvc.codec import EncodeSettings, decode_frames, encode_frames, stream_report

        o = job.codec.options
        s = EncodeSettings(
            model=o.get("model", "mesh"),
            checkpoint=o.get("checkpoint"),
            config=o.get("config"),
            qstep=o.get("qstep"),
            qp=job.qp,
            keyframe_codec=o.get("keyframe_codec", "x265"),
            keyframe_format=o.get("keyframe_format", "yuv420"),
            coder=o.get("coder", "range"),
            size=cfg.size,
            gop=o.get("gop"),
        )
        data = encode_frames(list(ref), s, fps)
        decoded = list(decode_frames(data, checkpoint=s.checkpoint, config=s.config))
        rep = stream_report(data)
        bits = rep.total_bits
        split = {
            "keyframe_bits": rep.keyframe_bits,
            "feature_bits": rep.feature_bits,
            "overhead_bits": rep.overhead_bits,
        }
    else:
        from gfvc.eval.anchors import anchor_code

        res = anchor_code(
            list(ref), job.codec.options.get("codec", job.codec.name), job.qp, float(fps)
        )
        bits, decoded = res.bits, res.decoded_frames
    ev = evaluate_sequences(ref, decoded, cfg.metrics, fps=float(fps))
    row = {
        "sequence": job.sequence.stem,
        "codec": job.codec.name,
        "kind": job.codec.kind,
        "qp": job.qp,
        "frames": len(ref),
        "fps": float(fps),
        "bits": bits,
        "kbps": bits / len(ref) * float(fps) / 1000,
        **split,
        **{m: ev.get(m) for m in cfg.metrics},
        "frames_metrics": ev.get("frames", {}),
    }
    strip_dir = out / "frames"
    strip_dir.mkdir(parents=True, exist_ok=True)
    k = int(round(cfg.strip_frame * (len(ref) - 1)))
    cv2.imwrite(str(strip_dir / f"{job.key}.png"), cv2.cvtColor(decoded[k], cv2.COLOR_RGB2BGR))
    orig = strip_dir / f"{job.sequence.stem}__original.png"
    if not orig.exists():
        cv2.imwrite(str(orig), cv2.cvtColor(ref[k], cv2.COLOR_RGB2BGR))
    _write_json(out / "runs" / f"{job.key}.json", row)
    return row


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(obj, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def _worker(args: tuple[CtcConfig, Job, Path]) -> tuple[str, str | None]:
    cfg, job, out = args
    import torch

    torch.set_num_threads(1)
    try:
        run_job(cfg, job, out)
        return job.key, None
    except GfvcError as e:
        return job.key, str(e)


def run(
    cfg: CtcConfig,
    out: Path,
    *,
    workers: int = 1,
    shard: tuple[int, int] = (0, 1),
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int, list[str]]:
    """Run every unfinished job of this shard. Returns (done now, skipped, errors)."""
    todo = [j for j in jobs(cfg, shard) if not (out / "runs" / f"{j.key}.json").exists()]
    skipped = len(jobs(cfg, shard)) - len(todo)
    # Crop each sequence once, before the workers start, so they share the cache.
    for seq in sorted({j.sequence for j in todo}):
        reference_frames(cfg, seq, out / "cache")
    errors: list[str] = []
    if workers <= 1:
        results = map(_worker, [(cfg, j, out) for j in todo])
    else:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_worker, [(cfg, j, out) for j in todo])
    for key, err in results:
        if err:
            errors.append(f"{key}: {err}")
        if progress:
            progress(1)
    return len(todo) - len(errors), skipped, errors


# ----------------------------------------------------------------------------- report


def load_rows(out: Path) -> list[dict[str, Any]]:
    runs = out / "runs"
    if not runs.is_dir():
        raise InputError(f"no results in {out}: run `gfvc ctc CONFIG` first")
    return [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))]


def curves(
    rows: list[dict[str, Any]], metric: str
) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """{sequence: {codec: (kbps sorted, metric)}} for rows that have the metric."""
    out: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for r in rows:
        if r.get(metric) is None:
            continue
        seq = out.setdefault(r["sequence"], {})
        rates, vals = seq.setdefault(r["codec"], ([], []))
        rates.append(r["kbps"])
        vals.append(r[metric])
    for seq in out.values():
        for name, (rates, vals) in list(seq.items()):
            order = np.argsort(rates)
            seq[name] = ([rates[i] for i in order], [vals[i] for i in order])
    return out


def bd_table(
    rows: list[dict[str, Any]], metrics: tuple[str, ...], reference: str
) -> list[dict[str, Any]]:
    """BD-rate (%) of every codec against ``reference``, per sequence and averaged."""
    from gfvc.eval.bd import bd_rate

    table = []
    for metric in metrics:
        per_seq = curves(rows, metric)
        codecs = sorted({c for s in per_seq.values() for c in s if c != reference})
        for codec in codecs:
            vals: dict[str, float | None] = {}
            for seq, cs in per_seq.items():
                if codec not in cs or reference not in cs:
                    continue
                try:
                    vals[seq] = bd_rate(*cs[reference], *cs[codec], metric=metric)
                except GfvcError:
                    vals[seq] = None  # curves too short or not overlapping
            ok = [v for v in vals.values() if v is not None]
            table.append(
                {"metric": metric, "codec": codec, "reference": reference,
                 "bd_rate_mean": float(np.mean(ok)) if ok else None, "per_sequence": vals}
            )  # fmt: skip
    return table


def mean_curves(
    rows: list[dict[str, Any]], metric: str
) -> dict[str, tuple[list[float], list[float]]]:
    """Average over sequences at each (codec, qp)."""
    acc: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for r in rows:
        if r.get(metric) is not None:
            acc.setdefault((r["codec"], r["qp"]), []).append((r["kbps"], r[metric]))
    out: dict[str, tuple[list[float], list[float]]] = {}
    for (codec, _), pts in sorted(acc.items()):
        rates, vals = out.setdefault(codec, ([], []))
        rates.append(float(np.mean([p[0] for p in pts])))
        vals.append(float(np.mean([p[1] for p in pts])))
    return out


def write_report(cfg: CtcConfig, out: Path) -> Path:
    """CSV, JSONL, BD-rate table, RD plots, strips and report.md from every finished job."""
    import cv2

    from gfvc.eval.plots import comparison_strip, plot_rd

    rows = load_rows(out)
    if not rows:
        raise InputError(f"no finished runs in {out / 'runs'}")
    flat = [{k: v for k, v in r.items() if k != "frames_metrics"} for r in rows]
    cols = list(dict.fromkeys(k for r in flat for k in r))
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(flat)
    with open(out / "results.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r, default=_jsonable) + "\n")

    lines = [f"# {cfg.name}: test-condition report", ""]
    lines += [
        f"{len({r['sequence'] for r in rows})} sequences, {len({r['codec'] for r in rows})} codecs, "
        f"{len(rows)} runs; {cfg.size}x{cfg.size}, {float(cfg.fps):g} fps, up to {cfg.frames} frames. "
        "Rates count every bit (key frames, features, framing).",
        "",
        "## Results (mean over sequences)",
        "",
    ]
    metrics = [m for m in cfg.metrics if any(r.get(m) is not None for r in rows)]
    lines.append("| codec | qp | kbps | " + " | ".join(metrics) + " |")
    lines.append("|---|---|---|" + "---|" * len(metrics))
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["codec"], r["qp"]), []).append(r)
    for (codec, qp), rs in sorted(groups.items()):
        vals = [
            np.mean([x[m] for x in rs if x.get(m) is not None])
            if any(x.get(m) is not None for x in rs)
            else None
            for m in metrics
        ]
        lines.append(
            f"| {codec} | {qp} | {np.mean([x['kbps'] for x in rs]):.2f} | "
            + " | ".join("n/a" if v is None else f"{v:.4g}" for v in vals)
            + " |"
        )

    ref = cfg.reference or next((c.name for c in cfg.codecs if c.kind == ANCHOR), None)
    if ref:
        table = bd_table(rows, tuple(metrics), ref)
        (out / "bd_rate.json").write_text(json.dumps(table, indent=2))
        with open(out / "bd_rate.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(
                [
                    "metric",
                    "codec",
                    "reference",
                    "bd_rate_mean_percent",
                    *sorted({s for t in table for s in t["per_sequence"]}),
                ]
            )
            seqs = sorted({s for t in table for s in t["per_sequence"]})
            for t in table:
                w.writerow(
                    [
                        t["metric"],
                        t["codec"],
                        ref,
                        t["bd_rate_mean"],
                        *[t["per_sequence"].get(s) for s in seqs],
                    ]
                )
        lines += ["", f"## BD-rate against {ref} (negative: fewer bits for the same quality)", ""]
        lines.append("| metric | codec | BD-rate (mean over sequences) | per sequence |")
        lines.append("|---|---|---|---|")
        for t in table:
            per = ", ".join(
                f"{s}: {'n/a' if v is None else f'{v:+.1f}%'}"
                for s, v in sorted(t["per_sequence"].items())
            )
            mean = "n/a" if t["bd_rate_mean"] is None else f"{t['bd_rate_mean']:+.1f}%"
            lines.append(f"| {t['metric']} | {t['codec']} | {mean} | {per} |")
        lines += [
            "",
            "BD-rate uses `bjontegaard` (pchip interpolation of log-rate); n/a: fewer than 4 points or no overlap.",
            "",
        ]

    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    lines += ["## RD curves", ""]
    for m in metrics:
        p = plot_rd(
            mean_curves(rows, m),
            m,
            plots / f"rd_{m}.png",
            title=f"{cfg.name}: {m} vs rate (mean over sequences)",
        )
        lines.append(f"![{m}]({p.relative_to(out)})")
    strips = out / "strips"
    strips.mkdir(exist_ok=True)
    gfvc_codecs = [c.name for c in cfg.codecs if c.kind == GFVC]
    anchors = [c.name for c in cfg.codecs if c.kind == ANCHOR]
    if gfvc_codecs and anchors:
        lines += [
            "",
            "## Side by side at similar bitrate",
            "",
            "original | GFVC (lowest rate point) | anchor point closest in kbps",
            "",
        ]
        show = [m for m in ("ms_ssim", "psnr_y", "dists", "lmd") if m in metrics][:2]

        def load(key: str) -> np.ndarray:
            return cv2.cvtColor(cv2.imread(str(out / "frames" / f"{key}.png")), cv2.COLOR_BGR2RGB)

        for seq in sorted({r["sequence"] for r in rows}):
            srows = [r for r in rows if r["sequence"] == seq]
            g = sorted((r for r in srows if r["codec"] == gfvc_codecs[0]), key=lambda r: r["kbps"])
            a = [r for r in srows if r["codec"] == anchors[0]]
            if not g or not a:
                continue
            gr = g[0]
            ar = min(a, key=lambda r: abs(np.log(r["kbps"]) - np.log(gr["kbps"])))
            p = comparison_strip(
                load(f"{seq}__original"),
                (
                    load(f"{seq}__{gr['codec']}__qp{gr['qp']}"),
                    gr["kbps"],
                    {m: gr.get(m) for m in show},
                ),
                (
                    f"{ar['codec']} QP {ar['qp']}",
                    load(f"{seq}__{ar['codec']}__qp{ar['qp']}"),
                    ar["kbps"],
                    {m: ar.get(m) for m in show},
                ),
                strips / f"{seq}.png",
                gfvc_name=f"{gr['codec']} QP {gr['qp']}",
            )
            lines.append(f"![{seq}]({p.relative_to(out)})")
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
