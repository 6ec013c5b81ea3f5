"""Official GFVC models (FOMM, CFTE, FV2V, DAC, HDAC, RDAC): checkpoint layout, checkpoint
loading, golden-file conformance and the MotionModel round trip.

Layout and conformance tests need the shared reference data (manifests and golden files);
they skip with a reason when ``../shared`` is absent. The loader tests are self-contained.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import golden_checkpoint

from gfvc.errors import CheckpointError, InputError
from gfvc.models.official.base import OfficialModel, load_config
from gfvc.models.official.cfte import CfteModel
from gfvc.models.official.dac import DacModel
from gfvc.models.official.fomm import FommModel
from gfvc.models.official.fv2v import Fv2vModel
from gfvc.models.official.hdac import HdacModel
from gfvc.models.official.rdac import RdacModel, remap_compressai_keys

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MANIFESTS = SHARED / "reference" / "checkpoint_layouts"
GOLDEN = SHARED / "reference" / "golden"

FAMILIES: dict[str, type[OfficialModel]] = {
    "FOMM": FommModel,
    "CFTE": CfteModel,
    "FV2V": Fv2vModel,
    "DAC": DacModel,
    "HDAC": HdacModel,
    "RDAC": RdacModel,
}


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(1)


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared reference data not present: {path}")
    return path


def _golden(model: str) -> dict[str, Any]:
    return torch.load(_need(GOLDEN / f"{model}.pt"), weights_only=True)


# --------------------------------------------------------------------------- layout
@pytest.mark.parametrize("model", list(FAMILIES))
def test_layout_matches_manifest(model: str) -> None:
    """Names, kinds, shapes, dtypes and order of every state_dict entry (full-size config)."""
    manifest = json.loads(_need(MANIFESTS / f"{model}.json").read_text())
    cls = FAMILIES[model]
    assert tuple(manifest["checkpoint_top_level_keys"]) == tuple(n for n in manifest["modules"])
    assert set(cls.module_names) == set(manifest["checkpoint_top_level_keys"])
    with torch.device("meta"):
        nets = cls.networks_for({"model_params": manifest["config"]}["model_params"])
    for name, spec in manifest["modules"].items():
        net = nets[name]
        params = {k for k, _ in net.named_parameters()}
        ours = [
            [
                k,
                "param" if k in params else "buffer",
                list(v.shape),
                str(v.dtype).removeprefix("torch."),
            ]
            for k, v in net.state_dict().items()
        ]
        assert ours == spec["state_dict_order"], f"{model}.{name} layout differs"
        assert sum(p.numel() for p in net.parameters()) == spec["num_params"]


def test_packaged_configs_equal_manifests() -> None:
    for model, cls in FAMILIES.items():
        manifest = json.loads(_need(MANIFESTS / f"{model}.json").read_text())
        assert load_config(None, cls.family) == manifest["config"]


# --------------------------------------------------------------------------- loader
def _tiny_fomm_params() -> dict[str, Any]:
    params = load_config(None, "fomm")
    params["kp_detector_params"].update(block_expansion=4, max_features=16)
    params["generator_params"].update(block_expansion=4, max_features=16)
    params["generator_params"]["dense_motion_params"].update(block_expansion=4, max_features=16)
    return params


@pytest.fixture(scope="module")
def tiny_fomm() -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    torch.manual_seed(0)
    params = _tiny_fomm_params()
    nets = FommModel.networks_for(params)
    return params, {k: copy.deepcopy(v.state_dict()) for k, v in nets.items()}


def _write(tmp_path: Path, params: dict[str, Any], ckpt: Any) -> tuple[str, str]:
    cfg = tmp_path / "fomm-256.yaml"
    cfg.write_text(yaml.safe_dump({"model_params": params}))
    path = tmp_path / "FOMM-checkpoint.pth.tar"
    torch.save(ckpt, path)
    return str(path), str(cfg)


def test_loader_accepts_official_layout_with_training_extras(
    tmp_path: Path, tiny_fomm: Any
) -> None:
    params, states = tiny_fomm
    ckpt = {
        **states,
        "epoch": np.int64(7),  # numpy scalars are data: allowed
        "optimizer_generator": {"state": {}, "param_groups": [{"lr": 2e-4}]},
    }
    del ckpt["generator"]["first.norm.num_batches_tracked"]  # tolerated, as torch does
    path, cfg = _write(tmp_path, params, ckpt)
    model = FommModel.create(checkpoint=path, config=cfg)
    assert torch.equal(
        model.nets["generator"].state_dict()["final.weight"], states["generator"]["final.weight"]
    )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("missing", "missing    generator.first.conv.weight [4,3,7,7]"),
        ("unexpected", "unexpected kp_detector.extra.weight [2]"),
        ("shape", "mis-shaped kp_detector.kp.bias: checkpoint [11], model [10]"),
        ("toplevel", "top-level entries ['generator'] are missing"),
    ],
)
def test_loader_reports_each_bad_key(
    tmp_path: Path, tiny_fomm: Any, edit: str, expected: str
) -> None:
    params, states = tiny_fomm
    ckpt = copy.deepcopy(states)
    if edit == "missing":
        del ckpt["generator"]["first.conv.weight"]
    elif edit == "unexpected":
        ckpt["kp_detector"]["extra.weight"] = torch.zeros(2)
    elif edit == "shape":
        ckpt["kp_detector"]["kp.bias"] = torch.zeros(11)
    else:
        del ckpt["generator"]
    path, cfg = _write(tmp_path, params, ckpt)
    with pytest.raises(CheckpointError) as info:
        FommModel.create(checkpoint=path, config=cfg)
    assert expected in str(info.value)


def test_loader_strips_module_prefix(tmp_path: Path, tiny_fomm: Any) -> None:
    params, states = tiny_fomm
    ckpt = {name: {f"module.{k}": v for k, v in sd.items()} for name, sd in states.items()}
    path, cfg = _write(tmp_path, params, ckpt)
    model = FommModel.create(checkpoint=path, config=cfg)
    assert torch.equal(
        model.nets["kp_detector"].state_dict()["kp.weight"], states["kp_detector"]["kp.weight"]
    )


@dataclass
class _TrainingArgs:  # a class that unpickling would have to import and run
    lr: float = 2e-4


def test_loader_refuses_pickles_that_need_code(tmp_path: Path, tiny_fomm: Any) -> None:
    params, states = tiny_fomm
    path, cfg = _write(tmp_path, params, {**states, "args": _TrainingArgs()})
    with pytest.raises(CheckpointError, match="would have to run code"):
        FommModel.create(checkpoint=path, config=cfg)


def test_create_needs_checkpoint_and_existing_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        FommModel.create()
    with pytest.raises(CheckpointError, match="does not exist"):
        FommModel.create(checkpoint=str(tmp_path / "nope.pth.tar"))


def test_rdac_compressai_key_remap() -> None:
    state = {
        "sdc.entropy_bottleneck.matrices.0": torch.zeros(1),
        "sdc.entropy_bottleneck.biases.4": torch.zeros(1),
        "tdc.entropy_bottleneck.factors.3": torch.zeros(1),
        "first.conv.weight": torch.zeros(1),
    }
    assert sorted(remap_compressai_keys(state)) == [
        "first.conv.weight",
        "sdc.entropy_bottleneck._bias4",
        "sdc.entropy_bottleneck._matrix0",
        "tdc.entropy_bottleneck._factor3",
    ]


# --------------------------------------------------------------------------- conformance
@pytest.mark.parametrize("model", list(FAMILIES))
def test_golden_conformance(model: str) -> None:
    """Every output of the golden file (analysis on frames 0, 1 and 10 to keep it short)."""
    from gfvc.models.official.conformance import run_conformance

    report = run_conformance(_need(GOLDEN / f"{model}.pt"), analysis_frames=[0, 1, 10])
    assert report.model == model
    assert report.passed, {k: report.max_abs_diff[k] for k in report.failures}
    for exact in ("coded_residual", "coded_rec_features_flat", "coded_bytes", "dec_features_flat"):
        assert report.max_abs_diff[exact] == 0.0
    assert report.max_abs_diff["enc_features_flat"] <= 1e-4
    assert report.max_abs_diff["synth_prediction"] <= 1e-4
    json.dumps(report.to_json())


def test_winograd_convolution_matches_direct() -> None:
    """The Winograd F(4x4, 3x3) form of a wide 3x3 convolution equals the direct one to float
    rounding (a few 1e-5 relative)."""
    import torch.nn.functional as F

    from gfvc.models.official.layers import Winograd3x3

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 128, 64, 64, generator=gen).relu_()
    w = torch.randn(96, 128, 3, 3, generator=gen) / (9 * 128) ** 0.5
    b = torch.randn(96, generator=gen)
    conv = Winograd3x3.of(w, b)
    assert conv.applies(x) and not conv.applies(x[..., :62, :62])
    ref = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    assert (conv(x).double() - ref).abs().max().item() < 2e-5 * ref.abs().max().item()


def test_winograd_3d_convolution_matches_direct() -> None:
    """The 3-D form (Winograd over H and W, the 3 depth taps summed directly) equals the direct
    3x3x3 convolution to float rounding, from channels-first or channels-last input."""
    import torch.nn.functional as F

    from gfvc.models.official.layers import Winograd3x3

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 24, 5, 8, 12, generator=gen).relu_()
    w = torch.randn(64, 24, 3, 3, 3, generator=gen) / (27 * 24) ** 0.5
    b = torch.randn(64, generator=gen)
    conv = Winograd3x3.of(w, b)
    assert conv.applies(x) and not conv.applies(x[..., :6]) and not conv.applies(x[:, :, 0])
    assert not Winograd3x3.of(w[:32], b[:32]).applies(x)  # too narrow an output
    ref = F.conv3d(x.double(), w.double(), b.double(), padding=1)
    for inp in (x, x.contiguous(memory_format=torch.channels_last_3d)):
        out = conv(inp)
        assert out.shape == ref.shape
        assert (out.double() - ref).abs().max().item() < 2e-5 * ref.abs().max().item()


def test_depth_folded_convolution_matches_direct() -> None:
    """FV2V's occlusion convolution (a 2-D conv of the (C*D)-channel view of a volume) as
    per-plane matrix products and a fold equals the direct one to float rounding."""
    import torch.nn.functional as F

    from gfvc.models.official.fv2v import DepthFoldedConv2d

    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(6 * 4, 2, kernel_size=5, padding=2)
    x = torch.randn(1, 6, 4, 10, 12, generator=gen)
    fast = DepthFoldedConv2d.of(conv, depth=4)
    assert fast.applies(x) and not fast.applies(x[:, :, :3])
    with torch.no_grad():
        ref = F.conv2d(
            x.double().reshape(1, 24, 10, 12), conv.weight.double(), conv.bias.double(), padding=2
        )
        assert (fast(x).double() - ref).abs().max().item() < 1e-5 * ref.abs().max().item()


def test_channels_last_pooling_is_exact() -> None:
    from gfvc.models.official.layers import avg_pool_hw2_channels_last

    x = torch.randn(1, 5, 3, 8, 6).contiguous(memory_format=torch.channels_last_3d)
    out = avg_pool_hw2_channels_last(x)
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(out, torch.nn.functional.avg_pool3d(x, kernel_size=(1, 2, 2)))


def test_fft_convolution_matches_direct() -> None:
    """FV2V's 7x7x7 mask convolution by tiled FFT equals the direct one to float rounding."""
    import torch.nn.functional as F

    from gfvc.models.official.fv2v import FftConv3d

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 12, 16, 40, 44, generator=gen).relu_()
    w = torch.randn(5, 12, 7, 7, 7, generator=gen) / (343 * 12) ** 0.5
    b = torch.randn(5, generator=gen)
    conv = FftConv3d.of(w, b, depth=16, n=24)
    assert conv.applies(x) and not conv.applies(torch.zeros(1, 12, 20, 8, 8))
    ref = F.conv3d(x.double(), w.double(), b.double(), padding=3)
    assert (conv(x).double() - ref).abs().max().item() < 1e-5 * ref.abs().max().item()


@pytest.mark.parametrize("model", ["FOMM", "CFTE", "FV2V"])
def test_golden_conformance_with_winograd_everywhere(
    model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The golden networks are too narrow for the Winograd form; forced on, it still conforms."""
    from gfvc.models.official import layers
    from gfvc.models.official.conformance import run_conformance

    monkeypatch.setattr(layers, "WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(layers, "WINOGRAD_MIN_PIXELS", 1)
    monkeypatch.setattr(layers, "WINOGRAD_3D_MIN_OUT_CHANNELS", 1)
    report = run_conformance(_need(GOLDEN / f"{model}.pt"), analysis_frames=[0])
    assert report.passed, {k: report.max_abs_diff[k] for k in report.failures}


def test_conformance_needs_inputs_file(tmp_path: Path) -> None:
    from gfvc.models.official.conformance import run_conformance

    src = _need(GOLDEN / "FOMM.pt")
    (tmp_path / "FOMM.pt").write_bytes(src.read_bytes())
    with pytest.raises(InputError, match="inputs file"):
        run_conformance(tmp_path / "FOMM.pt")


# --------------------------------------------------------------------------- MotionModel
@pytest.mark.parametrize("model", ["FOMM", "CFTE", "FV2V", "DAC", "RDAC"])
def test_motion_model_round_trip(tmp_path: Path, model: str) -> None:
    path, cfg, g, frames = golden_checkpoint(tmp_path, model)
    m = FAMILIES[model].create(checkpoint=path, config=cfg)
    assert m.send_key_feature is False and m.dim == g["enc_features_flat"].shape[1]
    key = np.ascontiguousarray(frames[0])
    key_feat = m.analyse_key(key)
    assert key_feat.dtype == np.float64 and key_feat.shape == (m.dim,)
    calls = []
    encode_key = m.encode_key
    m.encode_key = lambda *a: calls.append(1) or encode_key(*a)  # type: ignore[method-assign]
    for t in (1, 2):
        feat = m.analyse(frames[t])
        assert np.abs(feat - g["enc_features_flat"][t].numpy()).max() < 1e-4
        out = m.synthesize(key, key_feat, feat)
        assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    assert len(calls) == 1, "the key-frame encoding must be cached across frames"
    assert (
        m.weights_digest() == FAMILIES[model].create(checkpoint=path, config=cfg).weights_digest()
    )
    assert json.dumps(m.config_dict())


def test_synthesize_rounds_and_exposes_raw_output(tmp_path: Path) -> None:
    path, cfg, g, frames = golden_checkpoint(tmp_path, "FOMM")
    m = FommModel.create(checkpoint=path, config=cfg)
    key = np.ascontiguousarray(frames[0])
    kf, f = m.analyse_key(key), m.analyse(frames[3])
    raw = (
        m.synthesize_tensor(key, m.from_vector(kf), m.from_vector(f))
        .prediction[0]
        .permute(1, 2, 0)
        .numpy()
    )
    out = m.synthesize(key, kf, f)
    assert np.array_equal(out, np.clip(np.rint(raw * 255), 0, 255).astype(np.uint8))


def test_hdac_needs_base_layer(tmp_path: Path) -> None:
    path, cfg, g, frames = golden_checkpoint(tmp_path, "HDAC")
    m = HdacModel.create(checkpoint=path, config=cfg)
    key = np.ascontiguousarray(frames[0])
    kf, f = m.analyse_key(key), m.analyse(frames[1])
    with pytest.raises(InputError, match="base-layer"):
        m.synthesize(key, kf, f)
    m.set_base_layer(frames[1])
    assert m.synthesize(key, kf, f).shape == (256, 256, 3)


def test_fomm_reference_variants_are_options(tmp_path: Path) -> None:
    path, cfg, g, frames = golden_checkpoint(tmp_path, "FOMM")
    key = np.ascontiguousarray(frames[0])
    outs = []
    for opts in (
        {},
        {"swap_keypoints": True},
        {"legacy_dense_motion": True, "align_corners": True},
    ):
        m = FommModel.create(checkpoint=path, config=cfg, options=opts)
        assert m.config_dict()["options"]["swap_keypoints"] == opts.get("swap_keypoints", False)
        outs.append(m.synthesize(key, m.analyse_key(key), m.analyse(frames[5])))
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])
    with pytest.raises(CheckpointError, match="unknown FommOptions"):
        FommModel.create(checkpoint=path, config=cfg, options={"no_such_option": 1})


def test_channels_last_is_numerically_equivalent(tmp_path: Path) -> None:
    path, cfg, g, frames = golden_checkpoint(tmp_path, "DAC")
    m = DacModel.create(checkpoint=path, config=cfg)
    key = np.ascontiguousarray(frames[0])
    kf, f = m.analyse_key(key), m.analyse(frames[4])
    ref = m.synthesize_tensor(key, m.from_vector(kf), m.from_vector(f)).prediction
    m.set_channels_last()
    assert np.abs(m.analyse(frames[4]) - f).max() < 1e-5
    out = m.synthesize_tensor(key, m.from_vector(kf), m.from_vector(f)).prediction
    assert (out - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("model", ["FOMM", "CFTE", "FV2V"])
def test_cli_round_trip_with_official_layout_checkpoint(tmp_path: Path, model: str) -> None:
    """`gfvc encode --model M --checkpoint --config` then `gfvc decode` on real frames."""
    from fractions import Fraction

    from typer.testing import CliRunner

    from gfvc.cli import app
    from gfvc.io import VideoReader, VideoWriter

    path, cfg, _, frames = golden_checkpoint(tmp_path, model)
    src = tmp_path / "in.rgb"
    with VideoWriter(src, fps=Fraction(25), width=256, height=256) as w:
        for f in frames[:4]:
            w.write(np.ascontiguousarray(f))
    gfv, out = tmp_path / "x.gfv", tmp_path / "x.y4m"
    common = ["--checkpoint", path, "--config", cfg]
    r = CliRunner().invoke(
        app,
        [
            "encode",
            str(src),
            "-o",
            str(gfv),
            "--model",
            model.lower(),
            "--size",
            "256x256",
            "--no-crop",
            "-q",
            *common,
        ],
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["decode", str(gfv), "-o", str(out), "-q", *common])
    assert r.exit_code == 0, r.output
    with VideoReader(out) as rd:
        assert sum(1 for _ in rd) == 4
    # decoding with another model configuration is refused, not decoded into garbage
    r = CliRunner().invoke(app, ["decode", str(gfv), "-o", str(tmp_path / "y.y4m"), "-q"])
    assert r.exit_code != 0 and r.output.startswith("error: ")


def test_separable_gaussian_matches_voxelwise() -> None:
    from gfvc.models.official.geometry import keypoints_to_gaussian, separable_gaussian

    gen = torch.Generator().manual_seed(0)
    for shape, spatial in (((1, 15, 3), (6, 16, 20)), ((2, 10, 2), (20, 30))):
        mean = torch.rand(*shape, generator=gen) * 2 - 1
        fast, ref = (
            separable_gaussian(mean, spatial, 0.01),
            keypoints_to_gaussian(mean, spatial, 0.01),
        )
        assert fast.shape == ref.shape and (fast - ref).abs().max().item() < 1e-6


def test_3d_hourglass_shared_winograd_input_matches_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The inference form that transforms the hourglass input once for its first and final
    convolutions equals the reference form to float rounding."""
    from gfvc.models.official import layers

    monkeypatch.setattr(layers, "WINOGRAD_3D_MIN_OUT_CHANNELS", 1)
    torch.manual_seed(0)
    hg = layers.Hourglass(4, 6, num_blocks=2, max_features=16, dims=3, final_conv=True).eval()
    for m in hg.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(1, 6, 3, 16, 16)
    with torch.no_grad():
        ref = hg(x)
        layers.fuse_for_inference(hg, True)
        calls = []
        shared = hg._forward_shared
        hg._forward_shared = lambda *a: calls.append(1) or shared(*a)  # type: ignore[method-assign]
        out = hg(x)
    assert calls and out.shape == ref.shape
    assert (out - ref).abs().max().item() < 1e-5 * ref.abs().max().item()
