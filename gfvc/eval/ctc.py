"""``gfvc ctc``: test-condition runs, sequences x codecs x rate points, and their report.

A YAML config names the sequences, the codecs (GFVC models with a key-frame QP sweep, and
conventional anchors with a QP sweep) and the metrics. Each (sequence, codec, rate point) is a
*job* whose result is one JSON file under ``OUT/runs/``. A finished job is not redone as long
as the settings it depends on are unchanged (each result records a ``settings_id``), so an
interrupted run resumes where it stopped, and ``--shard i/n`` lets a cluster array job split
the work (shard i takes jobs i, i+n, i+2n, ... of the fixed job order). ``write_report``
gathers the results of the current config into CSV/JSONL, BD-rate and BD-quality tables, RD
plots and side-by-side strips, and writes ``OUT/report.md``.

Config keys (see configs/ctc_*.yaml):

``name``, ``sequences`` (paths, relative to the config file; ``$VARS`` expanded), ``frames``
(first N frames, null for all), ``size`` (coded square size), ``fps`` (the rate every kbps is
computed at, whatever the source frame rate), ``crop`` (face crop like ``gfvc encode``; false
for already aligned faces), ``raw_size`` (WxH of .rgb/.yuv sequences), ``metrics``,
``reference`` (the codec BD values are computed against; default: the first anchor),
``strip_frame`` (0..1, where in the sequence the strip frame is taken) and ``codecs``: a list
of ``{name, type: gfvc|anchor, qp: [...]}`` plus, for ``gfvc``, ``model``, ``checkpoint``,
``config``, ``qstep``, ``keyframe_codec``, ``keyframe_format``, ``coder``, ``gop``, ``device``
and, for ``anchor``, ``codec`` (x265, svtav1, vvc, lossless; default: the name) and
``preset``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from gfvc import DEFAULT_MODEL
from gfvc.control.rate import RATE_CONTROL_REVISION
from gfvc.errors import GfvcError, InputError

GFVC = "gfvc"
ANCHOR = "anchor"

#: BD values from curves that share less than this part of their range are marked unreliable.
LOW_OVERLAP = 0.5
#: Columns of equal_rate.csv (``equal_rate_table``).
EQUAL_RATE_FIELDS = ("metric", "codec", "kbps", "value", "reference_value", "delta", "better")
#: Bump when the meaning of a stored result changes (forces a rerun of old results).
RESULT_VERSION = 1

_TOP_KEYS = {
    "name", "description", "sequences", "codecs", "metrics", "frames", "size", "fps", "crop",
    "raw_size", "reference", "strip_frame",
}  # fmt: skip
_GFVC_KEYS = {
    "model", "checkpoint", "config", "qstep", "keyframe_codec", "keyframe_format", "coder",
    "gop", "device", "deadzone", "base_layer", "two_pass",
}  # fmt: skip
_ANCHOR_KEYS = {"codec", "preset"}
#: Metrics shown in strip captions, and used to find the anchor of "similar quality".
_CAPTION_METRICS = (("dists", "lpips", "ms_ssim", "ssim"), ("id_dist", "lmd", "psnr_y"))
_QUALITY_MATCH = ("dists", "lpips", "ms_ssim", "ssim", "psnr_y", "psnr_rgb")


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
    reference: str | None = None  # codec name BD values are computed against
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
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"config {p} is not valid YAML: {first}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read config {p}: {e}") from None
        if not isinstance(d, dict):
            raise InputError(f"config {p} must be a YAML mapping (name, sequences, codecs, ...)")
        try:
            return cls.from_dict(d, base=p.parent)
        except InputError as e:
            raise InputError(f"config {p}: {e}") from None

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path = Path(".")) -> CtcConfig:
        from gfvc.eval.metrics import CTC_DEFAULT_METRICS, check_metric_names

        unknown = sorted(set(d) - _TOP_KEYS)
        if unknown:
            raise InputError(
                f"unknown key {unknown[0]!r}; known keys: {', '.join(sorted(_TOP_KEYS))}"
            )
        for key in ("sequences", "codecs"):
            if key not in d:
                raise InputError(f"missing {key!r} (a list)")
            if not isinstance(d[key], list) or not d[key]:
                raise InputError(f"{key!r} must be a non-empty list")
        seqs = [_resolve(base, s, i) for i, s in enumerate(d["sequences"])]
        stems = [s.stem for s in seqs]
        dup = next((s for s in stems if stems.count(s) > 1), None)
        if dup:
            raise InputError(f"two sequences are named {dup!r}: results are keyed by file name")
        codecs = [_codec_spec(c, i) for i, c in enumerate(d["codecs"])]
        for c in codecs:  # weight and model-config files, like sequences, relative to the file
            for k in ("checkpoint", "config"):
                v = c.options.get(k)
                if isinstance(v, str) and (base / v).exists() and not Path(v).is_absolute():
                    c.options[k] = str((base / v).resolve())
        names = [c.name for c in codecs]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise InputError(f"codec name {dup!r} is used twice; codec names must be unique")
        ref = d.get("reference")
        if ref is not None and ref not in names:
            raise InputError(f"reference {ref!r} is not one of the codecs: {', '.join(names)}")
        metrics = d.get("metrics", list(CTC_DEFAULT_METRICS))
        if isinstance(metrics, str):
            metrics = [m.strip() for m in metrics.split(",")]
        if not isinstance(metrics, list) or not metrics:
            raise InputError("'metrics' must be a non-empty list of metric names")
        frames = d.get("frames", 250)
        if frames is not None and (not _is_int(frames) or frames < 2):
            raise InputError(f"'frames' must be an integer >= 2 or null, got {frames!r}")
        size = d.get("size", 256)
        if not _is_int(size) or not 64 <= size <= 1024 or size % 2:
            raise InputError(f"'size' must be an even integer in [64, 1024], got {size!r}")
        try:
            fps = Fraction(str(d.get("fps", 25)))
        except (ValueError, ZeroDivisionError):
            fps = Fraction(0)
        if fps <= 0:
            raise InputError(f"'fps' must be a positive number, got {d.get('fps')!r}")
        strip = d.get("strip_frame", 0.5)
        if not isinstance(strip, int | float) or not 0 <= strip <= 1:
            raise InputError(f"'strip_frame' must be a number in [0, 1], got {strip!r}")
        return cls(
            name=str(d.get("name", "ctc")),
            sequences=seqs,
            codecs=codecs,
            metrics=check_metric_names(str(m) for m in metrics),
            frames=frames,
            size=int(size),
            fps=fps,
            crop=bool(d.get("crop", True)),
            raw_size=_raw_size(d.get("raw_size")),
            reference=ref,
            strip_frame=float(strip),
        )

    @property
    def bd_reference(self) -> str | None:
        """The codec BD values are computed against: ``reference``, else the first anchor."""
        return self.reference or next((c.name for c in self.codecs if c.kind == ANCHOR), None)

    def settings_id(self, job: Job) -> str:
        """Hash of everything a job's result depends on (a changed config reruns the job)."""
        d = {
            "v": RESULT_VERSION,
            "frames": self.frames,
            "size": self.size,
            "fps": str(self.fps),
            "crop": self.crop,
            "raw_size": self.raw_size,
            "metrics": list(self.metrics),
            "strip_frame": self.strip_frame,
            "sequence": job.sequence.name,
            "codec": [job.codec.kind, sorted(job.codec.options.items())],
            "weights": _weights_identity(job.codec),
            "qp": job.qp,
        }
        if job.by_rate:  # a target rate's streams change with the rate controller
            d["rate_control"] = RATE_CONTROL_REVISION
        return hashlib.sha1(json.dumps(d, default=str).encode()).hexdigest()[:16]

    def crop_id(self) -> str:
        d = [self.frames, self.size, self.crop, self.raw_size]
        return hashlib.sha1(json.dumps(d).encode()).hexdigest()[:10]


def _weights_identity(codec: CodecSpec) -> str | None:
    """Digest of the weights file a gfvc codec decodes with (its checkpoint, or the model's
    packaged default), so retrained weights rerun the job instead of reusing stale rows."""
    if codec.kind != GFVC:
        return None
    from gfvc.models import model_class

    cls = model_class(str(codec.options.get("model", DEFAULT_MODEL)))
    path = codec.options.get("checkpoint")
    if path is None:
        path = cls.default_checkpoint()
    ident = _file_identity(Path(str(path)).expanduser() if path else None)
    if cls.fusion_ready:  # and the enhancement layer's fusion network it may decode with
        from gfvc.enhance import fusion_weights_path

        ident = f"{ident}+{_file_identity(fusion_weights_path())}"
    return ident


def _file_identity(p: Path | None) -> str | None:
    if p is None or not p.is_file():
        return None
    if p.stat().st_size > 64 << 20:  # big official checkpoints: size and time, not content
        return f"{p.stat().st_size}:{p.stat().st_mtime_ns}"
    return hashlib.sha1(p.read_bytes()).hexdigest()[:16]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _raw_size(raw: Any) -> tuple[int, int] | None:
    if raw is None:
        return None
    try:
        w, h = (int(v) for v in str(raw).lower().split("x"))
    except ValueError:
        raise InputError(f"'raw_size' must look like 256x256, got {raw!r}") from None
    return w, h


def _resolve(base: Path, s: Any, i: int) -> Path:
    if isinstance(s, dict):
        s = s.get("path")
    if not isinstance(s, str) or not s:
        raise InputError(f"sequence {i + 1} must be a path (or {{path: ...}}), got {s!r}")
    p = Path(os.path.expandvars(s)).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _codec_spec(c: Any, i: int) -> CodecSpec:
    from gfvc.eval.anchors import QP_RANGE, canonical_codec

    if not isinstance(c, dict):
        raise InputError(f"codec {i + 1} must be a mapping with name, type and qp")
    name = c.get("name")
    if not isinstance(name, str) or not name or "__" in name or "/" in name:
        raise InputError(f"codec {i + 1} needs a 'name' (text without '/' or '__')")
    kind = c.get("type", GFVC)
    if kind not in (GFVC, ANCHOR):
        raise InputError(f"codec {name!r}: type must be 'gfvc' or 'anchor', got {kind!r}")
    # rate points: key-frame QPs, or (gfvc) target rates in kbps for rate control
    point = "kbps" if kind == GFVC and "kbps" in c else "qp"
    if point == "kbps" and "qp" in c:
        raise InputError(f"codec {name!r}: give 'qp' or 'kbps' rate points, not both")
    qps = c.get(point)
    if _is_int(qps):
        qps = [qps]
    if not isinstance(qps, list) or not qps or not all(_is_int(q) for q in qps):
        raise InputError(f"codec {name!r}: '{point}' must be a list of integers, e.g. [22, 32, 42]")
    if len(set(qps)) != len(qps):
        raise InputError(f"codec {name!r}: '{point}' lists a value twice")
    options = {k: v for k, v in c.items() if k not in ("name", "type", "qp", "kbps")}
    allowed = _GFVC_KEYS if kind == GFVC else _ANCHOR_KEYS
    bad = sorted(set(options) - allowed)
    if bad:
        raise InputError(
            f"codec {name!r}: unknown option {bad[0]!r} for type {kind}; "
            f"known: {', '.join(sorted(allowed))}"
        )
    for flag in ("base_layer", "two_pass"):
        if not isinstance(options.get(flag, True), bool):
            raise InputError(f"codec {name!r}: '{flag}' must be true or false")
    if kind == ANCHOR:
        codec = canonical_codec(str(options.get("codec", name)))
        options["codec"] = codec
        lo, hi = QP_RANGE[codec]
        for q in qps:
            if not lo <= q <= hi:
                raise InputError(f"codec {name!r}: {codec} QP must be in [{lo}, {hi}], got {q}")
    elif point == "kbps":
        from gfvc.codec import check_kbps

        for q in qps:
            check_kbps(q)
        options["rate_points"] = "kbps"
    else:
        from gfvc.keyframe import keyframe_codec
        from gfvc.models import model_class

        cls = model_class(str(options.get("model", DEFAULT_MODEL)))
        for q in qps:
            keyframe_codec(
                str(options.get("keyframe_codec") or cls.default_keyframe_codec),
                qp=q,
                fmt=options.get("keyframe_format", "yuv420"),
            )
    return CodecSpec(name=name, kind=kind, qps=tuple(int(q) for q in qps), options=options)


@dataclass(frozen=True)
class Job:
    sequence: Path
    codec: CodecSpec
    qp: int

    @property
    def by_rate(self) -> bool:
        """The rate point is a target rate in kbps (rate control), not a QP."""
        return self.codec.options.get("rate_points") == "kbps"

    @property
    def key(self) -> str:
        point = "kbps" if self.by_rate else "qp"
        return f"{self.sequence.stem}__{self.codec.name}__{point}{self.qp}"


def jobs(cfg: CtcConfig, shard: tuple[int, int] = (0, 1)) -> list[Job]:
    """The jobs of shard ``i`` of ``n``: every n-th job of the fixed order, starting at i."""
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
    if not 0 <= i < n:
        raise InputError(f"--shard must be i/n with 0 <= i < n, got {text}")
    return i, n


def result_path(out: Path, job: Job) -> Path:
    return out / "runs" / f"{job.key}.json"


def is_finished(cfg: CtcConfig, job: Job, out: Path) -> bool:
    """True when ``job`` has a stored result made with the current settings."""
    p = result_path(out, job)
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("settings_id") == cfg.settings_id(job)
    except (OSError, ValueError):
        return False  # unreadable: redo it


def check_sequences(seqs: Iterable[Path]) -> None:
    for s in seqs:
        if not s.is_file():
            hint = ""
            if "$" in str(s):
                var = str(s).split("$", 1)[1].split("/", 1)[0].strip("{}")
                hint = f" (set the environment variable {var})"
            raise InputError(f"sequence {s} does not exist{hint}")


# ----------------------------------------------------------------------------- one job


def reference_frames(cfg: CtcConfig, seq: Path, cache: Path) -> np.ndarray:
    """The cropped original every codec of ``seq`` is compared with (cached as .npy)."""
    from gfvc.codec import EncodeSettings, FramePreparer

    f = cache / f"{seq.stem}-{cfg.crop_id()}.npy"
    if f.exists():
        try:
            return np.load(f)
        except (OSError, ValueError):
            pass  # a broken cache file: crop again
    s = EncodeSettings(frames=cfg.frames, size=cfg.size, crop=cfg.crop, raw_size=cfg.raw_size)
    prep = FramePreparer(seq, s)
    try:
        frames = np.stack(list(prep))
    finally:
        prep.close()
    if len(frames) < 2:
        raise InputError(f"{seq} has only {len(frames)} frame; a run needs at least 2")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f".{f.stem}.{os.getpid()}.part.npy")
    np.save(tmp, frames)
    os.replace(tmp, f)
    return frames


def run_job(cfg: CtcConfig, job: Job, out: Path) -> dict[str, Any]:
    """Code, decode and evaluate one rate point; returns (and stores) its result row."""
    from gfvc.eval.metrics import evaluate_sequences

    ref = reference_frames(cfg, job.sequence, out / "cache")
    fps = cfg.fps
    split: dict[str, int] = {}
    t0 = time.perf_counter()
    o = job.codec.options
    if job.codec.kind == GFVC:
        from gfvc.codec import (
            EncodeSettings,
            build_model,
            decode_frames,
            encode_frames,
            stream_report,
        )

        s = EncodeSettings(
            model=o.get("model", DEFAULT_MODEL),
            checkpoint=o.get("checkpoint"),
            config=o.get("config"),
            qstep=o.get("qstep"),
            qp=None if job.by_rate else job.qp,
            kbps=job.qp if job.by_rate else None,
            base_layer=bool(o.get("base_layer", True)),
            two_pass=bool(o.get("two_pass", True)),
            keyframe_codec=o.get("keyframe_codec"),
            keyframe_format=o.get("keyframe_format", "yuv420"),
            coder=o.get("coder", "range"),
            size=cfg.size,
            gop=o.get("gop"),
            deadzone=o.get("deadzone"),
            device=o.get("device", "cpu"),
        )
        model = build_model(
            s.model, checkpoint=s.checkpoint, config=s.config, device=s.device, size=s.size
        )
        data = encode_frames(list(ref), s, fps, model=model)
        decoded = list(decode_frames(data, model=model))
        rep = stream_report(data)
        bits = rep.total_bits
        split = {
            "keyframe_bits": rep.keyframe_bits,
            "feature_bits": rep.feature_bits,
            "overhead_bits": rep.overhead_bits,
        }
    else:
        from gfvc.eval.anchors import anchor_code

        res = anchor_code(list(ref), o["codec"], job.qp, float(fps), preset=o.get("preset"))
        bits, decoded = res.bits, res.decoded_frames
    code_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = evaluate_sequences(ref, decoded, cfg.metrics, fps=float(fps))
    eval_s = time.perf_counter() - t0
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
        "code_s": round(code_s, 3),
        "eval_s": round(eval_s, 3),
        "settings_id": cfg.settings_id(job),
        "unavailable": {m: r for m, r in ev.get("unavailable", {}).items() if m in cfg.metrics},
        "skipped": ev.get("skipped", {}),
        "frames_metrics": {m: v for m, v in ev.get("frames", {}).items() if m in cfg.metrics},
    }
    strip_dir = out / "frames"
    k = int(round(cfg.strip_frame * (len(ref) - 1)))
    _write_png(strip_dir / f"{job.key}.png", decoded[k])
    _write_png(strip_dir / f"{job.sequence.stem}__original.png", ref[k])  # same for every job
    _write_json(result_path(out, job), row)
    return row


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.part.png")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise GfvcError(f"cannot write {path}")
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    """Write atomically (shards finishing together must not interleave their files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    _write_text(path, json.dumps(_clean(obj), default=_jsonable))


def _clean(o: Any) -> Any:
    """NaN/inf become null so the files are strict JSON."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    return o


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return _clean(o.item())
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    raise TypeError(type(o).__name__)


def _init_worker() -> None:
    import torch

    # Several workers share the cores: one thread each avoids oversubscription.
    torch.set_num_threads(1)


def _worker(args: tuple[CtcConfig, Job, Path]) -> tuple[str, dict[str, Any] | None, str | None]:
    cfg, job, out = args
    try:
        return job.key, run_job(cfg, job, out), None
    except GfvcError as e:
        return job.key, None, str(e)
    except MemoryError:
        return job.key, None, "out of memory"
    except Exception as e:  # one broken run must not stop the others
        return job.key, None, f"internal error ({type(e).__name__}: {e})"


ResultCallback = Callable[[str, "dict[str, Any] | None", "str | None"], None]


def run(
    cfg: CtcConfig,
    out: Path,
    *,
    workers: int = 1,
    shard: tuple[int, int] = (0, 1),
    progress: Callable[[int], None] | None = None,
    on_result: ResultCallback | None = None,
) -> tuple[int, int, list[str]]:
    """Run every unfinished job of this shard. Returns (done now, skipped, errors).

    ``progress(1)`` is called after each job, ``on_result(key, row, error)`` too. Jobs run
    in ``workers`` processes (spawned, one torch thread each) when ``workers > 1``.
    """
    mine = jobs(cfg, shard)
    todo = [j for j in mine if not is_finished(cfg, j, out)]
    skipped = len(mine) - len(todo)
    errors: list[str] = []
    if not todo:
        return 0, skipped, errors
    check_sequences(sorted({j.sequence for j in todo}))
    out.mkdir(parents=True, exist_ok=True)
    # Crop each sequence once, before the workers start, so they share the cache.
    bad_seqs: dict[Path, str] = {}
    for seq in sorted({j.sequence for j in todo}):
        try:
            reference_frames(cfg, seq, out / "cache")
        except GfvcError as e:
            bad_seqs[seq] = str(e)

    def finish(key: str, row: dict[str, Any] | None, err: str | None) -> None:
        if err:
            errors.append(f"{key}: {err}")
        if on_result:
            on_result(key, row, err)
        if progress:
            progress(1)

    runnable = []
    for j in todo:
        if j.sequence in bad_seqs:
            finish(j.key, None, bad_seqs[j.sequence])
        else:
            runnable.append(j)
    workers = max(1, min(workers, len(runnable)))
    if workers == 1:
        for j in runnable:
            finish(*_worker((cfg, j, out)))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        # spawn, not fork: the parent holds mediapipe/torch threads that fork would copy.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
            futures = {pool.submit(_worker, (cfg, j, out)): j for j in runnable}
            try:
                for fut in as_completed(futures):
                    try:
                        finish(*fut.result())
                    except BrokenProcessPool:
                        finish(
                            futures[fut].key, None, "worker process died (crash or out of memory)"
                        )
            except BaseException:  # Ctrl-C: drop the queued jobs instead of waiting for them
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    return len(todo) - len(errors), skipped, errors


def progress_of(cfg: CtcConfig, out: Path) -> tuple[int, int]:
    """(finished jobs, all jobs) of the whole config, over every shard."""
    every = jobs(cfg)
    return sum(is_finished(cfg, j, out) for j in every), len(every)


# ----------------------------------------------------------------------------- report


def load_rows(out: Path, cfg: CtcConfig | None = None) -> list[dict[str, Any]]:
    """Stored results; with ``cfg``, only those of its jobs made with its current settings."""
    runs = out / "runs"
    if not runs.is_dir():
        raise InputError(f"no results in {out}: run `gfvc ctc CONFIG -o {out}` first")
    if cfg is None:
        return [json.loads(p.read_text()) for p in sorted(runs.glob("*.json"))]
    rows = []
    for j in jobs(cfg):
        p = result_path(out, j)
        if p.is_file():
            try:
                r = json.loads(p.read_text())
            except ValueError:
                continue
            if r.get("settings_id") == cfg.settings_id(j):
                rows.append(r)
    return rows


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


class _Deltas(NamedTuple):
    """One pair of curves' BD-rate and BD-quality (None: undefined, ``why`` says why) and
    their overlaps (quality range, log-rate range)."""

    rate: float | None = None
    quality: float | None = None
    overlap: tuple[float | None, float | None] = (None, None)
    why: str = ""


def _deltas(
    anchor: tuple[list[float], list[float]], test: tuple[list[float], list[float]], metric: str
) -> _Deltas:
    from gfvc.eval.bd import bd_quality, bd_rate, overlap_fraction

    (ar, av), (tr, tv) = anchor, test
    values: list[float | None] = []
    why = ""
    for fn, what in ((bd_rate, "BD-rate"), (bd_quality, "BD")):
        try:
            values.append(fn(ar, av, tr, tv, metric=metric))
        except GfvcError as e:
            values.append(None)
            why = why or f"{what}: {e}"
    overlap = (overlap_fraction(av, tv), overlap_fraction(np.log10(ar), np.log10(tr)))
    return _Deltas(values[0], values[1], overlap, why)


def bd_table(
    rows: list[dict[str, Any]], metrics: tuple[str, ...], reference: str
) -> list[dict[str, Any]]:
    """BD-rate (%) and BD-quality of every codec against ``reference``, per sequence and mean.

    Each entry: metric, codec, reference; ``per_sequence`` (BD-rate) and
    ``bd_quality_per_sequence`` ({sequence: value or None}); ``bd_rate_mean`` and
    ``bd_quality_mean``, the mean over sequences, None unless defined for every sequence
    (``sequences`` and ``bd_quality_sequences`` say for how many of how many it is);
    ``overlap`` and ``bd_quality_overlap`` ({sequence: share of the two curves' union range
    that both cover, in quality resp. log-rate}); ``notes`` ({sequence: why a value is
    undefined: too few points, curve not monotonic, no overlap}).

    ``bd_rate_mean_curve`` and ``bd_quality_mean_curve``: the deltas between the two codecs'
    mean curves (rate and metric averaged over sequences at each rate point, as plotted).
    Face metrics on one clip are noisy enough that a curve, even x265's, often falls back
    between two points, which leaves its per-sequence BD-rate undefined; the averaged curve
    is defined more often. A secondary figure, reported beside the per-sequence ones
    (``notes`` key "mean curve" when it is undefined too).
    """
    table = []
    for metric in metrics:
        per_seq = curves(rows, metric)
        means = mean_curves(rows, metric)
        codecs = sorted({c for s in per_seq.values() for c in s if c != reference})
        for codec in codecs:
            rate: dict[str, float | None] = {}
            qual: dict[str, float | None] = {}
            ov_r: dict[str, float] = {}
            ov_q: dict[str, float] = {}
            notes: dict[str, str] = {}
            for seq, cs in sorted(per_seq.items()):
                if codec not in cs or reference not in cs:
                    continue
                d = _deltas(cs[reference], cs[codec], metric)
                rate[seq], qual[seq], ov_r[seq], ov_q[seq] = d.rate, d.quality, *d.overlap
                if d.why:
                    notes[seq] = d.why
            ok_r = [v for v in rate.values() if v is not None]
            ok_q = [v for v in qual.values() if v is not None]
            on_mean = _Deltas()
            if codec in means and reference in means:
                on_mean = _deltas(means[reference], means[codec], metric)
                if on_mean.why:
                    notes["mean curve"] = on_mean.why
            table.append(
                {
                    "metric": metric,
                    "codec": codec,
                    "reference": reference,
                    "bd_rate_mean": float(np.mean(ok_r)) if ok_r and len(ok_r) == len(rate) else None,
                    "bd_quality_mean": float(np.mean(ok_q)) if ok_q and len(ok_q) == len(qual) else None,
                    "sequences": f"{len(ok_r)}/{len(rate)}",
                    "bd_quality_sequences": f"{len(ok_q)}/{len(qual)}",
                    "bd_rate_mean_curve": on_mean.rate,
                    "bd_quality_mean_curve": on_mean.quality,
                    "mean_curve_overlap": list(on_mean.overlap),
                    "per_sequence": rate,
                    "bd_quality_per_sequence": qual,
                    "overlap": ov_r,
                    "bd_quality_overlap": ov_q,
                    "notes": notes,
                }
            )  # fmt: skip
    return table


def value_at_rate(curve: tuple[list[float], list[float]], kbps: float) -> float | None:
    """The curve's value at ``kbps``, linear in log-rate between the two points around it
    (as BD figures plot rate); None outside the curve's rate range: no extrapolation."""
    rates, vals = np.asarray(curve[0], float), np.asarray(curve[1], float)
    order = np.argsort(rates)
    rates, vals = rates[order], vals[order]
    if len(rates) == 0 or not rates[0] <= kbps <= rates[-1]:
        return None
    return float(np.interp(np.log(kbps), np.log(rates), vals))


def setbacks(curve: tuple[list[float], list[float]], metric: str) -> list[tuple[float, ...]]:
    """Each step up in rate where the metric gets worse: (rate, next rate, value, next
    value). Empty: quality rises (or holds) with every step of rate."""
    from gfvc.eval.bd import lower_is_better

    sign = -1.0 if lower_is_better(metric) else 1.0
    pts = sorted(zip(curve[0], curve[1], strict=True))
    return [
        (r0, r1, v0, v1)
        for (r0, v0), (r1, v1) in zip(pts, pts[1:], strict=False)
        if sign * (v1 - v0) < 0
    ]


def equal_rate_table(
    rows: list[dict[str, Any]], metrics: tuple[str, ...], reference: str
) -> list[dict[str, Any]]:
    """Each codec's mean-curve points against ``reference`` at the same rate.

    One entry per (metric, codec, rate point): ``kbps``, ``value``, ``reference_value`` (the
    reference's mean curve at that rate, ``value_at_rate``; None outside its range),
    ``delta`` (value - reference value) and ``better`` (True, False, or None when there is
    nothing to compare). Beside BD figures, which average over a whole overlap, this answers
    "at 8 kbps, which codec gives the better face?" point by point."""
    from gfvc.eval.bd import lower_is_better

    table = []
    for metric in metrics:
        means = mean_curves(rows, metric)
        if reference not in means:
            continue
        for codec, (rates, vals) in means.items():
            if codec == reference:
                continue
            for kbps, value in sorted(zip(rates, vals, strict=True)):
                ref = value_at_rate(means[reference], kbps)
                delta = None if ref is None else value - ref
                better = None
                if delta is not None and delta != 0:
                    better = (delta < 0) == lower_is_better(metric)
                table.append(
                    {"metric": metric, "codec": codec, "kbps": kbps, "value": value,
                     "reference_value": ref, "delta": delta, "better": better}
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


def _fmt(v: float | None, spec: str = ".4g") -> str:
    return "n/a" if v is None else format(v, spec)


def write_report(cfg: CtcConfig, out: Path) -> Path:
    """CSV, JSONL, BD tables, RD plots, strips and report.md from the finished jobs of ``cfg``."""
    from gfvc.eval.metrics import HIGHER_IS_BETTER
    from gfvc.eval.plots import plot_rd

    rows = load_rows(out, cfg)
    if not rows:
        raise InputError(
            f"no finished runs of this config in {out / 'runs'}: run `gfvc ctc CONFIG -o {out}`"
        )
    finished, total = progress_of(cfg, out)
    flat = [
        {k: v for k, v in r.items() if k not in ("frames_metrics", "unavailable", "skipped")}
        for r in rows
    ]
    cols = list(dict.fromkeys(k for r in flat for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(flat)
    _write_text(out / "results.csv", buf.getvalue())
    _write_text(
        out / "results.jsonl",
        "".join(json.dumps(_clean(r), default=_jsonable) + "\n" for r in rows),
    )

    seqs = sorted({r["sequence"] for r in rows})
    lines = [f"# {cfg.name}: test-condition report", ""]
    lines += [
        f"{len(seqs)} sequences ({', '.join(seqs)}), {len({r['codec'] for r in rows})} codecs, "
        f"{finished} of {total} runs finished; {cfg.size}x{cfg.size}, first "
        f"{cfg.frames if cfg.frames else 'all'} frames, rates at {float(cfg.fps):g} fps. "
        "Rates count every bit (every key frame, features, headers and framing; anchors: the "
        "whole elementary stream).",
        "",
    ]
    unavailable: dict[str, str] = {}
    for r in rows:
        unavailable.update(r.get("unavailable") or {})
    metrics = [m for m in cfg.metrics if any(r.get(m) is not None for r in rows)]
    for m in cfg.metrics:
        if m not in metrics:
            lines.append(f"- `{m}` unavailable: {unavailable.get(m, 'no value in any run')}")
    skipped: dict[str, list[int]] = {}
    for r in rows:
        for m, n in (r.get("skipped") or {}).items():
            skipped.setdefault(m, []).append(n)
    for m, ns in skipped.items():
        lines.append(
            f"- `{m}`: {sum(ns)} frame pairs in {len(ns)} runs left out of the means (no face "
            "found; see docs/metrics.md)"
        )
    if len(metrics) < len(cfg.metrics) or skipped:
        lines.append("")

    lines += ["## Results (mean over sequences)", ""]
    arrows = [f"{m} {'↑' if HIGHER_IS_BETTER.get(m, True) else '↓'}" for m in metrics]
    lines.append(
        "| codec | qp | kbps | key / feature / overhead kbps | " + " | ".join(arrows) + " |"
    )
    lines.append("|---|---|---|---|" + "---|" * len(metrics))
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["codec"], r["qp"]), []).append(r)
    order = {c.name: i for i, c in enumerate(cfg.codecs)}
    for (codec, qp), rs in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        vals = [_mean([x.get(m) for x in rs]) for m in metrics]
        split = "–"
        if all("keyframe_bits" in x for x in rs):
            kb = [
                _mean([x[k] / x["frames"] * x["fps"] / 1000 for x in rs])
                for k in ("keyframe_bits", "feature_bits", "overhead_bits")
            ]
            split = " / ".join(f"{v:.2f}" for v in kb if v is not None)
        lines.append(
            f"| {codec} | {qp} | {np.mean([x['kbps'] for x in rs]):.2f} | {split} | "
            + " | ".join(_fmt(v) for v in vals)
            + " |"
        )

    ref = cfg.bd_reference
    if ref:
        table = bd_table(rows, tuple(metrics), ref)
        _write_text(out / "bd_rate.json", json.dumps(_clean(table), indent=2))
        buf = io.StringIO()
        w2 = csv.writer(buf, lineterminator="\n")
        w2.writerow(
            ["metric", "codec", "reference", "bd_rate_mean_percent", "bd_quality_mean",
             "sequences", *[f"bd_rate_{s}" for s in seqs], *[f"bd_quality_{s}" for s in seqs],
             "bd_rate_mean_curve_percent", "bd_quality_mean_curve"]
        )  # fmt: skip
        for t in table:
            w2.writerow(
                [t["metric"], t["codec"], ref, t["bd_rate_mean"], t["bd_quality_mean"],
                 t["sequences"], *[t["per_sequence"].get(s) for s in seqs],
                 *[t["bd_quality_per_sequence"].get(s) for s in seqs],
                 t["bd_rate_mean_curve"], t["bd_quality_mean_curve"]]
            )  # fmt: skip
        _write_text(out / "bd_rate.csv", buf.getvalue())
        lines += [
            "",
            f"## BD-rate and BD-quality against {ref}",
            "",
            "BD-rate: average rate difference at equal quality (negative: fewer bits than "
            f"{ref}). BD-quality: average metric difference at equal rate (test - {ref}; better "
            "is positive for ↑ metrics, negative for ↓ metrics). The mean over sequences, then "
            "each sequence's value; last, the deltas between the mean curves (plotted below), "
            "a secondary figure for metrics too noisy per clip for a monotonic curve.",
            "",
            "| metric | codec | BD-rate | BD-quality | per sequence: BD-rate / BD-quality "
            "| mean curve: BD-rate / BD-quality |",
            "|---|---|---|---|---|---|",
        ]
        notes: list[str] = []
        low = False

        def cell(v: float | None, ov: float | None, spec: str, unit: str = "") -> str:
            nonlocal low
            if v is None:
                return "n/a"
            mark = ""
            if ov is not None and ov < LOW_OVERLAP:
                mark, low = "\\*", True
            return f"{v:{spec}}{unit}{mark}"

        for t in table:
            per = "; ".join(
                f"{s}: {cell(v, t['overlap'].get(s), '+.1f', '%')} / "
                + cell(t["bd_quality_per_sequence"].get(s), t["bd_quality_overlap"].get(s), "+.4g")
                for s, v in sorted(t["per_sequence"].items())
            )
            worst_r = min(t["overlap"].values(), default=None)
            worst_q = min(t["bd_quality_overlap"].values(), default=None)
            mean = cell(t["bd_rate_mean"], worst_r, "+.1f", "%")
            q = cell(t["bd_quality_mean"], worst_q, "+.4g")
            ov_mean = t["mean_curve_overlap"]
            on_mean = (
                f"{cell(t['bd_rate_mean_curve'], ov_mean[0], '+.1f', '%')} / "
                f"{cell(t['bd_quality_mean_curve'], ov_mean[1], '+.4g')}"
            )
            lines.append(f"| {t['metric']} | {t['codec']} | {mean} | {q} | {per} | {on_mean} |")
            for s, why in sorted(t["notes"].items()):
                notes.append(f"- {t['metric']}, {t['codec']}, {s}: {why}")
        lines += [
            "",
            "Bjontegaard deltas with the `bjontegaard` package, PCHIP interpolation over the "
            "overlap of the two curves (at least 3 points per curve; see docs/metrics.md). A mean "
            "is given only when the value is defined for every sequence.",
        ]
        if low:
            lines += [
                "",
                f"\\* the two curves share less than {LOW_OVERLAP:.0%} of their range (quality "
                "range for BD-rate, log-rate range for BD-quality): the value rests on a small "
                "overlap and is unreliable.",
            ]
        if notes:
            lines += ["", "Undefined values:", "", *notes]
        lines.append("")

    lines += _rate_sections(cfg, out, rows, metrics)
    plots = out / "plots"
    lines += ["## RD curves (mean over sequences at each QP)", ""]
    for m in metrics:
        p = plot_rd(
            mean_curves(rows, m),
            m,
            plots / f"rd_{m}.png",
            title=f"{cfg.name}: {m} vs rate (mean over sequences)",
        )
        lines.append(f"![{m}]({p.relative_to(out).as_posix()})")
    lines += _strips(cfg, out, rows, metrics)
    report = out / "report.md"
    _write_text(report, "\n".join(lines) + "\n")
    return report


def _rate_sections(
    cfg: CtcConfig, out: Path, rows: list[dict[str, Any]], metrics: list[str]
) -> list[str]:
    """Report sections: where each mean curve falls back as rate rises, and each codec's
    points against the reference at equal rate (also written to equal_rate.csv)."""
    lines = [
        "## Quality against rate (mean over sequences)",
        "",
        "Each step up in rate of each codec's mean curve where the metric gets worse.",
        "",
        "| metric | codec | better at every step | where it falls back |",
        "|---|---|---|---|",
    ]
    for m in metrics:
        for codec, curve in mean_curves(rows, m).items():
            back = setbacks(curve, m)
            where = "; ".join(
                f"{a:.2f} -> {b:.2f} kbps: {_fmt(u)} -> {_fmt(v)}" for a, b, u, v in back
            )
            lines.append(f"| {m} | {codec} | {'no' if back else 'yes'} | {where or '–'} |")
    lines.append("")
    ref = cfg.bd_reference
    if not ref:
        return lines
    table = equal_rate_table(rows, tuple(metrics), ref)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(EQUAL_RATE_FIELDS), lineterminator="\n")
    w.writeheader()
    w.writerows(table)
    _write_text(out / "equal_rate.csv", buf.getvalue())
    cells: dict[tuple[str, float], dict[str, str]] = {}
    for t in table:
        mark = {True: " ✓", False: " ✗", None: ""}[t["better"]]
        cells.setdefault((t["codec"], t["kbps"]), {})[t["metric"]] = (
            f"{_fmt(t['value'])} / {_fmt(t['reference_value'])}{mark}"
        )
    lines += [
        f"## Against {ref} at equal rate (mean curves)",
        "",
        f"Each rate point: this codec / {ref}'s mean curve at the same rate (linear in "
        f"log-rate between its two points around it; n/a outside its range). ✓: better than "
        f"{ref} there, ✗: worse. Also in equal_rate.csv.",
        "",
        "| codec | kbps | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for (codec, kbps), c in cells.items():
        lines.append(
            f"| {codec} | {kbps:.2f} | " + " | ".join(c.get(m, "n/a") for m in metrics) + " |"
        )
    lines.append("")
    return lines


def _mean(values: list[Any]) -> float | None:
    good = [v for v in values if v is not None]
    return float(np.mean(good)) if good else None


def _strips(cfg: CtcConfig, out: Path, rows: list[dict[str, Any]], metrics: list[str]) -> list[str]:
    """original | GFVC | anchor at similar rate | anchor at similar quality, per sequence."""
    import cv2

    from gfvc.eval.plots import panel_label, save_strip

    ref = cfg.bd_reference
    gfvc_codecs = [c.name for c in cfg.codecs if c.kind == GFVC]
    anchor = ref if ref and ref not in gfvc_codecs else None
    anchor = anchor or next((c.name for c in cfg.codecs if c.kind == ANCHOR), None)
    if not gfvc_codecs or not anchor:
        return []
    show = [
        next(m for m in group if m in metrics)
        for group in _CAPTION_METRICS
        if any(m in metrics for m in group)
    ]
    match = next((m for m in _QUALITY_MATCH if m in metrics), None)

    def load(key: str) -> np.ndarray | None:
        img = cv2.imread(str(out / "frames" / f"{key}.png"))
        return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def panel(r: dict[str, Any], what: str) -> tuple[str, np.ndarray] | None:
        img = load(f"{r['sequence']}__{r['codec']}__qp{r['qp']}")
        if img is None:
            return None
        label = panel_label(
            f"{r['codec']} QP {r['qp']}{what}", r["kbps"], {m: r.get(m) for m in show}
        )
        return label, img

    lines = [
        "",
        "## Side by side",
        "",
        f"The frame at {cfg.strip_frame:.0%} of each sequence: original | GFVC at its lowest "
        f"rate | {anchor} at the closest rate"
        + (f" | {anchor} at the closest {match} (when another point)" if match else "")
        + ". Captions give the sequence means.",
        "",
    ]
    for codec in gfvc_codecs:
        for seq in sorted({r["sequence"] for r in rows}):
            srows = [r for r in rows if r["sequence"] == seq]
            g = sorted((r for r in srows if r["codec"] == codec), key=lambda r: r["kbps"])
            a = [r for r in srows if r["codec"] == anchor]
            orig = load(f"{seq}__original")
            if not g or not a or orig is None:
                continue
            gr = g[0]
            by_rate = min(a, key=lambda r: abs(math.log(r["kbps"]) - math.log(gr["kbps"])))
            panels = [("original", orig), panel(gr, ""), panel(by_rate, ", similar rate")]
            if match and gr.get(match) is not None:
                have = [r for r in a if r.get(match) is not None]
                if have:
                    by_q = min(have, key=lambda r: abs(r[match] - gr[match]))
                    if by_q is not by_rate:
                        panels.append(panel(by_q, f", similar {match}"))
            if any(p is None for p in panels):
                continue
            p = save_strip(panels, out / "strips" / f"{seq}__{codec}.png")  # type: ignore[arg-type]
            lines.append(f"![{seq} {codec}]({p.relative_to(out).as_posix()})")
    return lines
