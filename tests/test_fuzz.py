"""Hostile input stays harmless: seeded, time-bounded structure-aware fuzzing of every parser
(gfvc/fuzz.py; long runs: benchmarks/fuzz.py), plus the crashes it found, kept as tests."""

from __future__ import annotations

import os
import pickle
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch

from gfvc import fuzz
from gfvc.errors import BitstreamError, CheckpointError, InputError

# seconds per target: about 60 s in all (plus building the corpus); GFVC_FUZZ_SCALE=2 for
# the two minutes of a CI fuzz job, much more with benchmarks/fuzz.py
_SCALE = float(os.environ.get("GFVC_FUZZ_SCALE", "1"))
BUDGET = {
    "gfv": 16 * _SCALE,
    "units": 10 * _SCALE,
    "annexb": 12 * _SCALE,
    "sei": 4 * _SCALE,
    "raw": 4 * _SCALE,
    "config": 8 * _SCALE,
    "checkpoint": 4 * _SCALE,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return fuzz.Corpus.build(workdir=tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("target", sorted(BUDGET))
def test_fuzz_target_raises_only_gfvc_errors(target, corpus):
    torch.set_num_threads(1)
    res = fuzz.run(target, cases=100_000, seconds=BUDGET[target], seed=2026, corpus=corpus)
    assert res.cases >= 20, res  # the budget ran real cases
    shown = "\n".join(f"{f.target}:{f.seed}:{f.case} {f.error} at {f.where}" for f in res.failures)
    assert not res.failures, shown


def test_mutators_are_deterministic_and_change_the_input():
    data = bytes(range(64))
    a = [fuzz.mutate_bytes(np.random.default_rng([1, i]), data) for i in range(20)]
    b = [fuzz.mutate_bytes(np.random.default_rng([1, i]), data) for i in range(20)]
    assert a == b and sum(x != data for x in a) >= 18
    bits = fuzz.mutate_bits(np.random.default_rng(3), data)
    assert bits != data


def test_gfv_pieces_round_trip_with_crcs(corpus):
    for data in corpus.gfv:
        p = fuzz.GfvPieces.split(data)
        assert p.join(np.random.default_rng(0), crc_ok=1.0) == data


# ---------------------------------------------------------------------------- found by fuzzing


def _pickle_that_runs(tmp_path):
    flag = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"net": {}, "step": 1, "x": fuzz._Sentinel(str(flag))}, path)
    return path, flag


def test_training_resume_never_unpickles_code(tmp_path):
    from gfvc.train.trainer import _load_state

    path, flag = _pickle_that_runs(tmp_path)
    with pytest.raises(CheckpointError, match="run code"):
        _load_state(path)
    assert not flag.exists()
    (tmp_path / "bare.pt").write_bytes(pickle.dumps(fuzz._Sentinel(str(flag))))
    with pytest.raises(CheckpointError):
        _load_state(tmp_path / "bare.pt")
    assert not flag.exists()


def test_damaged_checkpoint_is_a_checkpoint_error(tmp_path):
    from gfvc.models.official.checkpoint import read_checkpoint

    # cases the fuzzer found: torch's weights-only unpickler raised KeyError / TypeError
    for i, data in enumerate(
        (b"\x80\x02}q\x00X\x01\x00\x00\x00ah9R.", b"PK\x03\x04" + b"\x00" * 40)
    ):
        p = tmp_path / f"bad{i}.pt"
        p.write_bytes(data)
        with pytest.raises(CheckpointError):
            read_checkpoint(p)


@pytest.mark.parametrize(
    "text, msg",
    [
        ("model_params: 3\n", "mapping"),
        (
            "model_params: {common_params: {num_kp: 10000000000000}, kp_detector_params: {},"
            " generator_params: {}}\n",
            "outside",
        ),
        (
            "model_params: {common_params: {num_kp: .nan}, kp_detector_params: {},"
            " generator_params: {}}\n",
            "sane",
        ),
    ],
)
def test_hostile_model_config_is_refused(tmp_path, text, msg):
    from gfvc.models.official.base import load_config

    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(CheckpointError, match=msg):
        load_config(p, "fomm")


def test_config_that_cannot_be_built_is_refused_before_allocating(tmp_path):
    import yaml

    from gfvc.models import model_class
    from gfvc.models.official.base import check_buildable, load_config

    params = load_config(None, "fomm")
    params["generator_params"]["block_expansion"] = "wide"
    with pytest.raises(CheckpointError, match="cannot be built"):
        check_buildable(model_class("fomm"), params)
    params = load_config(None, "fomm")
    for sec in ("kp_detector_params", "generator_params"):
        params[sec]["max_features"] = params[sec]["block_expansion"] = 16384
    p = tmp_path / "big.yaml"
    p.write_text(yaml.safe_dump({"model_params": params}))
    tracemalloc.start()
    with pytest.raises(CheckpointError, match="parameters"):
        check_buildable(model_class("fomm"), load_config(p, "fomm"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6


@pytest.mark.parametrize(
    "text",
    ["a: [1, 2\n", "\x10steps: 3\n", "- 1\n- 2\n", "steps: -4\n", "lr: x\n", "steps: true\n"],
)
def test_bad_training_config_is_one_input_error(tmp_path, text):
    from gfvc.train.trainer import TrainConfig

    p = tmp_path / "t.yaml"
    p.write_text(text)
    with pytest.raises(InputError):
        TrainConfig.load(p)


def test_absurd_segment_lengths_are_refused_before_allocating(corpus):
    """A segment whose (CRC-valid) table claims gigabytes of payload: refused, nothing big
    allocated."""
    from gfvc.bitstream import parse_stream
    from gfvc.bitstream.format import StreamHeader, _varint

    data = corpus.gfv[0]
    _, hlen = StreamHeader.parse(data)
    body = bytes([0x53, 1, 1]) + _varint(2**34)
    bad = data[:hlen] + body + struct.pack(">I", zlib.crc32(body)) + b"\x45" + bytes(8)
    tracemalloc.start()
    with pytest.raises(BitstreamError):
        parse_stream(bad)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1e6
