"""`gfvc ctc`: config checks, job sharding, a tiny run with its report, resuming, BD tables."""

from __future__ import annotations

import csv
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import assert_one_line_error, clip, moving_frames, run_cli

from gfvc.errors import InputError
from gfvc.eval import ctc
from gfvc.io import VideoWriter

N_FRAMES = 10


def write_rgb(path: Path, frames) -> Path:
    with VideoWriter(path, fps=Fraction(25), width=64, height=64) as w:
        for f in frames:
            w.write(f)
    return path


def config_dict(seqs, **over):
    d = {
        "name": "tiny",
        "frames": N_FRAMES,
        "size": 64,
        "fps": 25,
        "crop": False,
        "sequences": [str(s) for s in seqs],
        "metrics": ["psnr_rgb", "psnr_y", "ssim", "ms_ssim"],
        "reference": "x265",
        "codecs": [
            {"name": "toy", "type": "gfvc", "model": "toy", "qp": [22, 32, 42]},
            {"name": "x265", "type": "anchor", "codec": "x265", "qp": [30, 38, 46]},
        ],
    }
    d.update(over)
    return d


def write_config(folder: Path, d: dict) -> Path:
    p = folder / "ctc.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


@pytest.fixture(scope="module")
def seqs(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctc_seqs")
    return [
        write_rgb(d / "a_64x64.rgb", moving_frames(N_FRAMES, seed=1)),
        write_rgb(d / "b_64x64.rgb", moving_frames(N_FRAMES, seed=2)[::-1]),
    ]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, seqs):
    """A tiny run through the CLI: 2 sequences x 2 codecs x 3 QPs, 10 frames of 64x64."""
    d = tmp_path_factory.mktemp("ctc_run")
    cfg = write_config(d, config_dict(seqs))
    out = d / "out"
    res = run_cli("ctc", cfg, "-o", out, "-q")
    assert res.exit_code == 0, res.output
    return cfg, out, res.output


def test_tiny_run_writes_csv_bd_table_plots_and_report(finished):
    cfg, out, output = finished
    assert "report:" in output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 12
    assert {(r["sequence"], r["codec"], r["qp"]) for r in rows} == {
        (s, c, str(q)) for s in ("a_64x64", "b_64x64") for c, qs in
        (("toy", (22, 32, 42)), ("x265", (30, 38, 46))) for q in qs
    }  # fmt: skip
    for r in rows:
        assert float(r["kbps"]) == pytest.approx(int(r["bits"]) / N_FRAMES * 25 / 1000)
        assert r["ms_ssim"] == ""  # 64x64 is too small for MS-SSIM: unavailable, not faked
        assert 10 < float(r["psnr_rgb"]) < 60
    toy = [r for r in rows if r["codec"] == "toy"]
    for r in toy:  # every bit is accounted for
        split = int(r["keyframe_bits"]) + int(r["feature_bits"]) + int(r["overhead_bits"])
        assert split == int(r["bits"])
    jl = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(jl) == 12 and len(jl[0]["frames_metrics"]["psnr_y"]) == N_FRAMES

    table = json.loads((out / "bd_rate.json").read_text())
    assert {t["metric"] for t in table} == {"psnr_rgb", "psnr_y", "ssim"}
    for t in table:
        assert t["codec"] == "toy" and t["reference"] == "x265"
        assert set(t["per_sequence"]) == {"a_64x64", "b_64x64"}
        for seq, v in t["per_sequence"].items():
            assert (v is None) == (seq in t["notes"] and t["notes"][seq].startswith("BD-rate"))
    bd_csv = list(csv.DictReader((out / "bd_rate.csv").open()))
    assert len(bd_csv) == 3 and "bd_rate_mean_percent" in bd_csv[0]

    for m in ("psnr_rgb", "psnr_y", "ssim"):
        assert (out / "plots" / f"rd_{m}.png").read_bytes()[:4] == b"\x89PNG"
    for s in ("a_64x64", "b_64x64"):
        assert (out / "strips" / f"{s}__toy.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "BD-rate and BD-quality against x265" in report
    assert "![psnr_y](plots/rd_psnr_y.png)" in report
    assert "## Quality against rate" in report and "## Against x265 at equal rate" in report
    equal = list(csv.DictReader((out / "equal_rate.csv").open()))
    assert {r["metric"] for r in equal} == {"psnr_rgb", "psnr_y", "ssim"}
    assert {r["codec"] for r in equal} == {"toy"} and len(equal) == 3 * 3 * 1
    assert "`ms_ssim` unavailable" in report
    assert "12 of 12 runs" in report


def test_resume_skips_finished_runs_and_redoes_stale_ones(finished):
    cfg_path, out, _ = finished
    cfg = ctc.CtcConfig.load(cfg_path)
    seen: list[str] = []
    done, skipped, errors = ctc.run(cfg, out, on_result=lambda k, r, e: seen.append(k))
    assert (done, skipped, errors, seen) == (0, 12, [], [])

    (out / "runs" / "a_64x64__x265__qp38.json").unlink()
    (out / "runs" / "b_64x64__toy__qp22.json").write_text("{broken")
    done, skipped, errors = ctc.run(cfg, out, on_result=lambda k, r, e: seen.append(k))
    assert (done, skipped, errors) == (2, 10, [])
    assert sorted(seen) == ["a_64x64__x265__qp38", "b_64x64__toy__qp22"]

    # Results made with other settings are not reused (nor reported) under a changed config.
    d = yaml.safe_load(cfg_path.read_text())
    d["frames"] = 8
    changed = ctc.CtcConfig.from_dict(d)
    assert ctc.progress_of(changed, out) == (0, 12)
    with pytest.raises(InputError, match="no finished runs"):
        ctc.write_report(changed, out)


def test_shards_split_jobs_disjointly(seqs):
    cfg = ctc.CtcConfig.from_dict(config_dict(seqs))
    every = [j.key for j in ctc.jobs(cfg)]
    assert len(every) == 12 == len(set(every))
    for n in (1, 2, 3, 5, 12, 20):
        parts = [[j.key for j in ctc.jobs(cfg, (i, n))] for i in range(n)]
        flat = [k for p in parts for k in p]
        assert sorted(flat) == sorted(every) and len(flat) == len(set(flat))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert ctc.parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(InputError, match="shard"):
            ctc.parse_shard(bad)


def test_sharded_cli_run_writes_report_when_all_shards_are_done(tmp_path, seqs):
    d = config_dict(seqs[:1], codecs=[{"name": "x265", "type": "anchor", "qp": [30, 38, 46]}])
    d["metrics"] = ["psnr_y"]
    cfg = write_config(tmp_path, d)
    out = tmp_path / "out"
    first = run_cli("ctc", cfg, "-o", out, "--shard", "0/2", "-q")
    assert first.exit_code == 0, first.output
    assert "2 of 3 runs finished" in first.output and not (out / "report.md").exists()
    second = run_cli("ctc", cfg, "-o", out, "--shard", "1/2", "-q")
    assert second.exit_code == 0, second.output
    assert "report:" in second.output and (out / "report.md").exists()
    # no GFVC codec: no strips, but the RD plot and the CSV are there
    assert (out / "plots" / "rd_psnr_y.png").exists()
    assert len(list(csv.DictReader((out / "results.csv").open()))) == 3


def test_parallel_workers(tmp_path, seqs):
    """Two spawned worker processes (anchors only: the toy model lives in the test process)."""
    d = config_dict(seqs[:1], codecs=[{"name": "x265", "type": "anchor", "qp": [38, 46]}])
    d["metrics"] = ["psnr_y"]
    cfg = ctc.CtcConfig.from_dict(d)
    ticks: list[int] = []
    done, skipped, errors = ctc.run(cfg, tmp_path, workers=2, progress=ticks.append)
    assert (done, skipped, errors, len(ticks)) == (2, 0, [], 2)
    rows = ctc.load_rows(tmp_path, cfg)
    assert sorted(r["qp"] for r in rows) == [38, 46]


def test_failed_run_is_reported_and_others_finish(tmp_path, seqs):
    bad = tmp_path / "c_64x64.rgb"
    bad.write_bytes(b"\0" * (64 * 64 * 3))  # one frame: too short for a run
    d = config_dict([seqs[0], bad], codecs=[{"name": "x265", "type": "anchor", "qp": [46]}])
    d["metrics"] = ["psnr_y"]
    cfg = write_config(tmp_path, d)
    res = run_cli("ctc", cfg, "-o", tmp_path / "out", "-q")
    assert res.exit_code == 1
    assert "failed: c_64x64__x265__qp46" in res.output
    assert res.output.strip().splitlines()[-1].startswith("error: 1 of the runs failed")
    assert (tmp_path / "out" / "runs" / "a_64x64__x265__qp46.json").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("codecs"), "missing 'codecs'"),
        (lambda d: d.update(sequences="a.mp4"), "'sequences' must be a non-empty list"),
        (lambda d: d.update(metric=["psnr_y"]), "unknown key 'metric'"),
        (lambda d: d.update(metrics=["psnr", "ssim"]), "unknown metric 'psnr'"),
        (lambda d: d["codecs"][0].update(qp=["low"]), "list of integers"),
        (lambda d: d["codecs"][0].update(model="nosuch"), "unknown model 'nosuch'"),
        (lambda d: d["codecs"][1].update(codec="h264"), "unknown anchor codec 'h264'"),
        (lambda d: d["codecs"][1].update(qp=[30, 60]), "qp must be in [0, 51]"),
        (lambda d: d["codecs"][1].update(name="toy"), "codec name 'toy' is used twice"),
        (lambda d: d["codecs"][1].update(type="hevc"), "type must be 'gfvc' or 'anchor'"),
        (lambda d: d["codecs"][0].update(keyframe_qp=3), "unknown option 'keyframe_qp'"),
        (lambda d: d.update(reference="vvc"), "reference 'vvc' is not one of the codecs"),
        (lambda d: d.update(frames=1), "'frames' must be an integer >= 2"),
        (lambda d: d.update(size=100.5), "'size' must be an even integer"),
        (lambda d: d.update(sequences=[d["sequences"][0]] * 2), "two sequences are named"),
        (lambda d: d["codecs"][0].update(kbps=[4, 8]), "'qp' or 'kbps' rate points, not both"),
        (lambda d: d["codecs"][1].update(kbps=[4], qp=None), "'qp' must be a list"),
        (lambda d: d["codecs"][0].update(two_pass="no"), "'two_pass' must be true or false"),
    ],
)
def test_bad_config_is_one_line_error(tmp_path, seqs, edit, message):
    d = config_dict(seqs)
    edit(d)
    res = run_cli("ctc", write_config(tmp_path, d), "-o", tmp_path / "out")
    assert_one_line_error(res, message)
    assert not (tmp_path / "out").exists()


def test_rate_points_in_kbps_run_rate_control(seqs):
    d = config_dict(seqs)
    d["codecs"][0] = {"name": "toy", "type": "gfvc", "model": "toy", "kbps": [2, 8]}
    cfg = ctc.CtcConfig.from_dict(d)
    keys = [j.key for j in ctc.jobs(cfg) if j.codec.name == "toy"]
    assert keys == [
        "a_64x64__toy__kbps2",
        "a_64x64__toy__kbps8",
        "b_64x64__toy__kbps2",
        "b_64x64__toy__kbps8",
    ]
    assert all(j.by_rate for j in ctc.jobs(cfg) if j.codec.name == "toy")
    d["codecs"][0]["kbps"] = [0]
    with pytest.raises(InputError, match="kbps"):
        ctc.CtcConfig.from_dict(d)


def test_bad_config_files(tmp_path, seqs):
    assert_one_line_error(run_cli("ctc", tmp_path / "none.yaml"), "does not exist")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert_one_line_error(run_cli("ctc", bad), "not valid YAML")
    bad.write_text("- just\n- a list\n")
    assert_one_line_error(run_cli("ctc", bad), "must be a YAML mapping")
    d = config_dict(seqs)
    d["sequences"] = ["$GFVC_NO_SUCH_DIR/x_64x64.rgb"]
    res = run_cli("ctc", write_config(tmp_path, d), "-o", tmp_path / "out")
    assert_one_line_error(res, "set the environment variable GFVC_NO_SUCH_DIR")
    assert_one_line_error(
        run_cli("ctc", write_config(tmp_path, config_dict(seqs)), "-o", tmp_path / "o2",
                "--report-only"),
        "no results",
    )  # fmt: skip


def test_shipped_configs_load():
    root = Path(__file__).resolve().parents[1] / "configs"
    for name in ("ctc_example.yaml", "ctc_faces.yaml", "ctc_gfvc.yaml"):
        cfg = ctc.CtcConfig.load(root / name)
        assert cfg.bd_reference == "x265"
        assert all(len(c.qps) >= 3 for c in cfg.codecs)
    for p in sorted(root.glob("ctc_*.yaml")):  # VMAF and expression fidelity everywhere
        assert {"vmaf", "eye_err", "mouth_err"} <= set(ctc.CtcConfig.load(p).metrics), p.name
    ex = ctc.CtcConfig.load(root / "ctc_example.yaml")
    assert len(ex.sequences) == 2 and ex.frames == 100
    assert [(c.name, c.qps) for c in ex.codecs] == [("mesh", (22, 32, 42)), ("x265", (41, 46, 51))]


def test_default_metrics_include_vmaf_and_expression(seqs):
    d = config_dict(seqs)
    del d["metrics"]
    cfg = ctc.CtcConfig.from_dict(d)
    assert cfg.metrics == (
        "psnr_rgb", "psnr_y", "ssim", "ms_ssim", "lmd", "eye_err", "mouth_err", "vmaf",
    )  # fmt: skip


def test_expression_metrics_in_a_run_on_a_real_clip(tmp_path):
    """eye_err and mouth_err are recorded per run, go to the CSV, the BD table (lower is
    better), the plots and the report; a clip without a face records how many were skipped."""
    faceless = write_rgb(tmp_path / "flat_64x64.rgb", moving_frames(4, seed=3))
    d = config_dict(
        [clip("lp_d3.mp4"), faceless],
        frames=4,
        size=128,
        metrics=["psnr_y", "eye_err", "mouth_err"],
        codecs=[
            {"name": "x265", "type": "anchor", "qp": [30, 38, 46]},
            {"name": "x265b", "type": "anchor", "codec": "x265", "qp": [32, 40, 48]},
        ],
    )
    cfg = ctc.CtcConfig.from_dict(d)
    done, _, errors = ctc.run(cfg, tmp_path / "out")
    assert (done, errors) == (12, [])
    report = ctc.write_report(cfg, tmp_path / "out").read_text()
    rows = {(r["sequence"], r["codec"], r["qp"]): r for r in ctc.load_rows(tmp_path / "out", cfg)}
    real = rows[("lp_d3", "x265", 46)]
    assert 0 < real["eye_err"] < 0.2 and 0 <= real["mouth_err"] < 0.2
    assert len(real["frames_metrics"]["eye_err"]) == 4 and real["skipped"] == {}
    flat = rows[("flat_64x64", "x265", 46)]
    assert flat["eye_err"] is None and flat["skipped"] == {"eye_err": 4, "mouth_err": 4}
    header = (tmp_path / "out" / "results.csv").read_text().splitlines()[0].split(",")
    assert {"eye_err", "mouth_err"} <= set(header) and "skipped" not in header
    table = json.loads((tmp_path / "out" / "bd_rate.json").read_text())
    assert {t["metric"] for t in table} == {"psnr_y", "eye_err", "mouth_err"}
    assert "eye_err ↓" in report and "mouth_err ↓" in report
    assert "![eye_err](plots/rd_eye_err.png)" in report
    assert "`eye_err`: 24 frame pairs in 6 runs left out" in report


def _rows(seq: str, codec: str, rates, values, metric="psnr_y"):
    return [
        {"sequence": seq, "codec": codec, "qp": i, "kbps": r, metric: v}
        for i, (r, v) in enumerate(zip(rates, values, strict=True))
    ]


def test_bd_table_three_points_and_undefined_values():
    rates = [10.0, 20.0, 40.0]
    rows = (
        _rows("s1", "x265", rates, [30.0, 33.0, 36.0])
        + _rows("s1", "g", rates, [31.0, 34.0, 37.0])  # 1 dB better: -20.6 %
        + _rows("s2", "x265", rates, [30.0, 33.0, 36.0])
        + _rows("s2", "g", [r / 2 for r in rates], [30.0, 33.0, 36.0])  # half the rate: -50 %
    )
    (t,) = ctc.bd_table(rows, ("psnr_y",), "x265")
    assert t["per_sequence"]["s1"] == pytest.approx((2 ** (-1 / 3) - 1) * 100)
    assert t["per_sequence"]["s2"] == pytest.approx(-50.0)
    assert t["bd_rate_mean"] == pytest.approx(((2 ** (-1 / 3) - 1) * 100 - 50) / 2)
    assert t["bd_quality_per_sequence"]["s1"] == pytest.approx(1.0)
    assert t["sequences"] == "2/2" and t["notes"] == {}

    # A saturating GFVC curve: BD-rate undefined (with the reason), BD-quality still defined;
    # the mean BD-rate is not taken over the one sequence that has a value.
    rows += _rows("s3", "x265", rates, [30.0, 33.0, 36.0])
    rows += _rows("s3", "g", rates, [31.0, 32.0, 31.5])
    (t,) = ctc.bd_table(rows, ("psnr_y",), "x265")
    assert t["per_sequence"]["s3"] is None and "not monotonic" in t["notes"]["s3"]
    assert t["bd_quality_per_sequence"]["s3"] is not None
    assert t["bd_rate_mean"] is None and t["sequences"] == "2/3"
    assert t["bd_quality_mean"] is not None


def test_reference_crop_is_cached_and_shared(tmp_path, seqs):
    cfg = ctc.CtcConfig.from_dict(config_dict(seqs))
    a = ctc.reference_frames(cfg, seqs[0], tmp_path)
    assert a.shape == (N_FRAMES, 64, 64, 3)
    (cached,) = tmp_path.glob("a_64x64-*.npy")
    b = ctc.reference_frames(cfg, seqs[0], tmp_path)
    np.testing.assert_array_equal(a, b)
    assert list(tmp_path.glob("a_64x64-*.npy")) == [cached]


def test_new_fusion_weights_rerun_landmark_jobs(seqs, tmp_path, monkeypatch):
    """Results of a model with an enhancement layer depend on the fusion network too."""
    import gfvc.enhance

    d = config_dict(seqs)
    d["codecs"][0] = {"name": "lm", "type": "gfvc", "model": "landmark", "kbps": [16]}
    cfg = ctc.CtcConfig.from_dict(d)
    job = next(j for j in ctc.jobs(cfg) if j.codec.name == "lm")
    before = cfg.settings_id(job)
    other = tmp_path / "fusion.pt"
    other.write_bytes(gfvc.enhance.fusion_weights_path().read_bytes() + b"retrained")
    monkeypatch.setattr(gfvc.enhance, "fusion_weights_path", lambda: other)
    assert cfg.settings_id(job) != before


def test_bd_table_on_the_mean_curve_where_a_sequence_is_not_monotonic():
    rates = [10.0, 20.0, 40.0]
    rows = (
        _rows("s1", "x265", rates, [30.0, 33.0, 36.0])
        + _rows("s1", "g", [r / 2 for r in rates], [30.0, 33.0, 36.0])
        + _rows("s2", "x265", rates, [30.0, 33.0, 36.0])
        + _rows("s2", "g", [r / 2 for r in rates], [30.0, 33.0, 36.0])
    )
    (t,) = ctc.bd_table(rows, ("psnr_y",), "x265")
    assert t["bd_rate_mean_curve"] == pytest.approx(-50.0)  # half the rate in both
    assert "mean curve" not in t["notes"] and t["mean_curve_overlap"][0] == pytest.approx(1.0)
    # s2 falls back at its last point: its own BD-rate is undefined, the mean curve's is not
    rows = rows[:9] + _rows("s2", "g", [r / 2 for r in rates], [30.0, 33.5, 33.4])
    (t,) = ctc.bd_table(rows, ("psnr_y",), "x265")
    assert t["per_sequence"]["s2"] is None and t["bd_rate_mean"] is None
    assert t["bd_rate_mean_curve"] is not None and t["bd_rate_mean_curve"] < 0
    # both fall back: the mean curve is not monotonic either, and says so
    rows = rows[:3] + _rows("s1", "g", rates, [31.0, 34.0, 32.0]) + rows[6:]
    (t,) = ctc.bd_table(rows, ("psnr_y",), "x265")
    assert t["bd_rate_mean_curve"] is None and "not monotonic" in t["notes"]["mean curve"]


def test_equal_rate_table_and_setbacks():
    ref = _rows("s1", "x265", [10.0, 40.0], [0.5, 0.3], "id_dist")
    test = _rows("s1", "g", [5.0, 20.0, 30.0], [0.2, 0.45, 0.3], "id_dist")
    # the reference at 20 kbps: halfway in log-rate between 10 and 40 kbps
    assert ctc.value_at_rate(([10.0, 40.0], [0.5, 0.3]), 20.0) == pytest.approx(0.4)
    assert ctc.value_at_rate(([10.0, 40.0], [0.5, 0.3]), 50.0) is None  # no extrapolation
    t = {r["kbps"]: r for r in ctc.equal_rate_table(ref + test, ("id_dist",), "x265")}
    assert set(t) == {5.0, 20.0, 30.0}
    assert t[5.0]["reference_value"] is None and t[5.0]["better"] is None
    assert t[20.0]["delta"] == pytest.approx(0.05) and t[20.0]["better"] is False
    assert t[30.0]["better"] is True  # 0.3 against 0.5 - 0.2 log(3) / log(4), about 0.341
    assert t[30.0]["delta"] == pytest.approx(0.3 - (0.5 - 0.2 * np.log(3) / np.log(4)))
    # identity distance gets worse from 5 to 20 kbps: one setback, reported as such
    curve = ([5.0, 20.0, 30.0], [0.2, 0.45, 0.3])
    assert ctc.setbacks(curve, "id_dist") == [(5.0, 20.0, 0.2, 0.45)]
    assert ctc.setbacks(([5.0, 20.0], [30.0, 31.0]), "psnr_y") == []
    assert ctc.setbacks(([5.0, 20.0], [31.0, 30.0]), "psnr_y") == [(5.0, 20.0, 31.0, 30.0)]
