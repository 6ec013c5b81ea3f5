"""Every bad option value is a user mistake: exit 1 and one line naming what is allowed,
never an "internal error" (exit 2) or a usage box."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_one_line_error, moving_frames, write_video
from conftest import run_cli as run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("mistakes")
    src = write_video(d / "in_64x64.rgb", moving_frames(4))
    gfv = d / "in.gfv"
    res = run(
        "encode", src, "-o", gfv, "--model", "toy", "--no-crop", "--keyframe-codec", "lossless"
    )
    assert res.exit_code == 0, res.output
    return {"SRC": src, "GFV": gfv, "OUT": d / "out", "CTC": CONFIGS / "ctc_example.yaml"}


ENCODE = ["encode", "SRC", "-o", "OUT.gfv", "--model", "toy", "--no-crop"]

MISTAKES = [
    (ENCODE + ["--fps", "abc"], "--fps must be a number"),
    (ENCODE + ["--fps", "100000"], "--fps must be in 0.1..240"),
    (ENCODE + ["--fps", "0"], "--fps must be in"),
    (ENCODE + ["--fps", "1/0"], "--fps must be a number"),
    (ENCODE + ["--keyframe-codec", "lossless", "--qp", "300"], "leave --qp unset"),
    (ENCODE + ["--qp", "99"], "qp must be in 0..51"),
    (ENCODE + ["--keyframe-codec", "svtav1", "--qp", "64"], "qp must be in 0..63"),
    (ENCODE + ["--qp", "-1"], "qp must be in"),
    (ENCODE + ["--qp", "abc"], "valid integer"),
    (ENCODE + ["--qstep", "1e39"], "--qstep must be in 0.001..1e+06"),
    (ENCODE + ["--qstep", "0"], "--qstep must be in"),
    (ENCODE + ["--qstep", "nan"], "--qstep must be in"),
    (ENCODE + ["--qstep", "-2"], "--qstep must be in"),
    (ENCODE + ["--gop", "0"], "--gop must be in 1.."),
    (ENCODE + ["--deadzone", "5"], "--deadzone must be in [0.5, 2)"),
    (ENCODE + ["--frames", "1"], "--frames must be at least 2"),
    (ENCODE + ["--frames", "x"], "valid integer"),
    (ENCODE + ["--size", "7"], "--size must be an even number"),
    (ENCODE + ["--size", "abc"], "--size must be N"),
    (ENCODE + ["--coder", "huffman"], "choose one of: expgolomb, range"),
    (ENCODE + ["--keyframe-codec", "mpeg2"], "unknown key-frame codec"),
    (ENCODE + ["--keyframe-format", "yuv422"], "cannot code key frames as"),
    (ENCODE + ["--device", "gpu"], "--device must be cpu, cuda"),
    (["encode", "SRC", "-o", "OUT.gfv", "--model", "nope"], "unknown"),
    (["decode", "GFV", "-o", "OUT.rgb", "--from-key", "-1"], "greater than or equal to 0"),
    (["decode", "GFV", "-o", "OUT.rgb", "--from-key", "3"], "--from-key must be in 0..0"),
    (["decode", "GFV", "-o", "OUT.rgb", "--device", "tpu"], "--device must be"),
    (["bench", "--frames", "1"], "greater than or equal to 2"),
    (["anchor", "SRC", "-o", "OUT.rgb", "--codec", "x265", "--qp", "99"], "--qp for x265"),
    (["anchor", "SRC", "-o", "OUT.rgb", "--fps", "abc"], "--fps must be a number"),
    (["anchor", "SRC", "-o", "OUT.rgb", "--codec", "mpeg2"], "mpeg2"),
    (["ctc", "CTC", "--workers", "0"], "greater than or equal to 1"),
    (["ctc", "CTC", "--shard", "5/2"], "--shard must be i/n"),
    (["eval", "SRC", "SRC", "--metrics", "foo"], "unknown metric"),
    (["export", "GFV", "-o", "OUT.265", "--form", "foo"], "--form must be vtm or hm"),
    (["train", "--steps", "0"], "greater than or equal to 1"),
    (["train", "--time-limit", "-1"], "greater than or equal to 0.01"),
    (["info", "GFV", "--bogus"], "no such option"),
]


def _args(template: list[str], inputs: dict[str, Path]) -> list[str]:
    out = []
    for a in template:
        head, dot, ext = a.partition(".")
        out.append(str(inputs[head]) + dot + ext if head in inputs else a)
    return out


@pytest.mark.parametrize(
    ("args", "pattern"), MISTAKES, ids=[" ".join(m[0][:1] + m[0][-2:]) for m in MISTAKES]
)
def test_bad_option_value_is_one_line_and_exit_1(inputs, args, pattern):
    res = run(*_args(args, inputs))
    assert_one_line_error(res, pattern)
    assert res.exit_code == 1, res.output
    assert "internal error" not in res.output


def test_no_arguments_still_prints_help():
    res = run()
    assert res.exit_code == 0 and "Usage" in res.output
