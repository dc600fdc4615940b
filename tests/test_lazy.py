"""Lazy (dask-backed) reading: nothing is read on opening, values equal the eager readers, bad files named."""

from __future__ import annotations

from pathlib import Path

import dask.array
import numpy as np
import pytest
import rasterio
from affine import Affine
from dask.callbacks import Callback
from rasterio.enums import Resampling

from edc_lab.data import DataError, OPTICAL_BANDS, open_lazy, open_prediction, open_scene_lazy, read_geotiff
from edc_lab.data.io import align_to, read_covering
from edc_lab.data.synthetic import synthetic_scene
from edc_lab.data.writer import write_geotiff, write_m3mcr_sample, write_whu_sample

CRS = "EPSG:32650"
TRANSFORM = Affine(3.0, 0.0, 459000.0, 0.0, -3.0, 3327000.0)
CLASSES = ["farmland", "city", "village", "water", "forest", "road", "others"]


class TaskCount(Callback):
    """Counts the dask tasks that run (none may run while a file is only opened)."""

    def __init__(self):
        super().__init__()
        self.tasks = 0

    def _pretask(self, key, dsk, state):
        self.tasks += 1


@pytest.fixture(scope="module")
def m3mcr_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A 100x100 synthetic scene in the M3M-CR layout: 3 m optical, 10 m SAR shifted 1 m / 2 m."""
    root = tmp_path_factory.mktemp("m3mcr")
    relative = write_m3mcr_sample(synthetic_scene(3, size=100, cloud_cover=0.3), root)
    return root / "train" / relative[1], root / "train" / relative[2]


@pytest.fixture(scope="module")
def prediction(tmp_path_factory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """A class map (uint8, 255 = no data) and its probabilities, written as predict_geotiff writes them."""
    root = tmp_path_factory.mktemp("prediction")
    rng = np.random.default_rng(0)
    probabilities = rng.random((7, 70, 90), dtype=np.float32)
    probabilities /= probabilities.sum(axis=0)
    classes = probabilities.argmax(axis=0).astype(np.uint8)
    classes[:5, :20] = 255
    write_geotiff(root / "classes.tif", classes[None], crs=CRS, transform=TRANSFORM, nodata=255)
    write_geotiff(root / "probabilities.tif", probabilities, crs=CRS, transform=TRANSFORM, descriptions=CLASSES)
    return root / "classes.tif", root / "probabilities.tif", classes, probabilities


# --------------------------------------------------------------------------- lazy, and equal to the eager read


def test_opening_reads_nothing_and_gives_the_chunks_asked_for(m3mcr_pair):
    optical_path, _ = m3mcr_pair
    with TaskCount() as count:
        optical = open_lazy(optical_path, "optical", chunks=(32, 48))
        window = optical.isel(y=slice(0, 20), x=slice(0, 30))
    assert isinstance(optical.data, dask.array.Array) and count.tasks == 0
    assert optical.chunks == ((4,), (32, 32, 32, 4), (48, 48, 4))
    assert list(optical.band.values) == list(OPTICAL_BANDS)
    # a zoom inside the first chunk computes that chunk only, not the 12 of the scene
    graph_keys = {key[0] if isinstance(key, tuple) else key for key in window.data.__dask_graph__()}
    with TaskCount() as count:
        window.compute()
    assert count.tasks < 12 and any("open_rasterio" in str(key) for key in graph_keys)
    assert window.data.numblocks == (1, 1, 1)


@pytest.mark.parametrize("chunks, expected", [(64, ((64, 36), (64, 36))), ({"y": 50, "x": -1}, ((50, 50), (100,)))])
def test_values_coordinates_and_georeference_equal_the_eager_read(m3mcr_pair, chunks, expected):
    optical_path, _ = m3mcr_pair
    optical = open_lazy(optical_path, "optical", chunks=chunks)
    eager = read_geotiff(optical_path, "optical").to_xarray()
    assert optical.chunks[1:] == expected
    np.testing.assert_array_equal(optical.values, eager.values)
    assert optical.dtype == eager.dtype == np.uint16
    np.testing.assert_array_equal(optical.x.values, eager.x.values)
    np.testing.assert_array_equal(optical.y.values, eager.y.values)
    assert optical.rio.crs == eager.rio.crs and optical.rio.transform() == eager.rio.transform()
    assert optical.rio.nodata == 0


def test_a_window_selected_by_map_coordinates_equals_the_eager_window(m3mcr_pair):
    optical_path, _ = m3mcr_pair
    optical = open_lazy(optical_path, "optical", chunks=32)
    x0, y0 = optical.x.values[40], optical.y.values[10]
    zoom = optical.sel(x=slice(x0, x0 + 3.0 * 24), y=slice(y0, y0 - 3.0 * 16)).compute()  # y decreases downwards
    eager = read_geotiff(optical_path, "optical", window=rasterio.windows.Window(40, 10, 25, 17))
    assert zoom.shape == (4, 17, 25)
    np.testing.assert_array_equal(zoom.values, eager.values)
    assert zoom.rio.transform() == eager.transform


def test_optical_band_order_from_the_band_descriptions(tmp_path):
    scene = synthetic_scene(1, size=32)
    paths = write_whu_sample(scene, tmp_path, "scene", optical_bands=("red", "green", "blue", "nir"),
                             sar_polarization="VV")
    optical = open_lazy(paths["optical"], "optical", chunks=16)
    in_file_order = read_geotiff(paths["optical"], "optical").values
    assert list(optical.band.values) == list(OPTICAL_BANDS)
    np.testing.assert_array_equal(optical.sel(band="red").values, in_file_order[0])
    np.testing.assert_array_equal(optical.sel(band="blue").values, in_file_order[2])


def test_sar_is_named_by_polarization(m3mcr_pair):
    _, sar_path = m3mcr_pair
    sar = open_lazy(sar_path, "sar", chunks=16)
    assert sar.dims == ("polarization", "y", "x") and list(sar.polarization.values) == ["VV", "VH"]
    np.testing.assert_array_equal(sar.values, read_geotiff(sar_path, "SAR").values)


# --------------------------------------------------------------------------- a scene: SAR aligned chunk by chunk


@pytest.mark.parametrize("chunks", [(40, 48), 17, 100])
def test_sar_aligned_chunk_by_chunk_equals_the_whole_scene_alignment(m3mcr_pair, chunks):
    optical_path, sar_path = m3mcr_pair
    with TaskCount() as count:
        scene = open_scene_lazy(optical_path, sar_path, chunks=chunks)
    assert count.tasks == 0 and isinstance(scene["sar"].data, dask.array.Array)
    assert scene["sar"].chunks[1:] == scene["optical"].chunks[1:]
    assert scene["sar"].dims == ("polarization", "y", "x") and scene.rio.crs == scene["optical"].rio.crs
    # the eager path of edc-lab predict: the covering window of the SAR, resampled by rioxarray reproject_match
    optical = read_geotiff(optical_path, "optical")
    whole = align_to(read_covering(sar_path, "SAR", optical), optical, resampling=Resampling.bilinear,
                     nodata=np.nan, what="SAR")
    chunked = scene["sar"].values
    assert np.array_equal(np.isnan(chunked), np.isnan(whole))  # the same thin strip outside the SAR footprint
    assert np.isnan(whole).any() and not np.isnan(whole).all()
    # equal up to floating round-off of the pixel coordinates (measured: at most 3e-11 dB)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(scene["optical"].values, optical.values)


def test_sar_on_the_optical_grid_is_not_resampled(tmp_path):
    values = np.random.default_rng(1).normal(-12, 3, (2, 30, 40))
    values[0, 0, 0] = -9999.0
    write_geotiff(tmp_path / "sar.tif", values, crs=CRS, transform=TRANSFORM, nodata=-9999.0)
    write_geotiff(tmp_path / "optical.tif", np.ones((4, 30, 40), np.uint16), crs=CRS, transform=TRANSFORM)
    scene = open_scene_lazy(tmp_path / "optical.tif", tmp_path / "sar.tif", chunks=16)
    expected = values.copy()
    expected[0, 0, 0] = np.nan  # the file's nodata
    np.testing.assert_array_equal(scene["sar"].values, expected)


def test_a_sar_that_does_not_cover_the_optical_is_refused(tmp_path):
    write_geotiff(tmp_path / "optical.tif", np.ones((4, 30, 40), np.uint16), crs=CRS, transform=TRANSFORM)
    far = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 3327000.0)
    write_geotiff(tmp_path / "sar.tif", np.zeros((2, 10, 10)), crs=CRS, transform=far)
    with pytest.raises(DataError, match=r"sar\.tif: expected the SAR to cover at least 90% .* found 0\.0% overlap"):
        open_scene_lazy(tmp_path / "optical.tif", tmp_path / "sar.tif")


# --------------------------------------------------------------------------- predictions


def test_prediction_classes_mask_and_named_probabilities(prediction):
    classes_path, probabilities_path, classes, probabilities = prediction
    with TaskCount() as count:
        opened = open_prediction(classes_path, probabilities=probabilities_path, chunks=32)
    assert count.tasks == 0
    assert all(isinstance(opened[name].data, dask.array.Array) for name in ("classes", "valid", "probabilities"))
    assert opened.attrs["class_names"] == CLASSES and list(opened["class"].values) == CLASSES
    assert opened["classes"].dtype == np.uint8 and opened["classes"].chunks == ((32, 32, 6), (32, 32, 26))
    np.testing.assert_array_equal(opened["classes"].values, classes)
    np.testing.assert_array_equal(opened["valid"].values, classes != 255)
    expected = np.where(classes != 255, probabilities, np.nan)
    np.testing.assert_array_equal(opened["probabilities"].values, expected)
    assert opened.rio.crs == CRS and opened.rio.transform() == TRANSFORM
    zoom = opened.isel(y=slice(30, 40), x=slice(60, 75)).compute()
    np.testing.assert_array_equal(zoom["classes"].values, classes[30:40, 60:75])


def test_prediction_written_by_predict_geotiff(tmp_path):
    from edc_lab.models import build_model
    from edc_lab.predict import predict_geotiff
    from edc_lab.train.checkpoint import save_checkpoint

    names = ["forest", "rangeland", "agriculture", "urban", "barren", "water"]
    model = build_model("edc_tiny", num_classes=6)
    save_checkpoint(tmp_path / "model.pt", {"model": model.state_dict(), "build_args": model.build_args, "step": 0,
                                            "data": {"name": "m3mcr", "class_names": names, "in_sar": 2}})
    relative = write_m3mcr_sample(synthetic_scene(3, size=40, cloud_cover=0.3), tmp_path)
    predict_geotiff(tmp_path / "model.pt", tmp_path / "train" / relative[1], tmp_path / "train" / relative[2],
                    tmp_path / "classes.tif", window=32, overlap=8, probabilities_path=tmp_path / "probabilities.tif")
    opened = open_prediction(tmp_path / "classes.tif", probabilities=tmp_path / "probabilities.tif", chunks=16)
    assert opened.attrs["class_names"] == names
    np.testing.assert_array_equal(opened["classes"].values, read_geotiff(tmp_path / "classes.tif", "c").values[0])
    argmax = opened["probabilities"].fillna(-1).argmax("class").values
    np.testing.assert_array_equal(argmax[opened["valid"].values], opened["classes"].values[opened["valid"].values])


# --------------------------------------------------------------------------- bad input: one error naming the file


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nothing\.tif: expected a GeoTIFF \(optical .*\), found no such file"):
        open_lazy(tmp_path / "nothing.tif", "optical")


def test_not_a_geotiff(tmp_path):
    (tmp_path / "notes.tif").write_text("these are notes, not pixels\n")
    with pytest.raises(DataError, match=r"notes\.tif: expected a readable GeoTIFF \(SAR\), found a file rasterio "
                                        r"cannot open \(corrupt or not a raster\)"):
        open_lazy(tmp_path / "notes.tif", "sar")


def test_wrong_band_count(tmp_path):
    write_geotiff(tmp_path / "three.tif", np.ones((3, 8, 8), np.uint16), crs=CRS, transform=TRANSFORM)
    with pytest.raises(DataError, match=r"three\.tif: expected 4 band\(s\) \(optical .*\), found 3"):
        open_lazy(tmp_path / "three.tif", "optical")


def test_probabilities_given_as_the_class_map(prediction):
    _, probabilities_path, _, _ = prediction
    with pytest.raises(DataError, match=r"probabilities\.tif: expected a class map \(1 band, uint8, 255 = no data\), "
                                        r"found 7 band\(s\) of float32 \(a probabilities file\? pass it as"):
        open_prediction(probabilities_path)


def test_probabilities_on_another_grid(prediction, tmp_path):
    classes_path, _, _, _ = prediction
    write_geotiff(tmp_path / "other.tif", np.zeros((7, 70, 80), np.float32), crs=CRS, transform=TRANSFORM)
    with pytest.raises(DataError, match=r"other\.tif: expected probabilities on the grid of the class map .*classes"
                                        r"\.tif \(70x90, EPSG:32650\), found 70x80"):
        open_prediction(classes_path, probabilities=tmp_path / "other.tif")


@pytest.mark.parametrize("what, chunks, message", [
    ("cloud", 64, r"what: expected one of \('optical', 'sar', 'classes', 'probabilities'\), found 'cloud'"),
    ("optical", 0, r"chunks: expected rows as a positive int"),
    ("optical", "big", r"chunks: expected an int, a \(rows, cols\) pair or a dict"),
    ("optical", {"band": 1, "rows": 4}, r"chunks: expected keys 'y' and 'x', found \['rows'\]"),
])
def test_bad_arguments(m3mcr_pair, what, chunks, message):
    with pytest.raises(ValueError, match=message):
        open_lazy(m3mcr_pair[0], what, chunks=chunks)


def test_sar_in_another_crs_is_aligned_by_georeference(tmp_path):
    from rasterio.warp import transform_bounds

    write_geotiff(tmp_path / "optical.tif", np.ones((4, 60, 75), np.uint16), crs=CRS, transform=TRANSFORM)
    west, south, east, north = transform_bounds(CRS, "EPSG:4326", 458900.0, 3326720.0, 459325.0, 3327100.0)
    step = 1e-4  # degrees, about 10 m
    height, width = int((north - south) / step) + 1, int((east - west) / step) + 1
    ramp = np.linspace(-25.0, -5.0, width)[None, None] + np.linspace(0.0, 3.0, height)[None, :, None]
    write_geotiff(tmp_path / "sar.tif", np.repeat(ramp, 2, axis=0), crs="EPSG:4326",
                  transform=Affine(step, 0.0, west, 0.0, -step, north))
    chunked = open_scene_lazy(tmp_path / "optical.tif", tmp_path / "sar.tif", chunks=23)["sar"].values
    optical = read_geotiff(tmp_path / "optical.tif", "optical")
    whole = align_to(read_covering(tmp_path / "sar.tif", "SAR", optical), optical, resampling=Resampling.bilinear,
                     nodata=np.nan, what="SAR")
    assert not np.isnan(chunked).any() and not np.isnan(whole).any()
    # GDAL's approximate transformer (<= 0.125 px) interpolates over each warped block: close, not bit for bit
    np.testing.assert_allclose(chunked, whole, atol=0.05)
