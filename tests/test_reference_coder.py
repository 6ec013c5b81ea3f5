"""The GFVC reference per-frame feature coder (gfvc.features.reference_coder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gfvc.features.reference_coder import (
    decode_frame,
    encode_frame,
    expgolomb_bits,
    reference_dpcm_loop,
    signed_to_unsigned,
    unsigned_to_signed,
)

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "golden"


def test_signed_mapping_matches_reference_order() -> None:
    assert [signed_to_unsigned(v) for v in (0, 1, -1, 2, -2, 3)] == [0, 1, 2, 3, 4, 5]
    for v in range(-300, 301):
        assert unsigned_to_signed(signed_to_unsigned(v)) == v


def test_expgolomb_order0() -> None:
    assert [expgolomb_bits(n) for n in range(5)] == ["1", "010", "011", "00100", "00101"]


def test_all_zero_frame_is_two_bytes() -> None:
    # The coder's floor for an all-zero frame (documented upstream behaviour: 16 bits).
    for n in (16, 20, 57, 60):
        assert len(encode_frame([0] * n)) == 2


@pytest.mark.parametrize("scale", [0.5, 2, 30, 1000])
def test_round_trip_random(scale: float) -> None:
    rng = np.random.default_rng(int(scale * 10))
    for _ in range(5):
        values = np.round(rng.laplace(0, scale, size=60)).astype(int).tolist()
        assert decode_frame(encode_frame(values), 60) == values


def test_decode_checks_count() -> None:
    with pytest.raises(ValueError):
        decode_frame(encode_frame([1, 2, 3]), 4)


def test_dpcm_rounds_half_to_even_in_float64() -> None:
    feats = np.array([[0.0], [1.5 / 4], [2.5 / 4 + 1.5 / 4]])
    res = reference_dpcm_loop(feats, 4)
    assert res.residual[:, 0].tolist() == [2, 2]  # round(1.5) = 2, round(2.5) = 2
    assert res.reconstruction[:, 0].tolist() == [0.0, 0.5, 1.0]


def test_dpcm_restarts_chain_at_key_frames() -> None:
    feats = np.array([[0.0], [0.25], [5.0], [5.25]])
    keys = np.array([[0.0], [4.0]])
    res = reference_dpcm_loop(feats, 4, key_frames=[0, 2], key_features=keys)
    assert res.residual[:, 0].tolist() == [1, 19, 5]  # frame 3 predicts from the key feature 4.0
    assert res.reconstruction[3, 0] == 5.25


@pytest.mark.parametrize("model", ["FOMM", "CFTE", "FV2V", "DAC", "HDAC", "RDAC"])
def test_golden_bytes_exact(model: str) -> None:
    path = GOLDEN / f"{model}.pt"
    if not path.is_file():
        pytest.skip(f"golden data not present ({path}); it lives in the shared reference folder")
    import torch

    g = torch.load(path, weights_only=True)
    loop = reference_dpcm_loop(
        g["enc_features_flat"].numpy(),
        float(g["qstep"]),
        list(g.get("key_frames", [0])),
        g["key_features_flat"].numpy() if "key_features_flat" in g else None,
    )
    assert np.array_equal(loop.residual, g["coded_residual"].numpy())
    assert np.array_equal(loop.reconstruction, g["coded_rec_features_flat"].numpy())
    for r, b in zip(loop.residual, g["coded_bytes"], strict=True):
        assert encode_frame(r.tolist()) == bytes(b.tolist())
        assert decode_frame(bytes(b.tolist()), len(r)) == r.tolist()
    if "metadata_bytes" in g:
        assert encode_frame(list(g["metadata_values"])) == bytes(g["metadata_bytes"].tolist())
