"""The command line: happy paths and every user error as one line plus a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_one_line_error, clip, moving_frames
from conftest import run_cli as run
from conftest import write_video as write

from gfvc.bitstream.format import VERSION


@pytest.fixture(scope="module")
def toy_gfv(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    src = d / "in.rgb"
    write(src, moving_frames(12))
    gfv = d / "toy.gfv"
    res = run(
        "encode",
        src,
        "-o",
        gfv,
        "--model",
        "toy",
        "--size",
        "64x64",
        "--no-crop",
        "--keyframe-codec",
        "lossless",
        "-q",
    )
    assert res.exit_code == 0, res.output
    return gfv


def test_info_accounts_for_every_bit(toy_gfv):
    res = run("info", toy_gfv, "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    for key in (
        "frames",
        "fps",
        "kbps",
        "total_bits",
        "keyframe_bits",
        "feature_bits",
        "overhead_bits",
    ):
        assert key in d
    assert d["frames"] == 12
    assert (
        d["keyframe_bits"] + d["feature_bits"] + d["overhead_bits"]
        == d["total_bits"]
        == 8 * toy_gfv.stat().st_size
    )
    assert abs(d["kbps"] - d["total_bits"] / 12 * 25 / 1000) < 1e-9
    text = run("info", toy_gfv)
    assert text.exit_code == 0 and "overhead" in text.output


def test_decode_formats(toy_gfv, tmp_path):
    for ext in ("mp4", "y4m", "rgb"):
        res = run("decode", toy_gfv, "-o", tmp_path / f"d.{ext}", "-q")
        assert res.exit_code == 0, res.output
    assert (
        tmp_path / "d.rgb"
    ).stat().st_size == 12 * 256 * 256 * 3  # WxH is the raw input size; coded at 256


# ---------------------------------------------------------------- error cases (issue list)


def test_missing_file(tmp_path):
    assert_one_line_error(
        run("encode", tmp_path / "nope.mp4", "-o", tmp_path / "o.gfv"), "nope.mp4"
    )


def test_not_a_video(tmp_path):
    p = tmp_path / "text.mp4"
    p.write_text("hello, I am not a video\n" * 50)
    assert_one_line_error(run("encode", p, "-o", tmp_path / "o.gfv"), "video")


def test_zero_frames(tmp_path):
    p = tmp_path / "empty_64x64.rgb"
    p.write_bytes(b"")
    assert_one_line_error(
        run(
            "encode", p, "-o", tmp_path / "o.gfv", "--no-crop", "--model", "toy", "--size", "64x64"
        ),
        "frame",
    )
    assert not (tmp_path / "o.gfv").exists()


def test_one_frame(tmp_path):
    p = tmp_path / "one.rgb"
    write(p, moving_frames(1))
    res = run(
        "encode",
        p,
        "-o",
        tmp_path / "o.gfv",
        "--no-crop",
        "--model",
        "toy",
        "--size",
        "64x64",
        "-q",
    )
    assert_one_line_error(res, "only 1 frame")
    assert not list(tmp_path.glob("o.gfv*"))


def test_no_face_found_hints_no_crop(tmp_path):
    p = tmp_path / "blank.mp4"
    write(p, [np.full((128, 128, 3), 90, np.uint8)] * 5)
    assert_one_line_error(run("encode", p, "-o", tmp_path / "o.gfv", "-q"), "--no-crop")


@pytest.mark.parametrize("size", ["63x64", "16x16", "9000x64"])
def test_odd_tiny_huge_resolution(tmp_path, size):
    w, h = (int(v) for v in size.split("x"))
    p = tmp_path / "v.rgb"
    p.write_bytes(b"\0" * (w * h * 3 * 2))
    res = run("encode", p, "-o", tmp_path / "o.gfv", "--size", size, "--no-crop", "--model", "toy")
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert res.output.strip().startswith("error: ")


def test_grayscale_input_is_accepted(tmp_path):
    import av

    p = tmp_path / "gray.mkv"
    with av.open(str(p), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width = s.height = 64
        s.pix_fmt = "gray"
        for f in moving_frames(6):
            for pkt in s.encode(av.VideoFrame.from_ndarray(f[..., 0].copy(), format="gray")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    res = run(
        "encode", p, "-o", tmp_path / "g.gfv", "--no-crop", "--model", "toy", "--size", "64", "-q"
    )
    assert res.exit_code == 0, res.output


def test_unknown_model(tmp_path, toy_gfv):
    assert_one_line_error(
        run("encode", toy_gfv, "-o", tmp_path / "o.gfv", "--model", "nosuch"), "choose one of"
    )


def test_wrong_checkpoint_for_mesh(tmp_path):
    ck = tmp_path / "x.pth.tar"
    ck.write_bytes(b"garbage")
    res = run(
        "encode", clip("lp_d3.mp4"), "-o", tmp_path / "o.gfv", "--checkpoint", ck, "--frames", "3"
    )
    assert_one_line_error(res, "checkpoint")


def test_corrupt_bitstream(tmp_path, toy_gfv):
    data = bytearray(toy_gfv.read_bytes())
    data[60] ^= 0xFF
    bad = tmp_path / "bad.gfv"
    bad.write_bytes(bytes(data))
    assert_one_line_error(run("decode", bad, "-o", tmp_path / "o.mp4"), "corrupt")
    assert not list(tmp_path.glob("o.mp4*"))
    assert_one_line_error(run("info", bad), "corrupt")


def test_truncated_bitstream(tmp_path, toy_gfv):
    bad = tmp_path / "cut.gfv"
    bad.write_bytes(toy_gfv.read_bytes()[:-20])
    assert_one_line_error(run("decode", bad, "-o", tmp_path / "o.mp4"), "truncated")
    assert not list(tmp_path.glob("o.mp4*"))


def test_newer_format_version(tmp_path, toy_gfv):
    import struct
    import zlib

    data = bytearray(toy_gfv.read_bytes())
    data[4] = VERSION + 1
    n = 6 + data[5]
    data[n : n + 4] = struct.pack(">I", zlib.crc32(bytes(data[:n])))
    bad = tmp_path / "new.gfv"
    bad.write_bytes(bytes(data))
    assert_one_line_error(run("decode", bad, "-o", tmp_path / "o.mp4"), "upgrade")


def test_output_not_writable(tmp_path, toy_gfv):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a folder would have to be")
    assert_one_line_error(run("decode", toy_gfv, "-o", blocker / "o.mp4"), "o.mp4")
    src = tmp_path / "in.rgb"
    write(src, moving_frames(4))
    res = run(
        "encode", src, "-o", blocker / "o.gfv", "--no-crop", "--model", "toy", "--size", "64x64"
    )
    assert_one_line_error(res, "o.gfv")
    assert_one_line_error(run("decode", toy_gfv, "-o", tmp_path), "cannot write")


def test_not_a_gfv_file(tmp_path):
    p = tmp_path / "x.gfv"
    p.write_bytes(b"\x00" * 100)
    assert_one_line_error(run("info", p), "not a .gfv")


def test_version_and_entry_point():
    res = subprocess.run(
        [sys.executable, "-m", "gfvc", "--version"], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0 and res.stdout.startswith("gfvc ")


def test_export_import_decode_round_trip(tmp_path):
    """A real clip through .gfv -> HEVC with GFV SEI -> .gfv gives identical bytes; decode reads both.

    (With an HEVC key frame; the landmark model's default SVT-AV1 key is re-encoded by export.)"""
    gfv = tmp_path / "m.gfv"
    res = run(
        "encode", clip("lp_d3.mp4"), "-o", gfv, "--frames", "12", "--keyframe-codec", "x265", "-q"
    )
    assert res.exit_code == 0, res.output
    res = run("export", gfv, "-o", tmp_path / "m.265", "--vtm-cfg", tmp_path / "m.cfg")
    assert res.exit_code == 0, res.output
    assert "SEIGenerativeFaceVideo" in (tmp_path / "m.cfg").read_text()
    res = run("import", tmp_path / "m.265", "-o", tmp_path / "back.gfv")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "back.gfv").read_bytes() == gfv.read_bytes()
    res = run("decode", tmp_path / "m.265", "-o", tmp_path / "d.y4m", "-q")
    assert res.exit_code == 0, res.output
