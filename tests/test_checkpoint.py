"""Checkpoints: atomic writes, safe loading, RNG round trips (edc_lab.train.checkpoint)."""

import random

import numpy as np
import pytest
import torch

from edc_lab.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(1).tolist(), [random.random() for _ in range(3)]


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    np.random.seed(1)
    random.seed(2)
    np.random.randn()  # leave a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "rng.pt", {"model": {}, "build_args": {}, "rng": rng_state()})
    first = _draws()
    state = torch.load(tmp_path / "rng.pt", weights_only=True)["rng"]  # only safe types inside
    set_rng_state(state)
    assert _draws() == first


def test_atomic_write_keeps_the_previous_file_when_writing_fails(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "build_args": {"name": "x"}, "step": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"model": {}, "build_args": {}, "step": 2, "bad": lambda: None})  # not picklable
    assert read_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_overwrite_replaces_the_content(tmp_path):
    path = tmp_path / "sub" / "last.pt"
    save_checkpoint(path, {"model": {}, "build_args": {}, "step": 1})
    save_checkpoint(path, {"model": {}, "build_args": {}, "step": 2})
    assert read_checkpoint(path)["step"] == 2 and read_checkpoint(path)["format"] == "edc_lab-checkpoint-1"


def test_bad_files_give_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        read_checkpoint(garbage)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="'model' and 'build_args'"):
        read_checkpoint(other)


class _Evil:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "build_args": {}, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        read_checkpoint(path)


def test_load_checkpoint_rebuilds_the_model_exactly(tmp_path):
    from edc_lab.models import build_model

    model = build_model("edc_tiny", num_classes=5)
    path = save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "build_args": model.build_args,
                                              "step": 3, "data": {"name": "synthetic"}})
    loaded, meta = load_checkpoint(path)
    assert not loaded.training and meta["step"] == 3 and "model" not in meta
    optical, sar = torch.rand(1, 4, 32, 32), torch.rand(1, 2, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(optical, sar)["logits"], loaded(optical, sar)["logits"])
    wrong = save_checkpoint(tmp_path / "w.pt", {"model": model.state_dict(),
                                               "build_args": {**model.build_args, "num_classes": 7}})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(wrong)
