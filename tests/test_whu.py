"""WHU-OPT-SAR reader: official split, patch tiling, windowed reads, band order, labels, seeded clouds."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from edc_lab.data import WHU_CLASSES, WHUOptSAR, official_split, whu_labels
from edc_lab.data.whu import patch_origins

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_fake_datasets import WHU_TEST_NAMES, WHU_TRAIN_NAMES, fake_sample, make_fake_whu  # noqa: E402

SHARED_SPLIT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "whu_opt_sar_split.txt"


@pytest.fixture
def whu_root(tmp_path) -> Path:
    """Two train scenes (96x80) and one test scene in the release layout."""
    return make_fake_whu(tmp_path)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as source:
        return source.read()


def test_official_split_is_shipped_80_train_20_test():
    split = official_split()
    assert len(split["train"]) == 80 and len(split["test"]) == 20
    assert not set(split["train"]) & set(split["test"])
    assert all(name.endswith(".tif") and len(name) == len("NH49E004021.tif") for name in split["train"] + split["test"])
    if SHARED_SPLIT.is_file():  # the package copy equals the reference file
        assert official_split(SHARED_SPLIT) == split


def test_patch_origins_cover_every_pixel_and_stay_inside():
    for length, size in [(5556, 256), (3704, 256), (96, 32), (80, 32), (64, 64)]:
        starts = patch_origins(length, size)
        covered = np.zeros(length, dtype=int)
        for start in starts:
            assert 0 <= start and start + size <= length
            covered[start : start + size] += 1
        assert (covered >= 1).all()
        assert starts[:-1] == list(range(0, size * (len(starts) - 1), size))  # regular grid, last shifted in
    assert patch_origins(5556, 256)[-1] == 5556 - 256 and len(patch_origins(5556, 256)) == 22


def test_patches_tile_the_scenes_of_the_split(whu_root):
    train = WHUOptSAR(whu_root, "train", patch_size=32)
    assert train.scenes == list(WHU_TRAIN_NAMES[:2])
    assert len(train) == 2 * len(patch_origins(96, 32)) * len(patch_origins(80, 32)) == 2 * 3 * 3
    assert "NH49E005023.tif" in train.missing_scenes
    test = WHUOptSAR(whu_root, "test", patch_size=32)
    assert test.scenes == [WHU_TEST_NAMES[0]] and len(test) == 9


def test_patch_equals_the_window_of_the_files(whu_root):
    dataset = WHUOptSAR(whu_root, patch_size=32, cloud_cover=0.0)
    index = 5  # scene 0, rows 32..64, cols 48..80 (the last column shifted inwards)
    patch = dataset.patches[index]
    assert (patch.row, patch.col) == (32, 48)
    ds = dataset.read_patch(index)
    name = patch.scene
    optical = read(whu_root / "optical" / name)[:, 32:64, 48:80]
    np.testing.assert_allclose(ds["optical_clear"].values, optical / 255.0, atol=1e-6)
    np.testing.assert_allclose(ds["sar"].values, read(whu_root / "sar" / name)[:, 32:64, 48:80] / 255.0, atol=1e-6)
    codes = read(whu_root / "lbl" / name)[0, 32:64, 48:80]
    np.testing.assert_array_equal(ds["label"].values, np.where(codes == 0, 255, codes // 10 - 1))
    # georeference of the window: its origin is 48 px east, 32 px south of the scene's
    with rasterio.open(whu_root / "optical" / name) as source:
        assert ds.rio.transform() == source.transform * rasterio.Affine.translation(48, 32)
    # cloud_cover=0: the cloudy image is the clear one
    np.testing.assert_array_equal(ds["optical"].values, ds["optical_clear"].values)
    # the fake scene is the fake sample written by the writer: labels survive the round trip
    original = fake_sample(0, 96, 80, sar_channels=1)
    np.testing.assert_array_equal(ds["label"].values, original["label"].values[32:64, 48:80])


def test_label_mapping_10_to_70_becomes_0_to_6_and_0_is_ignored():
    codes = np.array([[0, 10, 20, 30], [40, 50, 60, 70]], dtype=np.uint8)
    np.testing.assert_array_equal(whu_labels(codes, "x"), [[255, 0, 1, 2], [3, 4, 5, 6]])
    assert len(WHU_CLASSES) == 7


def test_band_order_is_configurable(tmp_path):
    red_first = ("red", "green", "blue", "nir")
    root = make_fake_whu(tmp_path, names=WHU_TRAIN_NAMES[:1], height=32, width=32, optical_bands=red_first)
    assumed = WHUOptSAR(root, patch_size=32, cloud_cover=0.0, optical_bands=red_first).read_patch(0)
    default = WHUOptSAR(root, patch_size=32, cloud_cover=0.0).read_patch(0)
    original = fake_sample(0, 32, 32, sar_channels=1)["optical_clear"].values
    np.testing.assert_allclose(assumed["optical_clear"].values, original, atol=0.5 / 255 + 1e-6)
    # read with the wrong assumption, blue and red trade places
    np.testing.assert_array_equal(default["optical_clear"].values[[2, 1, 0, 3]], assumed["optical_clear"].values)


def test_clouds_are_seeded_per_patch_and_reach_the_requested_cover(whu_root):
    dataset = WHUOptSAR(whu_root, patch_size=32, cloud_cover=(0.2, 0.8), seed=7)
    again = WHUOptSAR(whu_root, patch_size=32, cloud_cover=(0.2, 0.8), seed=7)
    other_seed = WHUOptSAR(whu_root, patch_size=32, cloud_cover=(0.2, 0.8), seed=8)
    first = dataset.read_patch(3)
    np.testing.assert_array_equal(first["optical"].values, again.read_patch(3)["optical"].values)
    assert not np.array_equal(first["cloud_mask"].values, other_seed.read_patch(3)["cloud_mask"].values)
    seeds = {dataset.cloud_seed(i) for i in range(len(dataset))}
    assert len(seeds) == len(dataset)  # every patch has its own clouds
    for index in range(len(dataset)):
        ds = dataset.read_patch(index)
        requested = ds.attrs["requested_cloud_cover"]
        assert 0.2 <= requested <= 0.8
        assert abs(float(ds["cloud_mask"].mean()) - requested) <= 0.05
        # clouds brighten the optical where the mask is set
        cloudy = ds["cloud_mask"].values
        assert ds["optical"].values[:, cloudy].mean() > ds["optical_clear"].values[:, cloudy].mean()
        np.testing.assert_array_equal(ds["cloud_opacity"].values > 0, cloudy)


def test_torch_items_and_transforms(whu_root):
    dataset = WHUOptSAR(whu_root, patch_size=32, transforms=lambda s: {**s, "label": s["label"].flip(-1)})
    plain = WHUOptSAR(whu_root, patch_size=32)
    sample = dataset[0]
    assert sample["optical"].shape == (4, 32, 32) and sample["sar"].shape == (1, 32, 32)
    assert sample["label"].dtype == torch.int64 and bool(sample["has_clear"])
    assert torch.equal(sample["label"], plain[0]["label"].flip(-1))
    assert dataset.num_classes == 7 and dataset.in_sar == 1


# --------------------------------------------------------------------------- never a whole scene in memory


@pytest.fixture(scope="session")
def large_whu_root(tmp_path_factory) -> Path:
    """One 1500x2000 px scene (12 MB of optical), written once per session."""
    return make_fake_whu(tmp_path_factory.mktemp("whu_large"), names=WHU_TRAIN_NAMES[:1], height=1500, width=2000)


def test_items_read_only_patch_sized_windows(large_whu_root, monkeypatch):
    dataset = WHUOptSAR(large_whu_root, patch_size=128, cloud_cover=0.3)
    assert len(dataset) == len(patch_origins(1500, 128)) * len(patch_origins(2000, 128))
    requests = []
    original_read = rasterio.io.DatasetReader.read

    def recording_read(self, *args, **kwargs):
        requests.append((Path(self.name).parent.name, kwargs.get("window")))
        return original_read(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", recording_read)
    last = len(dataset) - 1
    for index in (0, 57, last):
        dataset[index]
    assert len(requests) == 3 * 3  # optical, sar, label per item
    for folder, window in requests:
        assert window is not None, f"a whole {folder} scene was read"
        assert (window.height, window.width) == (128, 128)
    assert requests[-1][1].row_off == 1500 - 128 and requests[-1][1].col_off == 2000 - 128


def test_an_item_allocates_far_less_than_a_scene(large_whu_root):
    dataset = WHUOptSAR(large_whu_root, patch_size=128, cloud_cover=0.3)
    dataset[1]  # warm-up (imports, caches)
    tracemalloc.start()
    dataset[150]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    scene_bytes = 1500 * 2000 * 4  # the optical scene alone, uint8
    assert peak < scene_bytes / 4, f"peak {peak / 1e6:.1f} MB for one 128x128 item"


def test_plot_draws_the_six_panels_with_whu_classes(whu_root):
    import matplotlib.pyplot as plt

    dataset = WHUOptSAR(whu_root, patch_size=32)
    figure = dataset.plot(dataset.read_patch(0))
    assert [ax.get_title() for ax in figure.axes][3:5] == ["SAR GF-3", "SAR VH: n/a"]
    assert [text.get_text() for text in figure.axes[2].get_legend().get_texts()] == list(WHU_CLASSES)
    # WHU-OPT-SAR's 8-bit SAR states no dB scale: its colourbar says so
    assert "normalised backscatter (0–1)" in [ax.get_ylabel() for ax in figure.axes]
    plt.close(figure)
