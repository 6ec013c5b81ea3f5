"""Conformance of gfvc's official-model implementations against golden reference files.

A golden file (``FOMM.pt``, ``CFTE.pt`` ... see ``shared/reference/golden/README.md``) holds a
small, seeded instance of an official model (config + state dict in the official checkpoint
layout), the reference software's outputs for 30 frames, and the name of its inputs file (which
must lie in the same folder). :func:`run_conformance` rebuilds the model from the file alone,
re-runs everything the file records and compares:

* analysis features of every frame (and the raw network outputs the file stores);
* the reference closed-loop DPCM on the stored features (exact integers, exact float64
  reconstruction), the coded bytes of every frame (exact), their decoding, the bit counts;
* the synthesis of the stored driving frame from the stored inputs: the prediction and every
  intermediate map the file holds, plus the reference's written uint8 frame (truncation).

Tolerances (:data:`TOLERANCES`): 1e-4 for features, keypoints and the predicted frame; 5e-4
for intermediate maps (FV2V's 3-D dense motion reproduces its occlusion map to ~1.2e-4, the
golden README itself expects 1e-5..1e-4 there); 1 level for the written uint8 frame; exact for
integers and bytes. The function is pure: it returns a report and prints nothing.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gfvc.errors import InputError
from gfvc.features.reference_coder import decode_frame, encode_frame, reference_dpcm_loop
from gfvc.models.official.base import OfficialModel, params_from_config_dict, tensor_to_frame

__all__ = ["TOLERANCES", "ConformanceReport", "run_conformance"]

#: Golden ``model`` name -> "module:class" (imported directly, so conformance does not depend
#: on every other model family importing cleanly).
FAMILY_CLASSES: dict[str, str] = {
    "FOMM": "gfvc.models.official.fomm:FommModel",
    "CFTE": "gfvc.models.official.cfte:CfteModel",
    "FV2V": "gfvc.models.official.fv2v:Fv2vModel",
    "DAC": "gfvc.models.official.dac:DacModel",
    "HDAC": "gfvc.models.official.hdac:HdacModel",
    "RDAC": "gfvc.models.official.rdac:RdacModel",
}

#: Tolerance per kind of output (absolute).
TOLERANCES: dict[str, float] = {
    "feature": 1e-4,
    "frame": 1e-4,
    "map": 5e-4,
    "uint8": 1.0,
    "exact": 0.0,
}


@dataclass
class ConformanceReport:
    """Result of :func:`run_conformance`.

    ``max_abs_diff``: golden key -> max |ours - reference| (bytes: max byte difference, inf if a
    length differs). ``tolerance``: golden key -> the tolerance it was judged with.
    ``failures``: the keys above tolerance. ``notes``: what was not checked and why.
    """

    model: str
    passed: bool
    max_abs_diff: dict[str, float]
    tolerance: dict[str, float]
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Checker:
    """Collects comparisons; keeps the report logic in one place."""

    def __init__(self) -> None:
        self.diff: dict[str, float] = {}
        self.tol: dict[str, float] = {}
        self.notes: list[str] = []

    def values(self, key: str, ours: Any, ref: Any, kind: str) -> None:
        a = _as_f64(ours)
        b = _as_f64(ref)
        if a.shape != b.shape:
            self.diff[key] = float("inf")
            self.notes.append(f"{key}: shape {a.shape} vs reference {b.shape}")
        else:
            self.diff[key] = float(np.max(np.abs(a - b))) if a.size else 0.0
        self.tol[key] = TOLERANCES[kind]

    def byte_lists(self, key: str, ours: Sequence[bytes], ref: Sequence[bytes]) -> None:
        worst = 0.0
        if len(ours) != len(ref):
            worst = float("inf")
        for a, b in zip(ours, ref, strict=False):
            if len(a) != len(b):
                worst = float("inf")
            elif a != b:
                worst = max(
                    worst,
                    float(
                        np.max(
                            np.abs(
                                np.frombuffer(a, np.uint8).astype(int) - np.frombuffer(b, np.uint8)
                            )
                        )
                    ),
                )
        self.diff[key] = worst
        self.tol[key] = 0.0

    def report(self, model: str) -> ConformanceReport:
        failures = [k for k, v in self.diff.items() if not v <= self.tol[k]]
        return ConformanceReport(model, not failures, self.diff, self.tol, failures, self.notes)


def _as_f64(x: Any) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _bytes(t: Any) -> bytes:
    return bytes(t.tolist()) if torch.is_tensor(t) else bytes(t)


# --------------------------------------------------------------------------- loading
def load_golden(path: str | Path) -> tuple[dict[str, Any], np.ndarray]:
    """Read a golden file and its inputs file (same folder); frames as (T, H, W, 3) uint8."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"golden file {path} does not exist")
    golden = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(golden, dict) or "model" not in golden or "state_dict" not in golden:
        raise InputError(f"{path} is not a gfvc golden conformance file")
    inputs_path = path.parent / str(golden.get("inputs_file", ""))
    if not inputs_path.is_file():
        raise InputError(
            f"{path.name} needs its inputs file {inputs_path.name} in the same folder ({path.parent})"
        )
    inputs = torch.load(inputs_path, map_location="cpu", weights_only=True)
    frames_chw = inputs["frames_uint8"].numpy()
    expected = golden.get("inputs_sha256")
    if (
        expected
        and hashlib.sha256(np.ascontiguousarray(frames_chw).tobytes()).hexdigest() != expected
    ):
        raise InputError(f"{inputs_path.name} does not have the SHA-256 that {path.name} records")
    return golden, np.ascontiguousarray(frames_chw.transpose(0, 2, 3, 1))


def build_model(golden: dict[str, Any]) -> OfficialModel:
    """Model of the golden file's family, from its config and state dict, reference options."""
    name = str(golden["model"])
    if name not in FAMILY_CLASSES:
        raise InputError(
            f"golden model {name!r} is not supported; supported: {', '.join(FAMILY_CLASSES)}"
        )
    module, cls_name = FAMILY_CLASSES[name].split(":")
    cls: type[OfficialModel] = getattr(importlib.import_module(module), cls_name)
    options = {"rounding": "truncate"}
    return cls(
        params_from_config_dict(golden["config"]),
        golden["state_dict"],
        options=options,
        source="golden file",
    )


# --------------------------------------------------------------------------- common checks
def _check_analysis(
    ck: _Checker,
    model: OfficialModel,
    golden: dict[str, Any],
    frames: np.ndarray,
    which: Sequence[int],
) -> np.ndarray:
    """Features of the selected frames; frame 0 (key) uses the key-frame path and layout."""
    ours = np.stack(
        [model.analyse_key(frames[t]) if t == 0 else model.analyse(frames[t]) for t in which]
    )
    ck.values(
        "enc_features_flat", ours, golden["enc_features_flat"].numpy()[list(which)], "feature"
    )
    return ours


def _check_coding(ck: _Checker, golden: dict[str, Any], own_features: np.ndarray | None) -> None:
    q = float(golden["qstep"])
    feats = golden["enc_features_flat"].numpy()
    key_frames = list(golden.get("key_frames", [0]))
    key_feats = golden["key_features_flat"].numpy() if "key_features_flat" in golden else None
    loop = reference_dpcm_loop(feats, q, key_frames, key_feats)
    ck.values("coded_residual", loop.residual, golden["coded_residual"].numpy(), "exact")
    ck.values(
        "coded_rec_features_flat",
        loop.reconstruction,
        golden["coded_rec_features_flat"].numpy(),
        "exact",
    )
    coded = [encode_frame(r.tolist()) for r in loop.residual]
    ck.byte_lists("coded_bytes", coded, [_bytes(b) for b in golden["coded_bytes"]])
    ck.values("coded_bits", [8 * len(b) for b in coded], golden["coded_bits"].numpy(), "exact")
    decoded = np.array(
        [decode_frame(_bytes(b), feats.shape[1]) for b in golden["coded_bytes"]], dtype=np.int64
    )
    ck.values("decoded_residual", decoded, golden["coded_residual"].numpy(), "exact")
    # The decoder's reconstruction: key analysis at key frames, else previous + r / Q.
    sent = golden["coded_sent"].numpy() if "coded_sent" in golden else np.ones(len(decoded), bool)
    dec = np.zeros_like(feats)
    dec[0] = feats[0] if key_feats is None else key_feats[0]
    for t in range(1, len(feats)):
        if t in key_frames:
            dec[t] = key_feats[key_frames.index(t)]
        else:
            dec[t] = dec[t - 1] + decoded[t - 1] / q
    if golden["model"] in ("DAC", "HDAC", "RDAC"):  # the updated software's decoder uses float32
        dec = dec.astype(np.float32).astype(np.float64)
    ck.values("dec_features_flat", dec, golden["dec_features_flat"].numpy(), "exact")
    total = sum(8 * len(b) for b, s in zip(coded, sent, strict=True) if s)
    if "metadata_values" in golden:
        meta = encode_frame(list(golden["metadata_values"]))
        ck.byte_lists("metadata_bytes", [meta], [_bytes(golden["metadata_bytes"])])
        total += 8 * len(meta)
    if "res_bits" in golden:
        total = None  # RDAC's sum also holds residual bits and flag metadata (checked separately)
    if total is not None:
        ck.values("coded_sum_bits_reported", [total], [golden["coded_sum_bits_reported"]], "exact")
    if own_features is not None and len(own_features) == len(feats):
        own = reference_dpcm_loop(own_features, q, key_frames, key_feats)
        n = int(np.sum(own.residual != loop.residual))
        ck.notes.append(
            f"DPCM on gfvc's own features: {n} of {own.residual.size} residuals differ from the reference "
            "(informational: rounding at Qstep can flip on ~1e-6 feature differences)"
        )


def _check_written(
    ck: _Checker, model: OfficialModel, prediction: torch.Tensor, golden: dict[str, Any]
) -> None:
    ck.values("synth_prediction", prediction, golden["synth_prediction"], "frame")
    written = tensor_to_frame(prediction, "truncate").transpose(2, 0, 1)
    ck.values("synth_written_uint8", written, golden["synth_written_uint8"].numpy(), "uint8")


# --------------------------------------------------------------------------- families
def _fomm(
    ck: _Checker, model: Any, golden: dict[str, Any], frames: np.ndarray, which: Sequence[int]
) -> np.ndarray:
    from gfvc.models.official.fomm import Keypoints2d

    feats = _check_analysis(ck, model, golden, frames, which)
    split = model.split_vector(feats)
    ck.values("enc_value", split["keypoints"], golden["enc_value"].numpy()[list(which)], "feature")
    ck.values(
        "enc_jacobian", split["jacobians"], golden["enc_jacobian"].numpy()[list(which)], "feature"
    )
    key = model.from_vector(model.analyse_key(frames[0]))
    ck.values("synth_kp_source_value", key.value, golden["synth_kp_source_value"], "feature")
    ck.values(
        "synth_kp_source_jacobian", key.jacobian, golden["synth_kp_source_jacobian"], "feature"
    )
    drv = model.from_vector(golden["dec_features_flat"][golden["synth_driving_frame"]].numpy())
    ck.values("synth_kp_driving_value", drv.value, golden["synth_kp_driving_value"], "exact")
    ck.values(
        "synth_kp_driving_jacobian", drv.jacobian, golden["synth_kp_driving_jacobian"], "exact"
    )
    src = Keypoints2d(golden["synth_kp_source_value"], golden["synth_kp_source_jacobian"])
    cur = Keypoints2d(golden["synth_kp_driving_value"], golden["synth_kp_driving_jacobian"])
    out = model.synthesize_tensor(
        frames[golden["synth_source_image_frame"]], src, cur, intermediates=True
    )
    for name in ("mask", "sparse_deformed", "occlusion_map", "deformation", "deformed"):
        ck.values(f"synth_{name}", getattr(out, name), golden[f"synth_{name}"], "map")
    _check_written(ck, model, out.prediction, golden)
    return feats


def _cfte(
    ck: _Checker, model: Any, golden: dict[str, Any], frames: np.ndarray, which: Sequence[int]
) -> np.ndarray:
    feats = _check_analysis(ck, model, golden, frames, which)
    ck.values(
        "enc_value",
        feats.reshape(len(which), *golden["enc_value"].shape[1:]),
        golden["enc_value"].numpy()[list(which)],
        "feature",
    )
    ck.values(
        "synth_feat_source_value",
        model.from_vector(model.analyse_key(frames[0])),
        golden["synth_feat_source_value"],
        "feature",
    )
    drv = model.from_vector(golden["dec_features_flat"][golden["synth_driving_frame"]].numpy())
    ck.values("synth_feat_driving_value", drv, golden["synth_feat_driving_value"], "exact")
    out = model.synthesize_tensor(
        frames[golden["synth_source_image_frame"]],
        golden["synth_feat_source_value"],
        golden["synth_feat_driving_value"],
        intermediates=True,
    )
    for name in ("occlusion_map", "deformation", "sparse_deformed", "sparse_motion", "deformed"):
        ck.values(f"synth_{name}", getattr(out, name), golden[f"synth_{name}"], "map")
    _check_written(ck, model, out.prediction, golden)
    return feats


def _fv2v(
    ck: _Checker, model: Any, golden: dict[str, Any], frames: np.ndarray, which: Sequence[int]
) -> np.ndarray:
    idx = list(which)
    results = [
        model.analyse_tensor(
            model.frame_tensor(frames[t], "contiguous" if t == 0 else "channels_last_view")
        )
        for t in idx
    ]
    feats = np.stack([model.to_vector(pose) for _, pose in results])
    ck.values("enc_features_flat", feats, golden["enc_features_flat"].numpy()[idx], "feature")
    split = model.split_vector(feats)
    ck.values(
        "enc_rot_mat",
        split["rotation"].reshape(-1, 3, 3),
        golden["enc_rot_mat"].numpy()[idx],
        "feature",
    )
    ck.values("enc_t", split["translation"], golden["enc_t"].numpy()[idx], "feature")
    ck.values(
        "enc_exp",
        split["expression"].reshape(len(idx), -1),
        golden["enc_exp"].numpy()[idx],
        "feature",
    )
    for name in ("yaw", "pitch", "roll", "t", "exp"):
        # The angle logits are large numbers whose softmax is what matters: tolerance 1e-3.
        ck.values(
            f"he_{name}",
            torch.cat([getattr(he, name) for he, _ in results]),
            golden[f"he_{name}"][idx],
            "feature",
        )
        if name in ("yaw", "pitch", "roll"):
            ck.tol[f"he_{name}"] = 1e-3
    key = model.key_encoding(frames[golden["synth_source_image_frame"]])
    ck.values(
        "dec_kp_canonical_value", key.kp_canonical, golden["dec_kp_canonical_value"], "feature"
    )
    ck.values("synth_kp_source_value", key.kp_source, golden["synth_kp_source_value"], "feature")
    pose = model.from_vector(golden["dec_features_flat"][golden["synth_driving_frame"]].numpy())
    ck.values("dec_rot_mat_frame", pose.rot, golden["dec_rot_mat_frame"], "exact")
    with torch.inference_mode():
        ck.values(
            "synth_kp_driving_value",
            model.driving_keypoints(key, pose),
            golden["synth_kp_driving_value"],
            "feature",
        )
        out = model.nets["generator"].decode(
            key.source, golden["synth_kp_driving_value"], golden["synth_kp_source_value"]
        )
    ck.values("synth_deformation", out.deformation, golden["synth_deformation"], "map")
    ck.values("synth_occlusion_map", out.occlusion_map, golden["synth_occlusion_map"], "map")
    _check_written(ck, model, out.prediction, golden)
    return feats


def _key_frames_hwc(golden: dict[str, Any]) -> list[np.ndarray]:
    return [
        np.ascontiguousarray(k.permute(1, 2, 0).numpy()) for k in golden["key_frames_rec_uint8"]
    ]


def _dac_family_analysis(
    ck: _Checker, model: Any, golden: dict[str, Any], frames: np.ndarray, which: Sequence[int]
) -> np.ndarray:
    """Row 0 is the analysis of the *reconstructed* key frame; key_features of every key frame."""
    keys = _key_frames_hwc(golden)
    ours = np.stack(
        [model.analyse_key(keys[0]) if t == 0 else model.analyse(frames[t]) for t in which]
    )
    ck.values(
        "enc_features_flat", ours, golden["enc_features_flat"].numpy()[list(which)], "feature"
    )
    ck.values(
        "enc_value",
        ours.reshape(len(which), -1, 2),
        golden["enc_value"].numpy()[list(which)],
        "feature",
    )
    key_feats = np.stack([model.analyse_key(k) for k in keys])
    ck.values("key_features_flat", key_feats, golden["key_features_flat"], "feature")
    ck.values("key_value", key_feats.reshape(len(keys), -1, 2), golden["key_value"], "feature")
    return ours


def _dac_family_motion(
    ck: _Checker, motion: dict[str, torch.Tensor], golden: dict[str, Any]
) -> None:
    """The reference returns channel sums for heatmap, sparse motion and mask."""
    ck.values("synth_dm_heatmap", motion["heatmap"].sum(dim=1), golden["synth_dm_heatmap"], "map")
    ck.values(
        "synth_dm_sparse_motion",
        motion["sparse_motion"].sum(dim=1).permute(0, 3, 1, 2),
        golden["synth_dm_sparse_motion"],
        "map",
    )
    ck.values("synth_dm_mask", motion["mask"].sum(dim=1), golden["synth_dm_mask"], "map")
    ck.values("synth_dm_mask_softmax", motion["mask"], golden["synth_dm_mask_softmax"], "map")
    ck.values("synth_dm_deformation", motion["deformation"], golden["synth_dm_deformation"], "map")
    ck.values(
        "synth_dm_occlusion_map", motion["occlusion_map"], golden["synth_dm_occlusion_map"], "map"
    )
    if "synth_dm_sparse_deformed" in golden:
        ck.values(
            "synth_dm_sparse_deformed",
            motion["sparse_deformed"],
            golden["synth_dm_sparse_deformed"],
            "map",
        )


def _synth_reference(golden: dict[str, Any]) -> np.ndarray:
    keys = list(golden["key_frames"])
    src = golden["synth_source_image_frame"]
    return _key_frames_hwc(golden)[keys.index(src)]


def _dac_family_animation(
    ck: _Checker, model: Any, golden: dict[str, Any], frames: np.ndarray, which: Sequence[int]
) -> tuple[np.ndarray, Any]:
    """DAC/RDAC: analysis, the frame-10 heatmaps, the golden animation and its motion; returns
    (features, the model's synthesis outputs)."""
    feats = _dac_family_analysis(ck, model, golden, frames, which)
    t10 = golden["synth_driving_frame"]
    with torch.inference_mode():
        heat = model.nets["kp_detector"].heatmaps(model.frame_tensor(frames[t10]))
    ck.values("enc_heatmap_frame10", heat, golden["enc_heatmap_frame10"], "map")
    out = model.synthesize_tensor(
        _synth_reference(golden),
        golden["synth_kp_reference_value"],
        golden["synth_kp_target_value"],
    )
    _dac_family_motion(ck, out.motion, golden)
    return feats, out


def _dac(
    ck: _Checker, model: Any, golden: dict[str, Any], frames: np.ndarray, which: Sequence[int]
) -> np.ndarray:
    from gfvc.models.official.dac import adaptive_refresh_decisions, prediction_psnr

    feats, out = _dac_family_animation(ck, model, golden, frames, which)
    ck.values("synth_def_ref_fts", out.deformed_features, golden["synth_def_ref_fts"], "map")
    _check_written(ck, model, out.prediction, golden)
    # Adaptive refresh: the encoder's PSNR of every inter frame (animated from the current key
    # frame with the reconstructed keypoints), then the decision rule on the stored PSNRs.
    key_frames = list(golden["key_frames"])
    keys = _key_frames_hwc(golden)
    rec = golden["coded_rec_features_flat"].numpy()
    psnr = []
    checked = [t for t in which if t >= 1]
    for t in checked:
        k = max(i for i, kf in enumerate(key_frames) if kf < t)
        pred = model.synthesize_tensor(
            keys[k],
            model.from_vector(golden["key_features_flat"][k].numpy()),
            model.from_vector(rec[t]),
        ).prediction
        psnr.append(prediction_psnr(model.frame_tensor(frames[t]), pred))
    ck.values(
        "adaptive_psnr", psnr, golden["adaptive_psnr"].numpy()[[t - 1 for t in checked]], "feature"
    )
    means, flags = adaptive_refresh_decisions(
        golden["adaptive_psnr"].tolist(), float(golden["adaptive_thresh"])
    )
    ck.values("adaptive_avg_psnr", means, golden["adaptive_avg_psnr"], "feature")
    ck.values(
        "key_frames", [0] + [t for t, f in enumerate(flags, start=1) if f], key_frames, "exact"
    )
    return feats


def _hdac(
    ck: _Checker, model: Any, golden: dict[str, Any], frames: np.ndarray, which: Sequence[int]
) -> np.ndarray:
    feats = _dac_family_analysis(ck, model, golden, frames, which)
    b = int(golden["base_layer_block"])
    base = np.repeat(np.repeat(golden["base_layer_blocks_uint8"].numpy(), b, axis=2), b, axis=3)
    base10 = np.ascontiguousarray(base[golden["synth_driving_frame"]].transpose(1, 2, 0))
    ck.values(
        "synth_base_layer_input",
        model.frame_tensor(base10, "contiguous"),
        golden["synth_base_layer_input"],
        "exact",
    )
    out = model.synthesize_tensor(
        _synth_reference(golden),
        golden["synth_kp_reference_value"],
        golden["synth_kp_target_value"],
        base10,
    )
    _dac_family_motion(ck, out.motion, golden)
    ck.values("synth_bt_input", out.bottleneck_input, golden["synth_bt_input"], "map")
    _check_written(ck, model, out.prediction, golden)
    return feats


def _rdac(
    ck: _Checker, model: Any, golden: dict[str, Any], frames: np.ndarray, which: Sequence[int]
) -> np.ndarray:
    feats, out = _dac_family_animation(ck, model, golden, frames, which)
    ck.values("synth_prediction", out.prediction, golden["synth_prediction"], "frame")
    # Bits: keypoint files + key-frame metadata + residual strings + residual-flag metadata.
    flags = encode_frame(list(golden["res_coding_flag_reported"]))
    meta = encode_frame(list(golden["metadata_values"]))
    total = (
        int(golden["coded_bits"].sum())
        + 8 * len(meta)
        + int(golden["res_bits"].sum())
        + 8 * len(flags)
    )
    ck.values("coded_sum_bits_reported", [total], [golden["coded_sum_bits_reported"]], "exact")
    ck.notes.append(
        "RDAC residual layer not checked (res_y_bytes, res_z_bytes, synth_res_hat, synth_encoder_prediction, "
        "synth_written_uint8): gfvc does not implement RDAC's CompressAI rANS residual coder"
    )
    return feats


FAMILY_CHECKS: dict[str, Callable[..., np.ndarray]] = {
    "FOMM": _fomm,
    "CFTE": _cfte,
    "FV2V": _fv2v,
    "DAC": _dac,
    "HDAC": _hdac,
    "RDAC": _rdac,
}


def run_conformance(
    path: str | Path, analysis_frames: Sequence[int] | None = None
) -> ConformanceReport:
    """Check gfvc against one golden file (see the module docstring).

    ``analysis_frames`` limits the per-frame analysis check to some frames (default: all);
    the coding checks always use all frames' stored features.
    """
    golden, frames = load_golden(path)
    name = str(golden["model"])
    if name not in FAMILY_CHECKS:
        raise InputError(
            f"golden model {name!r} is not supported; supported: {', '.join(FAMILY_CHECKS)}"
        )
    model = build_model(golden)
    which = list(range(len(frames))) if analysis_frames is None else sorted(set(analysis_frames))
    ck = _Checker()
    own = FAMILY_CHECKS[name](ck, model, golden, frames, which)
    _check_coding(ck, golden, own if len(which) == len(frames) else None)
    return ck.report(name)
