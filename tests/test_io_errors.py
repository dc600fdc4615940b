"""Bad input -> one clear DataError naming the file, what was expected and what was found. One test each."""

from __future__ import annotations

import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from edc_lab.data import M3MCR, DataError, WHUOptSAR, read_cloud_mask, read_geotiff

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_fake_datasets import WHU_TRAIN_NAMES, make_fake_m3mcr, make_fake_whu  # noqa: E402


@pytest.fixture
def m3mcr(tmp_path) -> M3MCR:
    """A one-sample fake M3M-CR dataset (64 px) to break."""
    return M3MCR(make_fake_m3mcr(tmp_path, count=1, size=64))


def rewrite(path: Path, values: np.ndarray | None = None, **profile_changes) -> None:
    """Rewrite a GeoTIFF with other pixel values and/or profile entries (crs, transform, dtype, ...)."""
    with rasterio.open(path) as source:
        old_values, profile = source.read(), source.profile
    values = old_values if values is None else values
    profile.update(count=values.shape[0], height=values.shape[1], width=values.shape[2], dtype=values.dtype.name,
                   **profile_changes)
    with rasterio.open(path, "w", **profile) as target:
        target.write(values)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as source:
        return source.read()


# --------------------------------------------------------------------------- files


def test_missing_file_listed_in_the_csv(m3mcr):
    m3mcr.files[0].sar.unlink()
    with pytest.raises(DataError) as error:
        M3MCR(m3mcr.root)
    message = str(error.value)
    assert "train.csv, line 1" in message and "expected the sar file" in message
    assert str(m3mcr.files[0].sar) in message and "found no such file" in message


def test_wrong_band_count(m3mcr):
    rewrite(m3mcr.files[0].optical, read(m3mcr.files[0].optical)[:3])
    with pytest.raises(DataError, match=r"planet_cloudy_synthetic_1_p_0\.tif: expected 4 band\(s\) .* found 3"):
        m3mcr.read_scene(0)


def test_optical_and_sar_that_do_not_overlap(m3mcr):
    far_away = Affine(10.0, 0.0, 860300.0, 0.0, -10.0, 1898410.0)  # 100 km east
    rewrite(m3mcr.files[0].sar, transform=far_away)
    with pytest.raises(DataError, match=r"S1_synthetic_1_p_0\.tif: expected the SAR to cover at least 90% .* found 0\.0% overlap"):
        m3mcr.read_scene(0)


def test_partial_overlap_below_the_threshold(m3mcr):
    half_off = Affine(10.0, 0.0, 760299.0 + 96.0, 0.0, -10.0, 1898410.0)  # 96 m of 192 m east
    rewrite(m3mcr.files[0].sar, transform=half_off)
    with pytest.raises(DataError, match=r"found 4\d\.\d% overlap"):
        m3mcr.read_scene(0)


def test_missing_crs_cannot_be_aligned(m3mcr):
    path = m3mcr.files[0].sar
    values, transform = read(path), m3mcr.read_scene(0).attrs["sar_transform"]
    path.unlink()
    with rasterio.open(path, "w", driver="GTiff", height=values.shape[1], width=values.shape[2], count=2,
                       dtype="float64", transform=Affine(*transform)) as target:  # no crs=
        target.write(values)
    with pytest.raises(DataError, match=r"S1_synthetic_1_p_0\.tif: expected a CRS .* found none"):
        m3mcr.read_scene(0)


def test_different_crs_that_puts_the_sar_elsewhere(m3mcr):
    # same numbers, but in UTM zone 1 instead of 46: the SAR lands half a world away
    rewrite(m3mcr.files[0].sar, crs="EPSG:32601")
    with pytest.raises(DataError, match=r"found 0\.0% overlap .* in EPSG:32601"):
        m3mcr.read_scene(0)


def test_nan_pixels_are_refused_by_default_and_filled_on_request(m3mcr):
    values = read(m3mcr.files[0].sar)
    values[0, 3:5, 3:5] = np.nan
    values[1, 0, 0] = np.inf
    rewrite(m3mcr.files[0].sar, values)
    with pytest.raises(DataError, match=r"S1_synthetic_1_p_0\.tif .*expected finite values, found 5 NaN/Inf .*fill_nonfinite"):
        m3mcr.read_scene(0)
    filled = M3MCR(m3mcr.root, fill_nonfinite=-20.0)
    with pytest.warns(UserWarning, match=r"filled 5 NaN/Inf pixel values with -20\.0"):
        ds = filled.read_scene(0)
    assert np.isfinite(ds["sar"].values).all()


def test_label_codes_outside_the_mapping(m3mcr):
    codes = read(m3mcr.files[0].label)
    codes[0, :2, :3] = 15
    codes[0, 5, 5] = 200
    rewrite(m3mcr.files[0].label, codes)
    with pytest.raises(DataError, match=r"landcover_synthetic_1_p_0\.tif: expected ESA WorldCover codes .* found other codes \{15: 6, 200: 1\}"):
        m3mcr.read_scene(0)


def test_cloud_mask_of_the_wrong_shape(m3mcr):
    np.save(m3mcr.files[0].cloud_mask, np.zeros((60, 64), dtype=bool))
    with pytest.raises(DataError, match=r"cloudmask_synthetic_1_p_0\.npy: expected a cloud mask of shape \(64, 64\) .* found \(60, 64\)"):
        m3mcr.read_scene(0)


def test_cloud_mask_with_values_other_than_0_and_1(m3mcr):
    np.save(m3mcr.files[0].cloud_mask, np.full((64, 64), 7, dtype=np.uint8))
    with pytest.raises(DataError, match=r"expected a boolean or 0/1 cloud mask, found values \[7\]"):
        m3mcr.read_scene(0)


def test_pickled_npy_is_refused(m3mcr, tmp_path):
    path = m3mcr.files[0].cloud_mask
    np.save(path, np.array([np.zeros((64, 64), dtype=bool)], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"cloudmask_synthetic_1_p_0\.npy: expected a plain \.npy array .* found pickled"):
        m3mcr.read_scene(0)
    raw_pickle = tmp_path / "mask.npy"
    raw_pickle.write_bytes(pickle.dumps(np.zeros((4, 4), dtype=bool)))
    with pytest.raises(DataError, match=r"mask\.npy: expected a plain \.npy array .* found pickled"):
        read_cloud_mask(raw_pickle, (4, 4))


def test_truncated_geotiff(m3mcr):
    path = m3mcr.files[0].optical_clear
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"planet_cloudfree_synthetic_1_p_0\.tif: expected .* found a (truncated or corrupt file|file rasterio cannot open)"):
        m3mcr.read_scene(0)


def test_corrupt_geotiff(m3mcr):
    m3mcr.files[0].label.write_bytes(b"this is not a GeoTIFF" * 10)
    with pytest.raises(DataError, match=r"landcover_synthetic_1_p_0\.tif: expected a readable GeoTIFF .* found a file rasterio cannot open"):
        m3mcr.read_scene(0)


def test_cloudy_and_cloud_free_optical_on_different_grids(tmp_path):
    root = make_fake_m3mcr(tmp_path, count=1, size=61)  # odd size
    files = M3MCR(root).files[0]
    rewrite(files.optical_clear, read(files.optical_clear)[:, :60, :60])
    with pytest.raises(DataError, match=r"planet_cloudy_synthetic_1_p_0\.tif: expected the grid of .* 60x60.* found .* 61x61"):
        M3MCR(root).read_scene(0)


def test_window_outside_the_raster(m3mcr):
    with pytest.raises(DataError, match=r"expected window rows 40\.\.80, cols 0\.\.40 inside the raster, found a raster of 64x64"):
        read_geotiff(m3mcr.files[0].optical, "optical", window=Window(0, 40, 40, 40))


def test_missing_geotiff():
    with pytest.raises(DataError, match=r"nowhere\.tif: expected a GeoTIFF \(optical\), found no such file"):
        read_geotiff("/nonexistent/nowhere.tif", "optical")


# --------------------------------------------------------------------------- WHU-OPT-SAR


@pytest.fixture
def whu_root(tmp_path) -> Path:
    return make_fake_whu(tmp_path, names=WHU_TRAIN_NAMES[:1], height=48, width=40)


def test_whu_scene_smaller_than_a_patch(whu_root):
    with pytest.raises(DataError, match=r"NH49E004021\.tif: expected a scene of at least 64x64 pixels \(patch_size\), found 48x40"):
        WHUOptSAR(whu_root, patch_size=64)


def test_whu_modalities_of_different_sizes(whu_root):
    # a SAR of another size is aligned by georeference; one covering half the optical scene is refused
    sar = whu_root / "sar" / WHU_TRAIN_NAMES[0]
    rewrite(sar, read(sar)[:, :47, :20])
    with pytest.raises(DataError, match=r"sar/NH49E004021\.tif: expected the WHU-OPT-SAR sar to cover at least 90% .* found 49\.0% overlap"):
        WHUOptSAR(whu_root, patch_size=32)


def test_whu_label_codes_outside_the_mapping(whu_root):
    label = whu_root / "lbl" / WHU_TRAIN_NAMES[0]
    codes = read(label)
    codes[0, 40, 30] = 15
    rewrite(label, codes)
    dataset = WHUOptSAR(whu_root, patch_size=32)
    dataset.read_patch(0)  # rows 0..32: clean
    with pytest.raises(DataError, match=r"lbl/NH49E004021\.tif \(window rows 16\.\.48, cols 0\.\.32\): expected WHU-OPT-SAR label codes .* found other codes \{15: 1\}"):
        dataset.read_patch(2)


def test_whu_wrong_band_count_and_dtype(whu_root):
    optical = whu_root / "optical" / WHU_TRAIN_NAMES[0]
    rewrite(optical, read(optical)[:3])
    with pytest.raises(DataError, match=r"optical/NH49E004021\.tif: expected 4 band\(s\) .* found 3"):
        WHUOptSAR(whu_root, patch_size=32)
    rewrite(optical, np.concatenate([read(optical), read(optical)[:1]]).astype(np.uint16))
    with pytest.raises(DataError, match=r"expected data type uint8 .* found uint16"):
        WHUOptSAR(whu_root, patch_size=32)
    assert len(WHUOptSAR(whu_root, patch_size=32, value_scale=255.0)) > 0  # other data: say how to scale


def test_whu_root_without_scenes_of_the_split(whu_root):
    with pytest.raises(DataError, match=r"optical: expected scenes of the 'test' split \(e\.g\. NH49E001014\.tif\), found none"):
        WHUOptSAR(whu_root, "test", patch_size=32)


def test_no_warnings_on_clean_data(m3mcr):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        m3mcr.read_scene(0)
