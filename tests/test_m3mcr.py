"""M3M-CR reader: the real tile of ../shared/data and fake datasets in the real layout.

The alignment tests compute, independently of rioxarray, what georeference says
each 3 m optical pixel should receive: the 10 m label cell that contains its
centre (nearest) and the bilinear interpolation of the 10 m SAR at its centre.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject
from scipy.ndimage import map_coordinates

from edc_lab.data import M3MCR, M3MCR_CLASSES, DataError, normalize_sar, worldcover_to_level1
from edc_lab.data.writer import NAME_TO_WORLDCOVER

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_fake_datasets import fake_sample, make_fake_m3mcr  # noqa: E402

REAL_CSV = "one_train_sample.csv"


# --------------------------------------------------------------------------- what georeference says


def pixel_centres(transform: Affine, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) map coordinates of the pixel centres of a grid, each (H, W)."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return transform @ (cols + 0.5, rows + 0.5)


def fractional_index(transform: Affine, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) position of map points in a grid, in pixel units (pixel centres at integers)."""
    cols, rows = ~transform @ (x, y)
    return rows - 0.5, cols - 0.5


def labels_by_georeference(label_path: Path, optical_transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Level-1 class of the 10 m cell containing each optical pixel centre; 255 outside the label grid."""
    with rasterio.open(label_path) as source:
        codes, transform = source.read(1), source.transform
    classes = worldcover_to_level1(codes)
    rows, cols = fractional_index(transform, *pixel_centres(optical_transform, shape))
    rows, cols = np.floor(rows + 0.5).astype(int), np.floor(cols + 0.5).astype(int)
    inside = (rows >= 0) & (rows < classes.shape[0]) & (cols >= 0) & (cols < classes.shape[1])
    expected = np.full(shape, 255, dtype=np.uint8)
    expected[inside] = classes[rows[inside], cols[inside]]
    return expected


def sar_by_bilinear(sar_path: Path, optical_transform: Affine, shape: tuple[int, int]):
    """Bilinear interpolation of the 10 m SAR (dB) at the optical pixel centres, and where it is interior."""
    with rasterio.open(sar_path) as source:
        backscatter, transform = source.read().astype(np.float64), source.transform
    rows, cols = fractional_index(transform, *pixel_centres(optical_transform, shape))
    interior = (rows >= 0) & (rows <= backscatter.shape[1] - 1) & (cols >= 0) & (cols <= backscatter.shape[2] - 1)
    values = np.stack([map_coordinates(plane, [rows, cols], order=1, mode="nearest") for plane in backscatter])
    return values, interior


# --------------------------------------------------------------------------- the real tile


@pytest.mark.real_data
def test_real_tile_gives_4x300x300_optical_and_2x300x300_sar_on_one_grid(m3mcr_sample_root):
    dataset = M3MCR(m3mcr_sample_root, csv=REAL_CSV)
    assert len(dataset) == 8  # the authors' sample CSV repeats its row 8 times
    ds = dataset.read_scene(0)
    assert ds["optical"].shape == (4, 300, 300) and ds["optical_clear"].shape == (4, 300, 300)
    assert ds["sar"].shape == (2, 300, 300) and ds["label"].shape == (300, 300)
    assert ds.rio.crs.to_epsg() == 32646
    # the sample's grid is the 3 m optical grid, not the 10 m SAR grid
    with rasterio.open(dataset.files[0].optical) as optical:
        assert ds.rio.transform() == optical.transform == Affine(3, 0, 760299, 0, -3, 1898412)
    assert ds.attrs["sar_transform"] == [10.0, 0.0, 760300.0, 0.0, -10.0, 1898410.0]
    # level-1 labels; the top 3 m row lies outside the label grid (it starts 2 m lower) -> ignore
    assert set(np.unique(ds["label"].values)) <= set(range(len(M3MCR_CLASSES))) | {255}
    assert (ds["label"].values[0] == 255).all() and (ds["label"].values[1:] != 255).all()
    assert ds.attrs["sar_filled_pixels"] == 300
    for name in ("optical", "optical_clear", "sar"):
        values = ds[name].values
        assert values.dtype == np.float32 and 0.0 <= values.min() and values.max() <= 1.0
    assert ds["cloud_mask"].dtype == bool and 0.3 < ds["cloud_mask"].values.mean() < 0.7


@pytest.mark.real_data
def test_real_tile_labels_land_where_georeference_says(m3mcr_sample_root):
    dataset = M3MCR(m3mcr_sample_root, csv=REAL_CSV)
    ds = dataset.read_scene(0)
    expected = labels_by_georeference(dataset.files[0].label, ds.rio.transform(), (300, 300))
    np.testing.assert_array_equal(ds["label"].values, expected)
    # the test can tell: pairing pixels by array index (90 -> 300 resize) would misplace labels
    with rasterio.open(dataset.files[0].label) as source:
        by_index = worldcover_to_level1(source.read(1))[(np.arange(300) * 90) // 300][:, (np.arange(300) * 90) // 300]
    assert (by_index[1:] != expected[1:]).sum() > 100


@pytest.mark.real_data
def test_real_tile_sar_is_bilinear_at_optical_pixel_centres(m3mcr_sample_root):
    dataset = M3MCR(m3mcr_sample_root, csv=REAL_CSV)
    ds = dataset.read_scene(0)
    backscatter_db, interior = sar_by_bilinear(dataset.files[0].sar, ds.rio.transform(), (300, 300))
    expected = normalize_sar(backscatter_db)
    assert interior.sum() > 0.95 * interior.size
    np.testing.assert_allclose(ds["sar"].values[:, interior], expected[:, interior], atol=1e-5)
    # outside the SAR footprint (top row) the nearest SAR row is used
    np.testing.assert_allclose(ds["sar"].values[:, 0], ds["sar"].values[:, 1], atol=0.2)


@pytest.mark.real_data
def test_real_tile_finds_authors_csv_and_gives_torch_dicts(m3mcr_sample_root):
    dataset = M3MCR(m3mcr_sample_root, split="train")
    assert dataset.csv_path.name == REAL_CSV
    sample = dataset[0]
    assert sample["optical"].dtype == torch.float32 and sample["label"].dtype == torch.int64
    assert sample["sar"].shape == (2, 300, 300) and bool(sample["has_clear"])
    # water (level-1 class 5) is absent here; urban (3) is brighter in VV than agriculture (2)
    vv, label = sample["sar"][0], sample["label"]
    assert vv[label == 3].mean() > vv[label == 2].mean()


# --------------------------------------------------------------------------- fake data in the real layout


def test_fake_round_trip_keeps_values_and_aligns_by_georeference(tmp_path):
    root = make_fake_m3mcr(tmp_path, count=2, size=64, seed=3)
    dataset = M3MCR(root, "train")
    assert len(dataset) == 2
    original = fake_sample(3, 64, classes="m3mcr")
    ds = dataset.read_scene(0)
    # optical: uint16 reflectance x10000 round trip
    np.testing.assert_allclose(ds["optical"].values, original["optical"].values, atol=0.6e-4)
    np.testing.assert_allclose(ds["optical_clear"].values, original["optical_clear"].values, atol=0.6e-4)
    np.testing.assert_array_equal(ds["cloud_mask"].values, original["cloud_mask"].values)
    assert ds.rio.transform() == Affine(3, 0, 760299, 0, -3, 1898412)
    # SAR / labels: exactly what georeference says about the 10 m files
    files = dataset.files[0]
    np.testing.assert_array_equal(ds["label"].values, labels_by_georeference(files.label, ds.rio.transform(), (64, 64)))
    backscatter_db, interior = sar_by_bilinear(files.sar, ds.rio.transform(), (64, 64))
    np.testing.assert_allclose(ds["sar"].values[:, interior], normalize_sar(backscatter_db)[:, interior], atol=1e-5)
    # and, through the 10 m grid, labels still agree with the original 3 m classes almost everywhere
    valid = ds["label"].values != 255
    assert (ds["label"].values[valid] == original["label"].values[valid]).mean() > 0.8


def test_label_boundary_lands_at_its_map_coordinate_despite_a_large_grid_shift(tmp_path):
    # left half forest, right half water; the 10 m grid starts 25 m east of the optical grid
    ds = fake_sample(0, 96, classes="m3mcr")
    label = np.zeros((96, 96), dtype=np.uint8)
    label[:, 48:] = M3MCR_CLASSES.index("water")
    ds["label"].values[:] = label
    from edc_lab.data.writer import write_m3mcr

    write_m3mcr([ds], tmp_path, sar_origin_shift=(25.0, 0.0))
    read = M3MCR(tmp_path).read_scene(0)
    boundary_x = 760299.0 + 3.0 * 48  # map coordinate of the true boundary
    row = read["label"].values[48]
    first_water = int(np.argmax(row == M3MCR_CLASSES.index("water")))
    read_boundary_x = 760299.0 + 3.0 * first_water
    assert abs(read_boundary_x - boundary_x) <= 6.5  # half a 10 m cell + half a 3 m pixel
    # pairing by array index would put it 25 m (8 px) off
    with rasterio.open(M3MCR(tmp_path).files[0].label) as source:
        codes = source.read(1)[48 * 3 // 10]
    index_boundary = int(np.argmax(codes == NAME_TO_WORLDCOVER["water"])) * 10 / 3  # in 3 m pixels, by index
    assert abs(760299.0 + 3.0 * index_boundary - boundary_x) >= 20


def test_sar_in_another_crs_is_reprojected(tmp_path):
    root = make_fake_m3mcr(tmp_path, count=1, size=64, seed=1)
    reference = M3MCR(root).read_scene(0)
    sar_path = M3MCR(root).files[0].sar
    with rasterio.open(sar_path) as source:
        values, profile = source.read(), source.profile
        transform, width, height = calculate_default_transform(
            source.crs, "EPSG:4326", source.width, source.height, *source.bounds
        )
        moved = np.full((2, height, width), np.nan)
        reproject(values, moved, src_transform=source.transform, src_crs=source.crs, dst_transform=transform,
                  dst_crs="EPSG:4326", resampling=Resampling.nearest, dst_nodata=np.nan)
    moved = np.where(np.isnan(moved), -15.0, moved)  # geographic corners outside the UTM square
    profile.update(crs="EPSG:4326", transform=transform, width=width, height=height)
    with rasterio.open(sar_path, "w", **profile) as target:
        target.write(moved)
    ds = M3MCR(root).read_scene(0)
    assert ds.rio.crs == reference.rio.crs and ds.rio.transform() == reference.rio.transform()
    difference = np.abs(ds["sar"].values - reference["sar"].values)[:, 8:-8, 8:-8]
    assert np.median(difference) < 0.02


def test_odd_sized_scenes_read_on_their_own_grid(tmp_path):
    root = make_fake_m3mcr(tmp_path, count=1, size=61, seed=2)
    ds = M3MCR(root).read_scene(0)
    assert ds["optical"].shape == (4, 61, 61) and ds["sar"].shape == (2, 61, 61)
    files = M3MCR(root).files[0]
    np.testing.assert_array_equal(ds["label"].values, labels_by_georeference(files.label, ds.rio.transform(), (61, 61)))


def test_optical_nodata_pixels_become_ignore(tmp_path):
    root = make_fake_m3mcr(tmp_path, count=1, size=64)
    files = M3MCR(root).files[0]
    with rasterio.open(files.optical) as source:
        values, profile = source.read(), source.profile
    values[:, 10:20, 30:40] = 0  # nodata in every band
    with rasterio.open(files.optical, "w", **profile) as target:
        target.write(values)
    ds = M3MCR(root).read_scene(0)
    assert (ds["label"].values[10:20, 30:40] == 255).all()
    assert (ds["optical"].values[:, 10:20, 30:40] == 0).all()
    assert ds.attrs["optical_nodata_pixels"] == 100


def test_transforms_are_applied_to_torch_samples(tmp_path):
    root = make_fake_m3mcr(tmp_path, count=1, size=64)
    seen = []

    def flip(sample):
        seen.append(sorted(sample))
        return {key: (value.flip(-1) if value.ndim >= 2 else value) for key, value in sample.items()}

    plain, flipped = M3MCR(root)[0], M3MCR(root, transforms=flip)[0]
    assert seen and "sar" in seen[0]
    assert torch.equal(flipped["label"], plain["label"].flip(-1))
    assert torch.equal(flipped["sar"], plain["sar"].flip(-1))


def test_csv_is_required_and_checked(tmp_path):
    root = make_fake_m3mcr(tmp_path, count=1, size=32)
    with pytest.raises(DataError, match=r"test\.csv or one_test_sample\.csv"):
        M3MCR(root, "test")
    bad = tmp_path / "four_columns.csv"
    bad.write_text("a.tif,b.tif,c.tif,d.tif\n")
    with pytest.raises(DataError, match=r"four_columns\.csv, line 1: expected 5 columns .* found 4"):
        M3MCR(root, csv=bad.name)


def test_plot_draws_the_six_panels_with_m3mcr_classes(tmp_path):
    import matplotlib.pyplot as plt

    dataset = M3MCR(make_fake_m3mcr(tmp_path, count=1, size=32))
    figure = dataset.plot(dataset[0])
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[:5] == ["true colour", "false colour (NIR R G)", "label", "SAR VV", "SAR VH"]
    legend = [text.get_text() for text in figure.axes[2].get_legend().get_texts()]
    assert legend == list(M3MCR_CLASSES)
    plt.close(figure)
