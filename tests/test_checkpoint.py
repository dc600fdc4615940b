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


def test_stale_temporary_files_of_killed_saves_are_removed_by_the_next_save(tmp_path):
    path = tmp_path / "last.pt"
    stale = tmp_path / ".last.pt.k1ll3d_x.tmp"  # what a save killed between write and rename leaves
    stale.write_bytes(b"\0" * 1024)
    keep = [tmp_path / ".best.pt.k1ll3d_x.tmp", tmp_path / "notes.tmp", tmp_path / ".last.pt.not-ours.tmp"]
    for other in keep:
        other.write_text("not ours to delete")
    save_checkpoint(path, {"model": {}, "build_args": {}, "step": 1})
    assert not stale.exists() and all(other.exists() for other in keep)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.pt"] + [p.name for p in keep])


def test_a_save_that_fails_after_writing_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {}, "build_args": {}, "step": 1})

    def refuse(*args):
        raise OSError("disk full")

    monkeypatch.setattr("edc_lab.train.checkpoint.os.replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"model": {"w": torch.ones(1000)}, "build_args": {}, "step": 2})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"] and read_checkpoint(path)["step"] == 1


def test_a_bare_state_dict_is_named_as_such(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(2, 1).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"weights\.pt: .*found a bare state_dict \(2 tensors, e\.g\. 'weight'\)"):
        read_checkpoint(path)


def test_weights_only_export_keeps_the_weights_and_drops_the_rest(tmp_path):
    from edc_lab.train.checkpoint import export_weights, is_weights_only

    weights = {"w": torch.arange(4.0)}
    full = save_checkpoint(tmp_path / "full.pt", {"model": weights, "build_args": {"name": "x"}, "step": 7,
                                                  "optimizer": {"state": {}, "param_groups": []}, "rng": rng_state()})
    export = read_checkpoint(export_weights(full, tmp_path / "export.pt"))
    assert is_weights_only(export) and not is_weights_only(read_checkpoint(full))
    assert export["rng"] is None and export["scheduler"] is None and export["step"] == 7
    assert torch.equal(export["model"]["w"], weights["w"])


def test_non_finite_entries_checks_parameters_and_buffers():
    from edc_lab.train.checkpoint import non_finite_entries

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert non_finite_entries(model.state_dict()) == []
    with torch.no_grad():
        model[0].bias[1] = float("inf")
    model[1].running_var[0] = float("nan")  # a buffer, not a parameter
    assert non_finite_entries(model.state_dict()) == ["0.bias", "1.running_var"]
