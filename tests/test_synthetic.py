"""Synthetic scenes: determinism, ranges, classes, physics, designed separability, the torch dataset, speed."""

import time

import numpy as np
import pytest
import torch
import xarray as xr

from edc_lab.data.sample import OPTICAL_BANDS, WHU_CLASSES, WHU_COLORS, to_torch
from edc_lab.data.synthetic import (
    SAR_DB_RANGE,
    SyntheticScenes,
    scene_arrays,
    scene_seed,
    synthetic_scene,
)
from edc_lab.data.transforms import Compose, RandomCrop, RandomFlip

FARMLAND, CITY, VILLAGE, WATER, FOREST, ROAD, OTHERS = range(7)
NIR = OPTICAL_BANDS.index("nir")


def _to_db(sar_scaled, polarization):
    """Undo the M3M-CR scaling: [0, 1] -> dB."""
    low, high = SAR_DB_RANGE[polarization]
    return low + (high - low) * sar_scaled


def test_same_seed_identical_different_seed_different():
    first, again, other = synthetic_scene(3, 64), synthetic_scene(3, 64), synthetic_scene(4, 64)
    xr.testing.assert_identical(first, again)
    assert not np.array_equal(first.optical.values, other.optical.values)
    assert not np.array_equal(first.label.values, other.label.values)
    assert not np.array_equal(first.sar.values, other.sar.values)


def test_canonical_layout_ranges_and_georeference():
    ds = synthetic_scene(0, 96, cloud_cover=0.4)
    assert ds.optical.dims == ("band", "y", "x") and ds.optical.shape == (4, 96, 96)
    assert list(ds.band.values) == list(OPTICAL_BANDS)
    assert list(ds.polarization.values) == ["VV", "VH"]
    assert ds.label.dtype == np.uint8 and ds.cloud_mask.dtype == bool
    for name in ("optical", "optical_clear", "sar", "cloud_opacity"):
        values = ds[name].values
        assert values.dtype == np.float32 and np.isfinite(values).all()
        assert values.min() >= 0.0 and values.max() <= 1.0, name
    assert set(np.unique(ds.label.values)) <= set(range(len(WHU_CLASSES)))
    assert np.array_equal(ds.cloud_mask.values, ds.cloud_opacity.values > 0)
    assert ds.attrs["dataset"] == "synthetic" and list(ds.attrs["class_names"]) == list(WHU_CLASSES)
    assert ds.rio.crs.to_epsg() == 32650
    transform = ds.rio.transform()
    assert (transform.a, transform.e) == (5.0, -5.0)
    other = synthetic_scene(1, 96).rio.transform()
    assert (other.c, other.f) != (transform.c, transform.f)  # origin depends on the seed


def test_all_seven_classes_are_present_at_256():
    for seed in range(4):
        label = scene_arrays(seed, 256, 0.0).label
        counts = np.bincount(label.ravel(), minlength=7)
        assert np.all(counts > 0), dict(zip(WHU_CLASSES, counts.tolist()))
        # Farmland, forest and others make the landscape; the rest are a few percent.
        assert counts[[FARMLAND, FOREST, OTHERS]].sum() > 0.6 * label.size


def test_physics_water_dark_city_bright_vegetation_bright_in_nir():
    arrays = scene_arrays(11, 256, 0.0)
    label, optical, sar = arrays.label, arrays.optical_clear, arrays.sar
    vv, vh = _to_db(sar[0], "VV"), _to_db(sar[1], "VH")
    assert vv[label == WATER].mean() < -19 < vv[label == CITY].mean()
    assert vv[label == WATER].mean() < vv[label == CITY].mean() - 12
    assert vh[label == FOREST].mean() > vh[label == FARMLAND].mean() + 3  # volume scattering
    assert optical[NIR][label == FOREST].mean() > 5 * optical[NIR][label == WATER].mean()
    assert optical[NIR][label == FARMLAND].mean() > optical[NIR][label == OTHERS].mean()


def test_speckle_has_gamma_statistics_of_four_looks():
    # Inside one class the scaled SAR, back in linear power, varies by the speckle:
    # Gamma(L=4) has coefficient of variation 1 / sqrt(4) = 0.5 (plus a little texture).
    arrays = scene_arrays(5, 256, 0.0)
    vv_db = _to_db(arrays.sar[0], "VV")[arrays.label == FARMLAND]
    power = 10 ** (vv_db / 10)
    variation = power.std() / power.mean()
    assert 0.5 <= variation <= 0.65


@pytest.mark.parametrize("cover", [0.0, 0.15, 0.5, 0.85, 1.0])
def test_cloud_cover_is_hit_and_clear_image_is_kept(cover):
    for seed in range(3):
        ds = synthetic_scene(seed, 64, cloud_cover=cover, shadows=False, haze=0.0)
        assert abs(float(ds.cloud_mask.mean()) - cover) <= 0.05
        assert ds.attrs["cloud_cover"] == pytest.approx(float(ds.cloud_mask.mean()))
        clear = ~ds.cloud_mask.values
        assert np.array_equal(ds.optical.values[:, clear], ds.optical_clear.values[:, clear])
        # with the default haze the clear ground is veiled (brighter in blue), the mask unchanged
        hazy = synthetic_scene(seed, 64, cloud_cover=cover, shadows=False)
        assert np.array_equal(hazy.cloud_mask.values, ds.cloud_mask.values)
        assert np.array_equal(hazy.optical_clear.values, ds.optical_clear.values)


def test_vv_only_is_the_vv_plane_of_the_dual_pol_scene():
    dual, single = synthetic_scene(2, 64), synthetic_scene(2, 64, sar_channels=1)
    assert list(single.polarization.values) == ["VV"] and single.sar.shape == (1, 64, 64)
    assert np.array_equal(single.sar.values[0], dual.sar.values[0])
    assert np.array_equal(single.optical.values, dual.optical.values)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(seed=-1), ["seed", "-1"]),
        (dict(seed=1.5), ["seed", "1.5"]),
        (dict(seed=0, size=8), ["size", "8"]),
        (dict(seed=0, sar_channels=3), ["sar_channels", "3"]),
        (dict(seed=0, cloud_cover=1.5), ["cloud_cover", "1.5"]),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, words):
    with pytest.raises(ValueError) as error:
        synthetic_scene(**kwargs)
    for word in words:
        assert word in str(error.value)


# ----------------------------------------------------------------------------- separability by design


def _fisher_ratio(features, label, class_a, class_b):
    """Fisher's criterion of the best linear projection: d^T (S_a + S_b)^-1 d (d = mean difference)."""
    a, b = features[:, label == class_a], features[:, label == class_b]
    difference = a.mean(axis=1) - b.mean(axis=1)
    scatter = np.atleast_2d(np.cov(a)) + np.atleast_2d(np.cov(b))
    return float(difference @ np.linalg.solve(scatter, difference))


def _nearest_mean_accuracy(features, label, classes):
    """Per-pixel accuracy of a nearest-class-mean classifier (Mahalanobis, pooled covariance) on ``classes``."""
    keep = np.isin(label, classes)
    x, y = features[:, keep], label[keep]
    means = np.stack([x[:, y == c].mean(axis=1) for c in classes])
    pooled = sum(np.atleast_2d(np.cov(x[:, y == c])) for c in classes) / len(classes)
    precision = np.linalg.inv(pooled)
    centred = x[None, :, :] - means[:, :, None]  # (class, feature, pixel)
    distance = np.einsum("kfp,fg,kgp->kp", centred, precision, centred)
    predicted = np.asarray(classes)[np.argmin(distance, axis=0)]
    return float(np.mean([np.mean(predicted[y == c] == c) for c in classes]))  # balanced accuracy


@pytest.fixture(scope="module")
def pixel_features():
    """Per-pixel optical (4, N) and SAR (2, N) features and labels (N,) of three clear scenes."""
    scenes = [scene_arrays(seed, 256, 0.0) for seed in (21, 22, 23)]
    optical = np.concatenate([s.optical_clear.reshape(4, -1) for s in scenes], axis=1)
    sar = np.concatenate([s.sar.reshape(2, -1) for s in scenes], axis=1)
    label = np.concatenate([s.label.ravel() for s in scenes])
    return optical, sar, label


@pytest.mark.parametrize("pair", [(FARMLAND, OTHERS)])
def test_optical_only_pairs(pixel_features, pair):
    optical, sar, label = pixel_features
    fisher_optical, fisher_sar = _fisher_ratio(optical, label, *pair), _fisher_ratio(sar, label, *pair)
    assert fisher_optical > 5.0 and fisher_sar < 0.05
    assert _nearest_mean_accuracy(optical, label, pair) > 0.95
    assert _nearest_mean_accuracy(sar, label, pair) < 0.6  # close to a coin flip


@pytest.mark.parametrize("pair", [(VILLAGE, OTHERS), (ROAD, OTHERS), (VILLAGE, ROAD)])
def test_sar_only_pairs(pixel_features, pair):
    optical, sar, label = pixel_features
    fisher_optical, fisher_sar = _fisher_ratio(optical, label, *pair), _fisher_ratio(sar, label, *pair)
    assert fisher_sar > 1.5 and fisher_optical < 0.1
    assert _nearest_mean_accuracy(sar, label, pair) > 0.8
    assert _nearest_mean_accuracy(optical, label, pair) < 0.6


@pytest.mark.parametrize("pair", [(VILLAGE, FOREST), (WATER, ROAD)])
def test_pairs_weak_in_sar_strong_in_optical(pixel_features, pair):
    optical, sar, label = pixel_features
    fisher_optical, fisher_sar = _fisher_ratio(optical, label, *pair), _fisher_ratio(sar, label, *pair)
    assert fisher_sar < 2.0 and fisher_optical > 10 * fisher_sar


@pytest.mark.parametrize("pair", [(FARMLAND, FOREST), (CITY, VILLAGE), (WATER, OTHERS)])
def test_pairs_separable_in_both(pixel_features, pair):
    optical, sar, label = pixel_features
    assert _fisher_ratio(optical, label, *pair) > 3.0
    assert _fisher_ratio(sar, label, *pair) > 0.7


def test_fusion_beats_either_modality_on_all_classes(pixel_features):
    optical, sar, label = pixel_features
    classes = list(range(7))
    optical_only = _nearest_mean_accuracy(optical, label, classes)
    sar_only = _nearest_mean_accuracy(sar, label, classes)
    fused = _nearest_mean_accuracy(np.concatenate([optical, sar]), label, classes)
    assert fused > optical_only + 0.15 and fused > sar_only + 0.25 and fused > 0.85


# ----------------------------------------------------------------------------- torch dataset


def test_dataset_items_are_deterministic_and_match_the_xarray_path():
    dataset = SyntheticScenes(5, size=64, seed=7, cloud_cover=(0.2, 0.8))
    item = dataset[3]
    assert set(item) == {"optical", "sar", "label", "cloud_mask", "optical_clear", "has_clear"}
    again = SyntheticScenes(5, size=64, seed=7, cloud_cover=(0.2, 0.8))[3]
    reference = to_torch(dataset.scene(3))  # one generator behind both paths
    for key in item:
        assert torch.equal(item[key], again[key]), key
        assert torch.equal(item[key], reference[key]), key
    assert item["optical"].dtype == torch.float32 and item["label"].dtype == torch.int64
    assert item["cloud_mask"].dtype == torch.float32 and bool(item["has_clear"])
    assert not torch.equal(dataset[2]["optical"], item["optical"])
    assert not torch.equal(SyntheticScenes(5, size=64, seed=8)[3]["label"], item["label"])
    assert torch.equal(dataset[-2]["label"], item["label"])
    with pytest.raises(IndexError):
        dataset[5]


def test_dataset_cover_range_is_drawn_per_index_and_achieved():
    dataset = SyntheticScenes(12, size=64, seed=1, cloud_cover=(0.3, 0.6))
    covers = [dataset.cover_of(i) for i in range(12)]
    assert all(0.3 <= c <= 0.6 for c in covers) and len(set(covers)) == 12
    assert covers == [dataset.cover_of(i) for i in range(12)]
    for index in (0, 5, 11):
        assert abs(float(dataset[index]["cloud_mask"].mean()) - covers[index]) <= 0.05
    fixed = SyntheticScenes(3, size=64, cloud_cover=0.25)
    assert fixed.cover_of(2) == 0.25


def test_dataset_metadata_transforms_and_loader():
    dataset = SyntheticScenes(4, size=64, sar_channels=1, transforms=Compose([RandomCrop(32), RandomFlip()]))
    assert len(dataset) == 4 and dataset.num_classes == 7 and dataset.in_sar == 1
    assert tuple(dataset.class_names) == WHU_CLASSES and tuple(dataset.class_colors) == WHU_COLORS
    item = dataset[0]
    assert item["optical"].shape == (4, 32, 32) and item["sar"].shape == (1, 32, 32) and item["label"].shape == (32, 32)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch["optical"].shape == (2, 4, 32, 32) and batch["label"].dtype == torch.int64


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(n=-1), ["n", "-1"]),
        (dict(n=2, cloud_cover=(0.6, 0.2)), ["cloud_cover", "(0.6, 0.2)"]),
        (dict(n=2, cloud_cover=1.2), ["cloud_cover", "1.2"]),
        (dict(n=2, sar_channels=0), ["sar_channels", "0"]),
    ],
)
def test_dataset_refuses_bad_arguments(kwargs, words):
    with pytest.raises(ValueError) as error:
        SyntheticScenes(**kwargs)
    for word in words:
        assert word in str(error.value)


def test_scene_seeds_differ_between_datasets_and_indices():
    seeds = {scene_seed(s, i) for s in range(4) for i in range(50)}
    assert len(seeds) == 200


@pytest.mark.slow
def test_generation_speed_under_test_load():
    """>= 15 scenes/s at 256² with clouds on one thread (the real figure: benchmarks/RESULTS.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dataset = SyntheticScenes(40, size=256, seed=0, cloud_cover=(0.2, 0.8))
        dataset[0]
        start = time.perf_counter()
        for index in range(1, 31):
            dataset[index]
        rate = 30 / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    assert rate >= 15, f"{rate:.1f} scenes/s"


def test_context_family_is_the_default_scene_with_per_scene_band_gains():
    from edc_lab.data.synthetic import CONTEXT_GAIN, context_gains, scene_arrays

    for seed in (0, 5, 17):
        plain = scene_arrays(seed, 64, 0.5, family="default")
        shifted = scene_arrays(seed, 64, 0.5, family="context")
        # same land cover, SAR and clouds, seed for seed
        assert np.array_equal(plain.label, shifted.label) and np.array_equal(plain.sar, shifted.sar)
        assert np.array_equal(plain.cloud_mask, shifted.cloud_mask)
        gains = context_gains(seed)
        assert gains.shape == (4,) and np.all((1 / CONTEXT_GAIN <= gains) & (gains <= CONTEXT_GAIN))
        expected = np.clip(plain.optical_clear * gains[:, None, None], 0, 1)
        np.testing.assert_allclose(shifted.optical_clear, expected, rtol=2e-6, atol=1e-7)
    # gains differ between scenes and bands (a spectral shift, not only a brightness change)
    table = np.array([context_gains(seed) for seed in range(50)])
    assert table.std(axis=0).min() > 0.2 and np.log(table).mean() == pytest.approx(0.0, abs=0.15)
    assert synthetic_scene(3, 32, family="context").attrs["family"] == "context"


def test_context_family_needs_the_scene_to_read_the_optical():
    """Single-pixel optical evidence loses accuracy in the context family; knowing the
    scene's gains gives it back (the family's design claim)."""
    from edc_lab.data.synthetic import context_gains, scene_arrays

    def features(family, seeds, normalise=False):
        pixels, labels = [], []
        for seed in seeds:
            scene = scene_arrays(seed, 128, 0.0, family=family)
            optical = scene.optical_clear / (context_gains(seed)[:, None, None] if normalise else 1.0)
            pixels.append(np.log(np.maximum(optical.reshape(4, -1).T, 1e-3)))
            labels.append(scene.label.ravel())
        return np.concatenate(pixels), np.concatenate(labels)

    def balanced_accuracy(train, test):
        (x, y), (u, v) = train, test
        means = np.array([x[y == c].mean(axis=0) for c in range(7)])
        predicted = np.argmin(((u[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
        return np.mean([(predicted[v == c] == c).mean() for c in range(7) if (v == c).any()])

    train, test = range(20), range(100, 120)  # the measurement quoted in the module docstring
    default = balanced_accuracy(features("default", train), features("default", test))
    context = balanced_accuracy(features("context", train), features("context", test))
    undone = balanced_accuracy(features("context", train, True), features("context", test, True))
    assert context < default - 0.05
    assert undone == pytest.approx(default, abs=0.01)


def test_unknown_family_is_refused_by_name():
    with pytest.raises(ValueError, match=r"family.*'default', 'context'.*'cloudy'"):
        synthetic_scene(0, 32, family="cloudy")
    with pytest.raises(ValueError, match="family"):
        SyntheticScenes(2, 32, family="cloudy")
