"""Sliding-window GeoTIFF prediction: coverage, blending, georeference, real M3M-CR tile (edc_lab.predict)."""

import numpy as np
import pytest
import rasterio
import torch

from edc_lab.cli import main
from edc_lab.data.sample import DataError
from edc_lab.predict import blend_weights, predict_geotiff, sliding_window_predict, window_starts


@pytest.mark.parametrize("length", [1, 31, 64, 65, 100, 300, 1000])
@pytest.mark.parametrize("window,overlap", [(64, 16), (64, 0), (32, 31), (256, 64)])
def test_windows_cover_every_pixel_with_the_overlap(length, window, overlap):
    starts = window_starts(length, window, overlap)
    size = min(window, length)
    covered = np.zeros(length, dtype=int)
    for start in starts:
        assert 0 <= start and start + size <= length
        covered[start:start + size] += 1
    assert covered.min() >= 1
    for previous, following in zip(starts, starts[1:]):
        assert previous + size - following >= overlap  # neighbours overlap at least `overlap`


def test_window_arguments_are_checked():
    with pytest.raises(ValueError, match="overlap < window"):
        window_starts(100, 32, 32)


def test_blend_weights_positive_symmetric_centre_heavy():
    weight = blend_weights(8, 6)
    assert weight.min() > 0 and torch.allclose(weight, weight.flip(0)) and torch.allclose(weight, weight.flip(1))
    assert weight[3, 2] > weight[0, 0]


class Constant(torch.nn.Module):
    """Logits (1, 2, 3) and a cloud-free image of 0.25 everywhere, whatever the input."""

    def forward(self, optical, sar):
        batch, _, height, width = optical.shape
        logits = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1).expand(batch, 3, height, width)
        return {"logits": logits, "cloudfree": torch.full_like(optical, 0.25)}


class Pointwise(torch.nn.Module):
    """Logits = the optical bands: a per-pixel model, so every window agrees on every pixel."""

    def forward(self, optical, sar):
        return {"logits": 5 * optical + sar[:, :1], "cloudfree": None}


@pytest.mark.parametrize("shape,window,overlap", [((50, 70), 32, 8), ((20, 13), 64, 16), ((64, 64), 64, 0)])
def test_blending_a_constant_model_gives_the_constant(shape, window, overlap):
    optical, sar = torch.rand(4, *shape), torch.rand(2, *shape)
    result = sliding_window_predict(Constant(), optical, sar, window=window, overlap=overlap, batch_size=3)
    expected = torch.softmax(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), 0).float()
    assert result["probabilities"].shape == (3, *shape)
    assert torch.allclose(result["probabilities"], expected.reshape(3, 1, 1).expand(3, *shape), atol=1e-6, rtol=0)  # float32 softmax
    assert torch.allclose(result["cloudfree"], torch.full((4, *shape), 0.25), atol=1e-7, rtol=0)
    assert torch.all(result["probabilities"].argmax(0) == 2)


def test_windows_are_stitched_in_the_right_place():
    optical, sar = torch.rand(4, 45, 77), torch.rand(2, 45, 77)
    result = sliding_window_predict(Pointwise(), optical, sar, window=16, overlap=5, batch_size=4)
    expected = torch.softmax(5 * optical + sar[:1], dim=0)
    assert torch.allclose(result["probabilities"], expected, atol=1e-6) and result["cloudfree"] is None


def _quartet(root):
    base = root / "train"
    return (base / "planet_cloudy_fall/planet_cloudy_fall_1/planet_cloudy_fall_1_p_457.tif",
            base / "S1_fall/S1_fall_1/S1_fall_1_p_457.tif")


@pytest.mark.real_data
@pytest.mark.slow
def test_predict_on_the_real_m3mcr_tile(m3mcr_checkpoint, m3mcr_sample_root, tmp_path):
    optical_path, sar_path = _quartet(m3mcr_sample_root)
    out = tmp_path / "classes.tif"
    summary = predict_geotiff(m3mcr_checkpoint, optical_path, sar_path, out, window=128, overlap=32,
                              probabilities_path=tmp_path / "p.tif", cloudfree_path=tmp_path / "cf.tif")
    assert summary["windows"] == 9 and summary["convention"] == "m3mcr"
    with rasterio.open(optical_path) as source, rasterio.open(out) as result, rasterio.open(sar_path) as sar:
        assert sar.transform != source.transform  # the SAR had to be aligned by georeference
        assert result.crs == source.crs and result.transform == source.transform
        assert (result.count, result.dtypes[0], result.shape) == (1, "uint8", source.shape)
        classes = result.read(1)
    assert set(np.unique(classes)) <= set(range(6)) | {255}
    with rasterio.open(tmp_path / "p.tif") as probabilities:
        assert probabilities.count == 6 and probabilities.transform == result.transform
        p = probabilities.read()
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(p.argmax(axis=0).astype(np.uint8)[classes != 255], classes[classes != 255])
    with rasterio.open(tmp_path / "cf.tif") as cloudfree:
        assert cloudfree.count == 4 and cloudfree.crs == result.crs


@pytest.mark.real_data
def test_predict_cli_and_errors(m3mcr_checkpoint, m3mcr_sample_root, tmp_path, capsys):
    optical_path, sar_path = _quartet(m3mcr_sample_root)
    out = tmp_path / "map.tif"
    code = main(["predict", "--checkpoint", str(m3mcr_checkpoint), "--optical", str(optical_path),
                 "--sar", str(sar_path), "--out", str(out), "--window", "512", "--overlap", "0"])
    assert code == 0 and "300x300 px, 1 window(s)" in capsys.readouterr().out  # scene smaller than the window
    with pytest.raises(DataError, match="missing.tif"):
        predict_geotiff(m3mcr_checkpoint, tmp_path / "missing.tif", sar_path, out)
    with pytest.raises(DataError, match="expected 2 band"):
        predict_geotiff(m3mcr_checkpoint, optical_path, optical_path, out)  # 4-band "SAR"
    code = main(["predict", "--checkpoint", str(m3mcr_checkpoint), "--optical", str(optical_path),
                 "--sar", str(sar_path), "--out", str(out), "--window", "64", "--overlap", "64"])
    assert code == 2 and "overlap < window" in capsys.readouterr().err


def test_predict_on_a_small_synthetic_scene_written_in_the_m3mcr_layout(m3mcr_checkpoint, tmp_path):
    from edc_lab.data.synthetic import synthetic_scene
    from edc_lab.data.writer import write_m3mcr_sample

    scene = synthetic_scene(3, size=40, cloud_cover=0.3)
    relative = write_m3mcr_sample(scene, tmp_path)
    optical_path, sar_path = tmp_path / "train" / relative[1], tmp_path / "train" / relative[2]
    out = tmp_path / "map.tif"
    summary = predict_geotiff(m3mcr_checkpoint, optical_path, sar_path, out, window=64, overlap=16)
    assert summary["shape"] == (40, 40) and summary["windows"] == 1
    with rasterio.open(optical_path) as source, rasterio.open(out) as result:
        assert result.crs == source.crs and result.transform == source.transform
