"""The ``gfvc`` command line. Commands are thin: they parse options and call library code.

One error boundary (``_run``) turns every ``GfvcError`` into a one-line message and exit
code 1, so users never see a traceback for their own mistakes.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from gfvc import DEFAULT_MODEL, __version__
from gfvc.errors import GfvcError, InputError


class _OneLineErrors(TyperGroup):
    """Option-parsing mistakes (``--qp abc``, ``--workers 0``) end like every other user
    error: one ``error:`` line naming what is allowed, and exit code 1 (no usage box)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kw: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kw)
        try:
            rv = super().main(*args, standalone_mode=False, **kw)
        except typer.TyperException as e:
            ctx = getattr(e, "ctx", None)
            if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
                typer.echo(ctx.get_help())
                sys.exit(0)
            msg = " ".join(e.format_message().split()).rstrip(".")
            where = f"; see '{ctx.command_path} --help'" if ctx is not None else ""
            typer.echo(f"error: {msg}{where}", err=True)
            sys.exit(1)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    name="gfvc",
    help="Generative Face Video Coding: encode a talking-face video into a few kbps and back.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
AudioFrom = Annotated[
    Path | None,
    typer.Option(help="Copy this file's audio into the output video (mp4/mkv/mov), for viewing."),
]
Device = Annotated[str, typer.Option(help="Torch device for learned models: cpu or cuda.")]
KeyQp = Annotated[
    int | None,
    typer.Option(help="Key-frame QP (default: the key-frame codec's: x265 32, svtav1 40)."),
]
Checkpoint = Annotated[
    Path | None, typer.Option(help="Model weights (official .pth.tar or gfvc checkpoint).")
]
Config = Annotated[
    Path | None, typer.Option(help="Model configuration YAML (official <M>-256.yaml schema).")
]


def _fail(msg: str, code: int = 1) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _run(fn: Callable[[], Any]) -> Any:
    """Run a command body; user-facing errors become one line and a non-zero exit."""
    try:
        return fn()
    except GfvcError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except MemoryError:
        _fail("out of memory: try --frames or a smaller --size")
    except Exception as e:  # a bug, not a user mistake: keep it short unless asked
        if os.environ.get("GFVC_DEBUG"):
            raise
        _fail(f"internal error ({type(e).__name__}: {e}); rerun with GFVC_DEBUG=1 and report it", 2)


@contextmanager
def _progress(total: int | None, quiet: bool, desc: str, unit: str = "frame"):
    from tqdm import tqdm

    # Only on a terminal: logs and pipes get the one-line result, not bar redraws.
    show = not quiet and sys.stderr.isatty()
    bar = tqdm(total=total, desc=desc, unit=unit, disable=not show, leave=False, file=sys.stderr)
    try:
        yield bar.update
    finally:
        bar.close()


def _parse_size(size: str) -> tuple[int, tuple[int, int] | None]:
    """``256`` is the coded face size; ``WxH`` gives the size of raw .rgb/.yuv input."""
    s = size.lower().strip()
    try:
        if "x" in s:
            w, h = (int(v) for v in s.split("x", 1))
            return 256, (w, h)
        return int(s), None
    except ValueError:
        raise InputError(
            f"--size must be N (coded size, e.g. 256) or WxH (raw input size), got {size!r}"
        ) from None


def _version(value: bool) -> None:
    if value:
        import av
        import constriction  # noqa: F401
        import torch

        typer.echo(
            f"gfvc {__version__} (torch {torch.__version__}, av {av.__version__}, python {sys.version.split()[0]})"
        )
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print versions and exit."
        ),
    ] = False,
) -> None:
    """Generative Face Video Coding toolkit."""


@app.command()
def encode(
    input: Annotated[
        Path, typer.Argument(help="Input video (mp4, mov, mkv, webm, y4m, .rgb, .yuv).")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .gfv bitstream.")],
    model: Annotated[str, typer.Option(help="Motion model (see `gfvc models`).")] = DEFAULT_MODEL,
    checkpoint: Checkpoint = None,
    config: Config = None,
    qp: KeyQp = None,
    qstep: Annotated[
        float | None, typer.Option(help="Feature quantization step (model default if unset).")
    ] = None,
    frames: Annotated[int | None, typer.Option(help="Code only the first N frames.")] = None,
    face: Annotated[
        int,
        typer.Option(
            help="Which face to follow when several are in view: 0 the largest at the start, 1 the next ..."
        ),
    ] = 0,
    size: Annotated[str, typer.Option(help="Coded size N (square), or WxH of raw input.")] = "256",
    no_crop: Annotated[
        bool, typer.Option("--no-crop", help="Input is already an aligned face: no face crop.")
    ] = False,
    keyframe_codec: Annotated[
        str | None,
        typer.Option(
            help="Key-frame codec: x265, svtav1, vvc, lossless (default: the model's; svtav1 for landmark, x265 for the others)."
        ),
    ] = None,
    keyframe_format: Annotated[
        str, typer.Option(help="Key-frame colour format: yuv420 or rgb444.")
    ] = "yuv420",
    coder: Annotated[
        str, typer.Option(help="Feature entropy coder: range or expgolomb.")
    ] = "range",
    gop: Annotated[int | None, typer.Option(help="Send a new key frame every N frames.")] = None,
    deadzone: Annotated[
        float | None,
        typer.Option(
            help="Encoder dead zone in quantization steps: a value moves only once it has changed by more (0.5 = plain rounding; default: the model's, 0.7 for landmark)."
        ),
    ] = None,
    fps: Annotated[
        str | None, typer.Option(help="Frame rate override (e.g. 25 or 30000/1001).")
    ] = None,
    kbps: Annotated[
        float | None,
        typer.Option(
            help="Target rate in kbps: key-frame QP, refresh period and feature precision follow it (instead of --qp)."
        ),
    ] = None,
    no_watch: Annotated[
        bool,
        typer.Option(
            "--no-watch",
            help="Never add key frames on cuts, lost faces, lighting or expression changes.",
        ),
    ] = False,
    base_size: Annotated[
        int | None,
        typer.Option(
            help="Enhancement layer at a fixed QP: base picture side, 64 or 128 (with --base-qp; --kbps chooses it itself)."
        ),
    ] = None,
    base_qp: Annotated[
        int | None, typer.Option(help="Enhancement layer at a fixed QP: the base's x265 QP.")
    ] = None,
    no_base: Annotated[
        bool,
        typer.Option("--no-base", help="With --kbps: the generative layer only, at every rate."),
    ] = False,
    one_pass: Annotated[
        bool,
        typer.Option(
            "--one-pass",
            help="With --kbps: code the file once, as a live encoder would (by default a first pass finds where the key frames fall, and the second shares the key-frame budget between them).",
        ),
    ] = False,
    device: Device = "cpu",
    quiet: Quiet = False,
) -> None:
    """Encode a face video into one .gfv bitstream."""
    from gfvc.codec import EncodeSettings, check_fps, encode_file

    def body() -> None:
        coded, raw = _parse_size(size)
        settings = EncodeSettings(
            model=model,
            checkpoint=str(checkpoint) if checkpoint else None,
            config=str(config) if config else None,
            qstep=qstep,
            qp=qp,
            keyframe_codec=keyframe_codec,
            keyframe_format=keyframe_format,
            coder=coder,
            frames=frames,
            face=face,
            size=coded,
            crop=not no_crop,
            gop=gop,
            deadzone=deadzone,
            device=device,
            raw_size=raw,
            fps=check_fps(fps) if fps else None,
            kbps=kbps,
            watch=not no_watch,
            base_size=base_size,
            base_qp=base_qp,
            base_layer=not no_base,
            two_pass=not one_pass,
        )
        with _progress(frames, quiet, "encode") as tick:
            rep = encode_file(input, output, settings, progress=tick)
        if not quiet:
            enh = f", enhancement {rep.enhancement_bits} b" if rep.enhancement_bits else ""
            typer.echo(
                f"{output}: {rep.frames} frames, {rep.kbps:.2f} kbps "
                f"(key frame {rep.keyframe_bits} b, features {rep.feature_bits} b{enh}, overhead {rep.overhead_bits} b)"
            )

    _run(body)


@app.command()
def decode(
    input: Annotated[Path, typer.Argument(help="A .gfv bitstream.")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Output video: .mp4, .y4m, .rgb or .yuv.")
    ],
    checkpoint: Checkpoint = None,
    config: Config = None,
    device: Device = "cpu",
    from_key: Annotated[
        int,
        typer.Option(
            min=0, help="Start at key frame N (0 = the first): every key frame is an entry point."
        ),
    ] = 0,
    audio_from: AudioFrom = None,
    quiet: Quiet = False,
) -> None:
    """Decode a .gfv bitstream (or a .265/.266 stream carrying GFV SEI) into a video."""
    from gfvc.codec import decode_file
    from gfvc.interop import read_any

    def body() -> None:
        data = read_any(input)
        with _progress(None, quiet, "decode") as tick:
            n = decode_file(
                data,
                output,
                checkpoint=str(checkpoint) if checkpoint else None,
                config=str(config) if config else None,
                device=device,
                progress=tick,
                from_key=from_key,
                audio_from=audio_from,
            )
        if not quiet:
            typer.echo(f"{output}: {n} frames")

    _run(body)


@app.command()
def animate(
    source: Annotated[
        Path,
        typer.Argument(help="The face to animate: a still image, or a video (its first frame)."),
    ],
    driving: Annotated[Path, typer.Argument(help="The video whose motion drives it.")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Output video: .mp4, .y4m, .rgb or .yuv.")
    ],
    model: Annotated[
        str,
        typer.Option(
            help="Motion model (landmark, fomm, fv2v, dac, hdac, rdac; cfte with --absolute)."
        ),
    ] = DEFAULT_MODEL,
    absolute: Annotated[
        bool,
        typer.Option(
            "--absolute",
            help="Use the driving features as they are (default: relative, the driving video's change from its first frame applied to the source).",
        ),
    ] = False,
    save_gfv: Annotated[
        Path | None, typer.Option(help='Also keep the .gfv stream that was "sent".')
    ] = None,
    frames: Annotated[
        int | None, typer.Option(min=2, help="Use only the first N driving frames.")
    ] = None,
    qp: KeyQp = None,
    no_crop: Annotated[
        bool, typer.Option("--no-crop", help="Source and driving are already aligned face crops.")
    ] = False,
    checkpoint: Checkpoint = None,
    config: Config = None,
    device: Device = "cpu",
    quiet: Quiet = False,
) -> None:
    """Animate a face (another person, a painting, an avatar) with a driving video's motion,
    through the ordinary encoder and decoder."""
    from gfvc.animate import animate_file

    def body() -> None:
        with _progress(frames, quiet, "animate") as tick:
            rep = animate_file(
                source,
                driving,
                output,
                model=model,
                checkpoint=str(checkpoint) if checkpoint else None,
                config=str(config) if config else None,
                device=device,
                absolute=absolute,
                frames=frames,
                qp=qp,
                crop=not no_crop,
                save_gfv=save_gfv,
                progress=tick,
            )
        if not quiet:
            kept = f", stream {save_gfv}" if save_gfv else ""
            typer.echo(f"{output}: {rep.frames} frames, {rep.kbps:.2f} kbps{kept}")

    _run(body)


@app.command()
def edit(
    input: Annotated[Path, typer.Argument(help="A .gfv bitstream (left unchanged).")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Output video: .mp4, .y4m, .rgb or .yuv.")
    ],
    yaw: Annotated[
        float | None, typer.Option(help="Turn the head by DEG degrees (left/right).")
    ] = None,
    pitch: Annotated[float | None, typer.Option(help="Tilt the head by DEG degrees (nod).")] = None,
    roll: Annotated[float | None, typer.Option(help="Roll the head by DEG degrees.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="NAME=VALUE: put a component (see docs/edit.md); repeatable."),
    ] = None,
    add: Annotated[
        list[str] | None,
        typer.Option(help="NAME=DELTA: add to a component; repeatable."),
    ] = None,
    from_: Annotated[
        int | None, typer.Option("--from", min=0, help="First edited frame (0 = the first).")
    ] = None,
    to: Annotated[int | None, typer.Option(min=0, help="Last edited frame (inclusive).")] = None,
    checkpoint: Checkpoint = None,
    config: Config = None,
    device: Device = "cpu",
    audio_from: AudioFrom = None,
    quiet: Quiet = False,
) -> None:
    """Decode a .gfv bitstream with its head pose or expression changed (landmark, fv2v)."""
    from gfvc.edit import FeatureEdit, edit_file, parse_edit
    from gfvc.interop import read_any

    def body() -> None:
        if from_ is not None and to is not None and from_ > to:
            raise InputError(f"--from {from_} is after --to {to}")
        stop = None if to is None else to + 1
        edits = [
            FeatureEdit(name, "add", deg, from_, stop)
            for name, deg in (("yaw", yaw), ("pitch", pitch), ("roll", roll))
            if deg is not None
        ]
        edits += [parse_edit(t, "set", from_, stop) for t in set_ or ()]
        edits += [parse_edit(t, "add", from_, stop) for t in add or ()]
        if not edits:
            raise InputError("nothing to edit: give --yaw/--pitch/--roll, --set or --add")
        data = read_any(input)
        with _progress(None, quiet, "edit") as tick:
            rep = edit_file(
                data,
                output,
                edits,
                checkpoint=str(checkpoint) if checkpoint else None,
                config=str(config) if config else None,
                device=device,
                progress=tick,
                audio_from=audio_from,
            )
        if not quiet:
            clamped = f", {rep.clamped} clamped to the trained range" if rep.clamped else ""
            typer.echo(f"{output}: {rep.frames} frames, {rep.edited} edited{clamped}")

    _run(body)


def info_dict(path: Path) -> dict[str, Any]:
    from gfvc.bitstream import parse_stream
    from gfvc.bitstream.extension import enhancement_info, no_face_spans
    from gfvc.codec import read_stream, stream_report
    from gfvc.enhance import packaged_fusion_name
    from gfvc.features.entropy import FEATURE_CODERS
    from gfvc.keyframe import keyframe_codec_class_by_id
    from gfvc.models import model_class_by_id

    data = read_stream(path)
    parsed = parse_stream(data)
    rep = stream_report(data)
    h = parsed.header
    refs = _references(parsed)
    enh = enhancement_info(h)
    coder = next(
        (c.name for c in FEATURE_CODERS.values() if c.coder_id == h.coder_id), str(h.coder_id)
    )
    try:
        model_name = model_class_by_id(h.model_id).name
    except GfvcError:
        model_name = f"unknown ({h.model_id})"
    return {
        "file": str(path),
        "frames": rep.frames,
        "fps": float(h.fps),
        "kbps": rep.kbps,
        "total_bits": rep.total_bits,
        "keyframe_bits": rep.keyframe_bits,
        "feature_bits": rep.feature_bits,
        "overhead_bits": rep.overhead_bits,
        # the enhancement layer's base pictures (0 without the layer)
        "enhancement_bits": rep.enhancement_bits,
        "enhancement": None
        if enh is None
        else {
            "codec": "hevc",
            "base_size": enh.size,
            # the packaged weights the stream was coded for (file name, else the hash)
            "fusion": packaged_fusion_name(enh.fusion_hash) or enh.fusion_hash.hex(),
        },
        "header_bits": 8 * parsed.header_bytes,
        "format_version": h.version,
        "key_frames": sum(not r["recall"] for r in refs),
        "recalls": sum(r["recall"] for r in refs),
        # every reference: where, why, at what QP and for how many bits
        "references": refs,
        # where decoding can start (gfvc decode --from-key N); version 1 only at the first
        "key_frame_indices": [
            r["frame"] for r in refs if not r["recall"] and (h.resets_at_key or not r["frame"])
        ],
        "segments": len(parsed.segments),
        "model": model_name,
        "model_hash": h.model_hash.hex(),
        "width": h.width,
        "height": h.height,
        "qstep": h.qstep,
        "feature_dim": h.feature_dim,
        "feature_coder": coder,
        "keyframe_codec": keyframe_codec_class_by_id(h.keyframe_codec_id).name,
        "keyframe_format": h.keyframe_format,
        "keyframe_qp": h.keyframe_qp,
        "key_feature_sent": h.key_feature_sent,
        # [start, end) frames in which the encoder saw no face (the picture is the camera's)
        "no_face_spans": [list(sp) for sp in no_face_spans(h)],
    }


@app.command()
def info(
    input: Annotated[Path, typer.Argument(help="A .gfv bitstream.")],
    as_json: Json = False,
) -> None:
    """Show the structure and bit budget of a .gfv file (verifies it too)."""

    def body() -> None:
        d = info_dict(input)
        if as_json:
            typer.echo(json.dumps(d, indent=2))
            return
        per = d["frames"] - 1 or 1
        typer.echo(
            f"{d['file']}: {d['frames']} frames @ {d['fps']:g} fps, {d['width']}x{d['height']}, "
            f"model {d['model']} ({d['feature_dim']} values/frame, qstep {d['qstep']:g}, {d['feature_coder']} coder)\n"
            f"  key frames     {d['key_frames']} x {d['keyframe_codec']} {d['keyframe_format']} QP {d['keyframe_qp']}"
            f" (entry points at frames {_spans(d['key_frame_indices'])}; format version {d['format_version']})\n"
            f"  total          {d['total_bits']:>9} bits  {d['kbps']:.3f} kbps\n"
            f"  key frame      {d['keyframe_bits']:>9} bits\n"
            f"  features       {d['feature_bits']:>9} bits  ({d['feature_bits'] / per:.1f} per inter frame)\n"
            + (
                f"  enhancement    {d['enhancement_bits']:>9} bits  ({100 * d['enhancement_bits'] / d['total_bits']:.0f} % of the total; "
                f"HEVC base layer {d['enhancement']['base_size']}x{d['enhancement']['base_size']}, "
                f"fusion weights {d['enhancement']['fusion']})\n"
                if d["enhancement"]
                else ""
            )
            + f"  overhead       {d['overhead_bits']:>9} bits  ({d['overhead_bits'] / per:.2f} per inter frame; "
            f"header {d['header_bits']}, {d['segments']} segments)"
        )
        for r in d["references"]:
            qp = "" if r["qp"] is None else f" QP {r['qp']}"
            what = (
                "recall of" if r["recall"] else "new" if not r["bank_reset"] else "new, bank reset,"
            )
            typer.echo(
                f"  reference at frame {r['frame']:>5}: {r['reason']:10}{qp:7} {r['bits']:>7} bits"
                f"  ({what} slot {r['slot']}, reference {r['tag']})"
            )
        if d["no_face_spans"]:
            spans = ", ".join(f"{a}-{b - 1}" for a, b in d["no_face_spans"])
            typer.echo(f"  no face        frames {spans}")

    _run(body)


def _references(parsed: Any) -> list[dict[str, Any]]:
    from gfvc.bitstream import KEY, read_key_payload

    out = []
    for i, u in enumerate(parsed.units):
        if u[0] == KEY:
            k = read_key_payload(u[1:], parsed.header.version, parsed.header.enhanced)
            qp = None if k.info.qp == 255 else k.info.qp
            out.append(
                {
                    "frame": i,
                    "reason": k.info.reason_name,
                    "qp": qp,
                    "picture_bits": 8 * len(k.picture),
                    "bits": 8 * (len(u) - 1),
                    # the reference bank (format version 4): the slot filled or recalled
                    "slot": k.info.slot,
                    "tag": k.info.tag,
                    "recall": k.info.recall,
                    "bank_reset": k.info.reset and not k.info.recall,
                }
            )
    return out


def _spans(idx: list[int], most: int = 8) -> str:
    """'0, 25, 50 ... 975' for a long list of frame numbers."""
    shown = [str(i) for i in idx[: most - 1]]
    if len(idx) > most:
        shown.append(f"... {idx[-1]}")
    elif len(idx) == most:
        shown.append(str(idx[-1]))
    return ", ".join(shown)


@app.command()
def models() -> None:
    """List the motion models."""
    from gfvc.models import MOTION_MODELS, model_class

    model_class("mesh")  # fills the registry
    for name, cls in sorted(MOTION_MODELS.items()):
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        typer.echo(f"{name:8} id {cls.model_id:<3} qstep {cls.default_qstep:<6g} {doc}")


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on; 127.0.0.1 keeps it to this machine.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    model: Annotated[str, typer.Option(help="Motion model (see `gfvc models`).")] = DEFAULT_MODEL,
    checkpoint: Checkpoint = None,
    max_upload_mb: Annotated[
        float, typer.Option(min=0.1, max=10_000, help="Largest upload accepted, in MB.")
    ] = 50.0,
    max_seconds: Annotated[
        float, typer.Option(min=1, max=36_000, help="Longest upload accepted, in seconds.")
    ] = 60.0,
) -> None:
    """A live call and a key-frame editor in the browser (a local web page; Ctrl-C stops)."""

    def body() -> None:
        try:
            from gfvc.serve.app import LOOPBACK_NAMES, create_app
            from gfvc.serve.media import Limits
            from gfvc.serve.server import check_port
            from gfvc.serve.server import serve as run_server
        except ImportError as e:
            raise InputError(f"gfvc serve needs {e.name}: reinstall gfvc's dependencies") from None
        from gfvc.models import model_class

        model_class(model)  # an unknown name fails here, not in the first call
        check_port(host, port)
        shown = f"[{host}]" if ":" in host else host
        loopback = host in ("127.0.0.1", "localhost", "::1")
        app_ = create_app(
            model=model,
            checkpoint=str(checkpoint) if checkpoint else None,
            limits=Limits(max_mb=max_upload_mb, max_seconds=max_seconds),
            allowed_hosts=LOOPBACK_NAMES if loopback else None,
        )
        typer.echo(f"gfvc serve: open http://{shown}:{port}/ (Ctrl-C stops)")
        if not loopback:
            typer.echo(f"note: anyone who can reach {host}:{port} can use this server", err=True)
        try:
            run_server(app_, host, port)
        except KeyboardInterrupt:  # uvicorn has already shut down cleanly
            pass
        typer.echo("gfvc serve: stopped")

    _run(body)


@app.command()
def demo(
    input: Annotated[
        Path | None, typer.Argument(help="A face video (default: the built-in sample).")
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the results.")] = Path(
        "gfvc-demo"
    ),
    model: Annotated[str, typer.Option(help="Motion model.")] = DEFAULT_MODEL,
    qp: KeyQp = None,
    frames: Annotated[int | None, typer.Option(help="Code only the first N frames.")] = None,
    audio_from: AudioFrom = None,
    quiet: Quiet = False,
) -> None:
    """Encode and decode a sample face video; write the decoded video, a side-by-side PNG and a summary."""
    from gfvc.codec import EncodeSettings
    from gfvc.demo import run_demo

    def body() -> None:
        settings = EncodeSettings(model=model, qp=qp, frames=frames)
        with _progress(None, quiet, "demo") as tick:
            s = run_demo(input, output, settings, progress=tick, audio_from=audio_from)
        typer.echo(
            f"{s.input}: {s.frames} frames coded with {s.model} at {s.kbps:.2f} kbps "
            f"(key frame {s.keyframe_bits} b, features {s.feature_bits} b, overhead {s.overhead_bits} b)\n"
            f"quality: PSNR-RGB {s.psnr_rgb:.2f} dB, MS-SSIM {s.ms_ssim}\n"
            f"speed: encode {s.encode_fps} fps, decode {s.decode_fps} fps\n"
            f"wrote {s.bitstream}, {s.video}, {s.side_by_side}, {Path(output) / 'summary.json'}"
        )

    _run(body)


@app.command()
def bench(
    input: Annotated[
        Path | None, typer.Argument(help="A face video (default: the built-in sample).")
    ] = None,
    model: Annotated[str, typer.Option(help="Motion model.")] = DEFAULT_MODEL,
    checkpoint: Checkpoint = None,
    config: Config = None,
    frames: Annotated[int, typer.Option(min=2, max=100_000, help="Frames to time.")] = 100,
    kbps: Annotated[
        float | None, typer.Option(help="Encode with rate control at this target rate.")
    ] = None,
    device: Device = "cpu",
    as_json: Json = False,
) -> None:
    """Measure encode and decode frames per second, and each stage on its own."""
    from gfvc.bench import run_bench
    from gfvc.codec import EncodeSettings

    def body() -> None:
        s = EncodeSettings(
            model=model,
            checkpoint=str(checkpoint) if checkpoint else None,
            config=str(config) if config else None,
            device=device,
            kbps=kbps,
        )
        r = run_bench(input, s, frames=frames)
        if as_json:
            typer.echo(json.dumps(r, indent=2))
        else:
            for k, v in r.items():
                typer.echo(f"{k:24} {v}")

    _run(body)


@app.command(name="eval")
def eval_cmd(
    reference: Annotated[
        Path, typer.Argument(help="Reference video (e.g. from `gfvc anchor --codec lossless`).")
    ],
    decoded: Annotated[Path, typer.Argument(help="Decoded video of the same size and length.")],
    metrics: Annotated[
        str | None, typer.Option(help="Comma-separated metrics (default: all).")
    ] = None,
    size: Annotated[
        str | None, typer.Option(help="WxH of raw .rgb/.yuv inputs without WxH in their name.")
    ] = None,
    as_json: Json = False,
) -> None:
    """Compare a decoded video with its reference: per-sequence means and per-frame values."""
    from gfvc.eval.metrics import ALL_METRICS, check_metric_names, evaluate_sequences
    from gfvc.io import VideoReader

    def body() -> None:
        raw = _parse_size(size)[1] if size else None
        if size and raw is None:
            raise InputError(f"--size must be WxH (the size of raw .rgb/.yuv input), got {size!r}")
        names = (
            check_metric_names(m.strip() for m in metrics.split(",") if m.strip())
            if metrics
            else ALL_METRICS
        )
        if not names:
            raise InputError("--metrics is empty; name at least one metric")
        with VideoReader(reference, size=raw) as a, VideoReader(decoded, size=raw) as b:
            ia, ib = a.info, b.info
            if (ia.width, ia.height) != (ib.width, ib.height):
                raise InputError(
                    f"frame sizes differ: {reference} is {ia.width}x{ia.height}, "
                    f"{decoded} is {ib.width}x{ib.height}"
                )
            if ia.frames and ib.frames and ia.frames != ib.frames:
                raise InputError(
                    f"lengths differ: {reference} has {ia.frames} frames, {decoded} has {ib.frames}"
                )
            res = evaluate_sequences(iter(a), iter(b), names, fps=float(ia.fps))
        res = _finite(res)
        if as_json:
            typer.echo(json.dumps(res, indent=2))
            return
        typer.echo(f"{res['num_frames']} frames, {res['width']}x{res['height']}")
        for m in names:
            v = res.get(m)
            typer.echo(f"{m:14} {'n/a' if v is None else f'{v:.4f}'}")
        for m, why in (res.get("unavailable") or {}).items():
            if m in names:
                typer.echo(f"  {m}: {why}")
        for m, note in (res.get("notes") or {}).items():
            typer.echo(f"  {m}: {note}")

    _run(body)


def _finite(o: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None."""
    import math

    if hasattr(o, "item") and not isinstance(o, list | dict):
        o = o.item()
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(v) for v in o]
    return o


#: Outputs that keep decoded frames exactly (planar RGB); .y4m (4:4:4 YUV, about 52 dB) and
#: .yuv/.mp4/.mkv/.mov (4:2:0) change them.
_EXACT_OUTPUTS = (".rgb",)


@app.command()
def anchor(
    input: Annotated[Path, typer.Argument(help="Input video.")],
    output: Annotated[
        Path,
        typer.Option(
            "-o",
            "--output",
            help="Decoded video: .rgb keeps the frames exactly (required for lossless); "
            ".y4m/.yuv/.mp4 convert to YUV.",
        ),
    ],
    codec: Annotated[
        str, typer.Option(help="x265, svtav1, vvc or lossless (the cropped original).")
    ] = "x265",
    qp: Annotated[int, typer.Option(help="QP of every frame (ignored for lossless).")] = 42,
    frames: Annotated[int | None, typer.Option(help="Code only the first N frames.")] = None,
    size: Annotated[str, typer.Option(help="Coded size N, or WxH of raw input.")] = "256",
    no_crop: Annotated[
        bool, typer.Option("--no-crop", help="Input is already an aligned face.")
    ] = False,
    fps: Annotated[
        str | None, typer.Option(help="Frame rate for the rate (default: the input's).")
    ] = None,
    as_json: Json = False,
) -> None:
    """Code a sequence with a conventional low-delay codec, on the same face crop as `encode`.

    `--codec lossless -o ref.rgb` writes the cropped original itself: the reference that
    `gfvc eval` compares every decoded video with.
    """
    from gfvc.codec import EncodeSettings, FramePreparer, check_fps
    from gfvc.eval.anchors import QP_RANGE, anchor_code, canonical_codec
    from gfvc.io import VideoWriter
    from gfvc.io.video import parse_raw_name

    def body() -> None:
        name = canonical_codec(codec)
        suffix = output.suffix.lower()
        if name == "lossless" and suffix not in _EXACT_OUTPUTS:
            raise InputError(
                f"--codec lossless writes the reference, which must be exact: use a .rgb output "
                f"(e.g. {output.with_suffix('').name}_256x256.rgb); {suffix or 'no extension'} "
                "would convert it to YUV"
            )
        lo, hi = QP_RANGE[name]
        q = qp if name != "lossless" else 0
        if not lo <= q <= hi:
            raise InputError(f"--qp for {name} must be in [{lo}, {hi}], got {qp}")
        coded, raw = _parse_size(size)
        s = EncodeSettings(
            frames=frames,
            size=coded,
            crop=not no_crop,
            raw_size=raw,
            fps=check_fps(fps) if fps else None,
        )
        prep = FramePreparer(input, s)
        try:
            clip = list(prep)
        finally:
            prep.close()
        res = anchor_code(clip, name, q, float(prep.fps))
        with VideoWriter(output, fps=prep.fps, width=coded, height=coded) as w:
            for f in res.decoded_frames:
                w.write(f)
        d = {
            "codec": name,
            "qp": None if name == "lossless" else q,
            "frames": len(clip),
            "fps": float(prep.fps),
            "width": coded,
            "height": coded,
            "bits": res.bits,
            "kbps": res.kbps,
            "output": str(output),
            "output_exact": suffix in _EXACT_OUTPUTS,
        }
        if as_json:
            typer.echo(json.dumps(d, indent=2))
        else:
            what = "uncompressed RGB" if name == "lossless" else f"QP {q}"
            typer.echo(f"{output}: {name} {what}, {len(clip)} frames, {res.kbps:.2f} kbps")
        if suffix not in _EXACT_OUTPUTS:
            typer.echo(
                f"note: {suffix} stores the decoded frames converted to YUV; "
                "write .rgb to evaluate them exactly",
                err=True,
            )
        elif parse_raw_name(output.name)[0] is None:
            typer.echo(
                f"note: {output.name} has no size in its name: read it back with "
                f"--size {coded}x{coded}",
                err=True,
            )

    _run(body)


@app.command()
def ctc(
    config: Annotated[Path, typer.Argument(help="Test-condition YAML (see configs/).")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Results folder (default: ctc-<name>).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Parallel worker processes.", min=1)] = 1,
    shard: Annotated[
        str | None, typer.Option(help="Run only shard i of n (e.g. 0/4) for array jobs.")
    ] = None,
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Only rebuild the report from finished runs.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Run sequences x codecs x rate points (resumable), then write CSV, BD-rates, plots and a report.

    Finished runs (results under OUT/runs made with the same settings) are skipped, so an
    interrupted run continues where it stopped. With --shard i/n each array task runs every
    n-th run; the report is written by the shard that finds all runs finished (or later
    with --report-only).
    """
    from gfvc.eval import ctc as ctc_mod

    def body() -> None:
        cfg = ctc_mod.CtcConfig.load(config)
        out = output or Path(f"ctc-{cfg.name}")
        part = ctc_mod.parse_shard(shard)
        errors: list[str] = []
        if not report_only:
            n_todo = sum(not ctc_mod.is_finished(cfg, j, out) for j in ctc_mod.jobs(cfg, part))
            log_lines = not quiet and not sys.stderr.isatty()
            count = [0]

            def on_result(key: str, row: dict[str, Any] | None, err: str | None) -> None:
                count[0] += 1
                if not log_lines:
                    return
                if err:
                    typer.echo(f"[{count[0]}/{n_todo}] {key}: failed: {err}", err=True)
                else:
                    assert row is not None
                    typer.echo(
                        f"[{count[0]}/{n_todo}] {key}: {row['kbps']:.2f} kbps "
                        f"({row['code_s']:.1f} s coding, {row['eval_s']:.1f} s metrics)",
                        err=True,
                    )

            with _progress(n_todo, quiet, "ctc", unit="run") as tick:
                done, skipped, errors = ctc_mod.run(
                    cfg, out, workers=workers, shard=part, progress=tick, on_result=on_result
                )
            if not quiet:
                typer.echo(f"{done} runs done, {skipped} already finished, {len(errors)} failed")
            for e in errors:
                typer.echo(f"failed: {e}", err=True)
        finished, total = ctc_mod.progress_of(cfg, out)
        if part[1] > 1 and not report_only and finished < total:
            typer.echo(
                f"{finished} of {total} runs finished; the report is written when all are "
                f"(or run `gfvc ctc {config} -o {out} --report-only`)"
            )
        else:
            report = ctc_mod.write_report(cfg, out)
            typer.echo(f"report: {report} ({finished} of {total} runs)")
        if errors:
            raise InputError(
                f"{len(errors)} of the runs failed (listed above); rerun to retry them"
            )

    _run(body)


@app.command(name="export")
def export_cmd(
    input: Annotated[Path, typer.Argument(help="A .gfv bitstream.")],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Annex-B stream: .265 (HEVC) or .266 (VVC).")
    ],
    form: Annotated[str, typer.Option(help="SEI syntax form: vtm (default) or hm.")] = "vtm",
    vtm_cfg: Annotated[
        Path | None, typer.Option(help="Also write the equivalent VTM/HM SEI configuration file.")
    ] = None,
    no_pupils: Annotated[
        bool, typer.Option("--no-pupils", help="Keep pupils as keypoints (no GFVE message).")
    ] = False,
    as_json: Json = False,
) -> None:
    """Turn a .gfv file into a standard HEVC/VVC stream: the key frame plus one GFV SEI per frame."""
    from dataclasses import asdict

    from gfvc.interop import export_stream

    def body() -> None:
        if form not in ("vtm", "hm"):
            raise InputError(f"--form must be vtm or hm, got {form!r}")
        rep = export_stream(input, output, form=form, cfg_path=vtm_cfg, pupils=not no_pupils)
        if as_json:
            typer.echo(json.dumps(asdict(rep), indent=2, default=str))
        else:
            typer.echo(
                f"{output}: {rep.frames} frames, SEI {rep.sei_bits_per_frame:.1f} bits/frame "
                f"(native .gfv features {rep.native_feature_bits_per_frame:.1f} bits/frame)"
            )
            if rep.dropped_enhancement_bits:
                typer.echo(
                    f"note: the enhancement layer ({rep.dropped_enhancement_bits} bits) is not "
                    "carried by GFV SEI and was dropped; the exported stream decodes to the "
                    "generative layer alone",
                    err=True,
                )

    _run(body)


@app.command(name="import")
def import_cmd(
    input: Annotated[
        Path, typer.Argument(help="HEVC/VVC Annex-B stream with GFV SEI messages (.265/.266).")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .gfv file.")],
    model: Annotated[
        str | None, typer.Option(help="Model for streams written by VTM/HM (no gfvc metadata).")
    ] = None,
) -> None:
    """Turn an HEVC/VVC stream carrying GFV SEI messages into a .gfv file."""
    from gfvc.interop import import_stream

    def body() -> None:
        rep = import_stream(input, output, model=model)
        typer.echo(
            f"{output}: {rep.frames} frames, {rep.key_pictures} key picture(s), {rep.codec}, {rep.form} form"
        )

    _run(body)


@app.command()
def conformance(
    golden: Annotated[
        Path,
        typer.Argument(
            help="A golden file (official model config, state dict, reference outputs)."
        ),
    ],
    as_json: Json = False,
) -> None:
    """Check this install against reference outputs of an official model; exit 1 on a failure."""
    from gfvc.models.official.conformance import run_conformance

    def body() -> bool:
        rep = run_conformance(golden)
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "model": rep.model,
                        "passed": rep.passed,
                        # strict JSON: a length mismatch (infinite difference) becomes null
                        "max_abs_diff": {
                            k: (v if math.isfinite(v) else None)
                            for k, v in rep.max_abs_diff.items()
                        },
                    },
                    indent=2,
                )
            )
        else:
            for key, diff in rep.max_abs_diff.items():
                tol = rep.tolerance.get(key, 0.0)
                typer.echo(
                    f"{'FAIL' if key in rep.failures else 'pass'}  {key:40} max abs diff {diff:.3g} (tolerance {tol:g})"
                )
            for note in rep.notes:
                typer.echo(f"note: {note}")
            typer.echo(f"{rep.model}: {'PASSED' if rep.passed else 'FAILED'}")
        return rep.passed

    if not _run(body):
        raise typer.Exit(1)


@app.command()
def train(
    config: Annotated[
        Path | None, typer.Argument(help="Training YAML (see configs/train_landmark.yaml).")
    ] = None,
    run_dir: Annotated[
        str | None, typer.Option(help="Run folder (checkpoints, logs, curves).")
    ] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Total optimisation steps.")] = None,
    time_limit: Annotated[
        float | None,
        typer.Option(min=0.01, help="Stop after this many minutes (resumable)."),
    ] = None,
    cache_dir: Annotated[
        str | None, typer.Option(help="Where the cropped training clips are cached.")
    ] = None,
    fusion: Annotated[
        bool,
        typer.Option(
            "--fusion",
            help="Train the enhancement layer's fusion network instead (configs/train_fusion.yaml).",
        ),
    ] = False,
    export_only: Annotated[
        bool, typer.Option("--export-only", help="Only export the run's last checkpoint.")
    ] = False,
    warp_only: Annotated[
        bool, typer.Option("--warp-only", help="With --export-only: shape model only, no refiner.")
    ] = False,
) -> None:
    """Train the default landmark model (resumable; works under torchrun for several GPUs)."""
    from gfvc.train.trainer import TrainConfig
    from gfvc.train.trainer import train as run_training

    def body() -> None:
        if fusion:
            from gfvc.train.fusion import train_fusion_from_config

            out = train_fusion_from_config(config, log=lambda s: typer.echo(s, err=True))
            typer.echo(f"weights: {out} (copy to gfvc/data/fusion.pt to ship them)")
            return
        cfg = TrainConfig.load(
            config, run_dir=run_dir, steps=steps, time_limit_min=time_limit, cache_dir=cache_dir
        )
        if export_only:
            from gfvc.train.trainer import export_run

            out = export_run(cfg, warp_only=warp_only)
        else:
            out = run_training(cfg, log=lambda s: typer.echo(s, err=True))
        typer.echo(f"weights: {out}")

    _run(body)


def _silence_native_logs() -> None:
    """Send what native libraries write straight to fd 2 (TFLite/MediaPipe start-up lines)
    to /dev/null, while Python's own stderr (errors, progress bars) keeps the terminal.
    GFVC_DEBUG=1 keeps everything."""
    if os.environ.get("GFVC_DEBUG"):
        return
    try:
        keep = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        sys.stderr = os.fdopen(keep, "w", buffering=1)
    except OSError:
        pass


def main() -> None:
    _silence_native_logs()
    app()


if __name__ == "__main__":
    main()
