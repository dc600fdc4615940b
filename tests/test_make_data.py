"""``edc-lab make-data``, the committed data/ sample, and ``build_dataset``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from edc_lab.cli import main
from edc_lab.data import M3MCR, SAMPLE_DATA, WHUOptSAR, build_dataset, make_data, synthetic_scene
from edc_lab.data.make_data import split_counts
from edc_lab.data.whu import official_split

COMMITTED_SAMPLE = SAMPLE_DATA / "m3mcr_sample"


def test_cli_writes_the_m3mcr_layout_that_the_reader_reads_back(tmp_path, capsys):
    out = tmp_path / "m3mcr"
    assert main(["make-data", "--layout", "m3mcr", "--count", "3", "--size", "48", "--seed", "5",
                 "--cloud-cover", "0.3", "--out", str(out)]) == 0
    assert "wrote 3 scenes (2 train, 1 test) of 48x48 px in the m3mcr layout" in capsys.readouterr().out
    train, test = M3MCR(out, "train"), M3MCR(out, "test")
    assert (len(train), len(test)) == (2, 1)
    # scene i is synthetic_scene(seed + i): the optical comes back to within the uint16 quantisation
    for dataset, index, scene_seed in ((train, 1, 6), (test, 0, 7)):
        expected = synthetic_scene(scene_seed, size=48, cloud_cover=0.3)
        ds = dataset.read_scene(index)
        np.testing.assert_allclose(ds["optical"].values, np.maximum(expected["optical"].values, 1e-4), atol=0.6e-4)
        np.testing.assert_array_equal(ds["cloud_mask"].values, expected["cloud_mask"].values)
        assert abs(float(ds["cloud_mask"].mean()) - 0.3) <= 0.05
        assert ds["sar"].shape == (2, 48, 48)


def test_cli_writes_the_whu_layout_with_official_names(tmp_path):
    out = tmp_path / "whu"
    written = make_data("whu", out, count=5, size=40, seed=0)
    split = official_split()
    assert written == {"train": split["train"][:4], "test": split["test"][:1]}
    for folder in ("optical", "sar", "lbl"):
        assert sorted(p.name for p in (out / folder).iterdir()) == sorted(split["train"][:4] + split["test"][:1])
    with rasterio.open(out / "optical" / split["train"][0]) as source:
        assert (source.count, source.dtypes[0], source.shape) == (4, "uint8", (40, 40))
    dataset = WHUOptSAR(out, "train", patch_size=40, cloud_cover=0.0)
    assert len(dataset) == 4
    expected = synthetic_scene(0, size=40, sar_channels=1)  # scene 0 = seed 0; clear optical was written
    np.testing.assert_allclose(dataset.read_patch(0)["optical_clear"].values, expected["optical_clear"].values,
                               atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(dataset.read_patch(0)["label"].values, expected["label"].values)


def test_make_data_is_deterministic(tmp_path):
    make_data("m3mcr", tmp_path / "a", count=2, size=32, seed=3)
    make_data("m3mcr", tmp_path / "b", count=2, size=32, seed=3)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 2 * 5 + 2
    for relative in files:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes(), relative


def test_split_counts_and_bad_arguments(tmp_path):
    assert split_counts(4, 0.2) == (3, 1) and split_counts(10, 0.2) == (8, 2) and split_counts(1, 0.2) == (1, 0)
    with pytest.raises(ValueError, match="expected at most 20 test scenes"):
        make_data("whu", tmp_path, count=120, size=16, test_fraction=0.5)
    with pytest.raises(ValueError, match=r"expected 0 <= --cloud-cover LO <= HI <= 1, found \(0\.9, 0\.1\)"):
        make_data("m3mcr", tmp_path, count=1, cloud_cover=(0.9, 0.1))
    with pytest.raises(SystemExit):
        main(["make-data", "--layout", "sen12", "--out", str(tmp_path)])


# --------------------------------------------------------------------------- the committed sample


def documented_command() -> list[str]:
    """The exact make-data command written in data/README.md."""
    text = (SAMPLE_DATA / "README.md").read_text()
    match = re.search(r"edc-lab (make-data [^\n`]+)", text)
    assert match, "data/README.md must give the exact make-data command"
    return match.group(1).split()


def test_committed_sample_is_small_and_readable():
    files = [p for p in COMMITTED_SAMPLE.rglob("*") if p.is_file()]
    assert files and sum(p.stat().st_size for p in files) < 3_000_000
    dataset = M3MCR(COMMITTED_SAMPLE, "train")
    ds = dataset.read_scene(0)
    assert ds["optical"].shape == (4, 128, 128) and ds["sar"].shape == (2, 128, 128)
    assert ds.rio.crs is not None and ds.rio.transform().a == 3.0


def test_committed_sample_is_what_the_documented_command_writes(tmp_path):
    command = documented_command()
    out_index = command.index("--out") + 1
    assert command[out_index] == "data/m3mcr_sample"
    command[out_index] = str(tmp_path / "regenerated")
    assert main(command) == 0
    committed = sorted(p.relative_to(COMMITTED_SAMPLE) for p in COMMITTED_SAMPLE.rglob("*") if p.is_file())
    regenerated = sorted(p.relative_to(tmp_path / "regenerated") for p in (tmp_path / "regenerated").rglob("*")
                         if p.is_file())
    assert committed == regenerated
    for split in ("train", "test"):
        for a, b in zip(M3MCR(COMMITTED_SAMPLE, split), M3MCR(tmp_path / "regenerated", split)):
            for key in ("optical", "optical_clear", "sar"):
                torch.testing.assert_close(a[key], b[key], atol=2e-4, rtol=0)
            assert (a["label"] == b["label"]).float().mean() > 0.999
            assert torch.equal(a["cloud_mask"], b["cloud_mask"])


# --------------------------------------------------------------------------- build_dataset


def test_build_dataset_synthetic_splits_are_disjoint():
    train = build_dataset("synthetic", split="train", size=32, count=3, seed=0)
    test = build_dataset("synthetic", split="test", size=32, count=3, seed=0)
    assert (train.num_classes, train.in_sar, len(train)) == (7, 2, 3)
    train_scenes = [train[i]["optical_clear"] for i in range(3)]
    for j in range(3):
        assert not any(torch.equal(test[j]["optical_clear"], scene) for scene in train_scenes)
    # deterministic per index
    assert torch.equal(build_dataset("synthetic", size=32, count=3)[1]["optical"], train[1]["optical"])
    assert build_dataset("synthetic", size=32, count=2, sar_channels=1)[0]["sar"].shape == (1, 32, 32)


def test_build_dataset_readers(tmp_path):
    make_data("m3mcr", tmp_path / "m3mcr", count=2, size=48, seed=0)
    m3mcr = build_dataset("m3mcr", root=tmp_path / "m3mcr", split="train", size=32)
    assert (m3mcr.num_classes, m3mcr.in_sar, list(m3mcr.class_names)[0]) == (6, 2, "forest")
    assert m3mcr[0]["optical"].shape == (4, 32, 32)  # random crop to size
    centre = build_dataset("m3mcr", root=tmp_path / "m3mcr", split="test", size=32)[0]
    full = M3MCR(tmp_path / "m3mcr", "test")[0]
    assert torch.equal(centre["sar"], full["sar"][:, 8:40, 8:40])  # centre crop
    assert build_dataset("m3mcr", root=tmp_path / "m3mcr", size=64)[0]["optical"].shape == (4, 48, 48)

    make_data("whu", tmp_path / "whu", count=2, size=64, seed=0)
    whu = build_dataset("whu", root=tmp_path / "whu", split="train", size=32, cloud_cover=(0.4, 0.6), seed=1)
    assert (whu.num_classes, whu.in_sar, len(whu)) == (7, 1, 4)
    assert 0.35 <= float(whu[0]["cloud_mask"].mean()) <= 0.65


def test_build_dataset_bad_names():
    with pytest.raises(ValueError, match=r"expected a name in \('synthetic', 'm3mcr', 'whu'\), found 'sen12'"):
        build_dataset("sen12", root=".")
    with pytest.raises(ValueError, match=r"build_dataset\('m3mcr'\): expected root="):
        build_dataset("m3mcr")
