"""Cloud synthesis: exact cover, thin vs thick, the mixing model, shadows, the fractal spectrum."""

import numpy as np
import pytest

from edc_lab.data.clouds import (
    CLOUD_REFLECTANCE,
    HAZE_REFLECTANCE,
    REAL_TILE_STATISTICS,
    THINNEST_OPACITY,
    add_clouds,
    cloud_statistics,
    fractal_noise,
)

#: The mechanism without texture, haze or a random thickness (the tests of the mixing model).
FLAT = dict(texture=0.0, haze=0.0, thickness=1.0)


def _ground(seed=0, size=64):
    """(4, size, size) clear reflectance in [0.02, 0.4]."""
    return np.random.default_rng(seed).uniform(0.02, 0.4, (4, size, size)).astype(np.float32)


@pytest.mark.parametrize("cover", [0.0, 0.05, 0.2, 0.5, 0.8, 0.95, 1.0])
def test_cover_is_hit_over_several_seeds(cover):
    optical = _ground()
    for seed in range(5):
        result = add_clouds(optical, cover, seed)
        # Quantile threshold: exact up to one pixel, far inside the promised +-0.05.
        assert abs(result.mask.mean() - cover) <= 1.0 / result.mask.size
        assert result.mask.dtype == bool and result.opacity.dtype == np.float32 and result.cloudy.dtype == np.float32
        assert np.array_equal(result.mask, result.opacity > 0)
        assert 0.0 <= result.opacity.min() and result.opacity.max() <= 1.0
        assert 0.0 <= result.cloudy.min() and result.cloudy.max() <= 1.0


def test_no_cover_leaves_the_image_alone_and_full_cover_hides_it():
    optical = _ground()
    clear = add_clouds(optical, 0.0, 3)  # default haze and texture: no cloud, no haze
    assert not clear.mask.any() and not clear.opacity.any() and not clear.haze.any()
    assert np.array_equal(clear.cloudy, optical)
    overcast = add_clouds(optical, 1.0, 3, thin_fraction=0.0, **FLAT)
    assert overcast.mask.all() and np.all(overcast.opacity == 1.0)
    # Opaque everywhere: the ground no longer matters (haze and texture included).
    assert np.array_equal(overcast.cloudy, add_clouds(_ground(seed=9), 1.0, 3, thin_fraction=0.0, **FLAT).cloudy)
    textured = add_clouds(optical, 1.0, 3, thin_fraction=0.0, thickness=1.0, haze=0.4)
    assert np.array_equal(textured.cloudy, add_clouds(_ground(seed=9), 1.0, 3, thin_fraction=0.0, thickness=1.0,
                                                       haze=0.4).cloudy)


def test_same_seed_same_clouds_different_seed_different_clouds():
    optical = _ground()
    first, again, other = add_clouds(optical, 0.4, 7), add_clouds(optical, 0.4, 7), add_clouds(optical, 0.4, 8)
    for a, b in zip(first, again):
        assert np.array_equal(a, b)
    assert not np.array_equal(first.mask, other.mask)


def test_thin_fraction_sets_the_share_of_thin_cloud_and_thin_cloud_sits_at_edges():
    optical = _ground(size=96)
    for thin_fraction in (0.0, 0.3, 0.7):
        result = add_clouds(optical, 0.5, 1, thin_fraction=thin_fraction, **FLAT)
        cloudy_opacity = result.opacity[result.mask]
        thin_share = np.mean(cloudy_opacity < 1.0)
        assert thin_share == pytest.approx(thin_fraction, abs=0.01)
        assert cloudy_opacity.min() >= THINNEST_OPACITY - 1e-6
    # Thin cloud is at the edges: cloud pixels next to clear ones are thinner than the rest.
    result = add_clouds(optical, 0.5, 1, thin_fraction=0.3, **FLAT)
    mask = result.mask
    clear_neighbour = np.zeros_like(mask)
    clear_neighbour[1:] |= ~mask[:-1]
    clear_neighbour[:-1] |= ~mask[1:]
    clear_neighbour[:, 1:] |= ~mask[:, :-1]
    clear_neighbour[:, :-1] |= ~mask[:, 1:]
    edge, interior = mask & clear_neighbour, mask & ~clear_neighbour
    assert result.opacity[edge].mean() < 0.6 < 0.9 < result.opacity[interior].mean()


def test_thickness_scales_the_opacity():
    optical = _ground()
    thick = add_clouds(optical, 0.5, 2, thickness=1.0, haze=0.2)
    half = add_clouds(optical, 0.5, 2, thickness=0.5, haze=0.2)
    assert np.array_equal(thick.mask, half.mask)  # same field, same place
    np.testing.assert_allclose(half.opacity, 0.5 * thick.opacity, atol=1e-6)
    assert half.opacity.max() == pytest.approx(0.5)


def test_brightness_is_a_mix_of_ground_and_a_bright_flat_cloud():
    ground_a, ground_b = _ground(seed=1), _ground(seed=2)
    cloud_a = add_clouds(ground_a, 0.6, 4, shadows=False, **FLAT)
    cloud_b = add_clouds(ground_b, 0.6, 4, shadows=False, **FLAT)
    opacity = cloud_a.opacity
    # cloudy = (1 - a) * ground + a * c, with c independent of the ground:
    np.testing.assert_allclose(cloud_a.cloudy - cloud_b.cloudy, (1 - opacity) * (ground_a - ground_b), atol=2e-6)
    # Outside the clouds (no shadows) the ground is untouched.
    assert np.array_equal(cloud_a.cloudy[:, ~cloud_a.mask], ground_a[:, ~cloud_a.mask])
    # Opaque cores: bright, nearly flat, blue highest.
    core = opacity == 1.0
    assert core.sum() > 100
    core_spectrum = cloud_a.cloudy[:, core].mean(axis=1)
    assert np.all(np.diff(core_spectrum) < 0)  # blue > green > red > nir
    assert core_spectrum.min() > 0.6 and core_spectrum.max() <= max(CLOUD_REFLECTANCE) + 1e-4


def test_shadows_darken_only_clear_ground_and_do_not_move_the_clouds():
    optical = _ground(size=96)
    with_shadows = add_clouds(optical, 0.3, 5, shadows=True)
    without = add_clouds(optical, 0.3, 5, shadows=False)  # default texture, haze and thickness
    assert np.array_equal(with_shadows.mask, without.mask)
    assert np.array_equal(with_shadows.opacity, without.opacity)
    inside = with_shadows.mask
    assert np.array_equal(with_shadows.cloudy[:, inside], without.cloudy[:, inside])
    assert np.all(with_shadows.cloudy[:, ~inside] <= without.cloudy[:, ~inside])
    darkened = (with_shadows.cloudy < without.cloudy).any(axis=0)
    assert darkened.any() and not (darkened & inside).any()
    # Shadows are a displaced copy of the clouds: no larger than the clouds themselves.
    assert darkened.mean() <= inside.mean()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(cover=-0.1), ["cover", "[0, 1]", "-0.1"]),
        (dict(cover=1.5), ["cover", "1.5"]),
        (dict(cover=0.5, thickness=1.2), ["thickness", "1.2"]),
        (dict(cover=0.5, thin_fraction=-0.2), ["thin_fraction", "-0.2"]),
        (dict(cover=0.5, thickness=(0.8, 0.2)), ["thickness", "(lo, hi)", "(0.8, 0.2)"]),
        (dict(cover=0.5, haze=1.5), ["haze", "[0, 1]", "1.5"]),
        (dict(cover=0.5, haze=(0.1, 0.2, 0.3)), ["haze", "(lo, hi)"]),
        (dict(cover=0.5, haze="thick"), ["haze", "'thick'"]),
        (dict(cover=0.5, texture=2.0), ["texture", "[0, 1]", "2.0"]),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, words):
    with pytest.raises(ValueError) as error:
        add_clouds(_ground(), seed=0, **kwargs)
    for word in words:
        assert word in str(error.value)


def test_haze_is_a_veil_everywhere_blue_heavy_and_outside_the_mask():
    optical = _ground(size=96)
    hazy = add_clouds(optical, 0.2, 6, haze=0.5, texture=0.0, thickness=1.0, shadows=False)
    # Opacity about the requested level, smooth, varying over the scene, also outside the mask.
    assert hazy.haze.mean() == pytest.approx(0.5, abs=0.05)
    assert 0.05 < hazy.haze.std() < 0.3 and hazy.haze[~hazy.mask].min() > 0
    assert np.abs(np.diff(hazy.haze, axis=0)).mean() < 0.02  # smooth from pixel to pixel
    # The mixing model outside the clouds: (1 - h) * ground + h * haze colour.
    expected = (1 - hazy.haze) * optical + hazy.haze * np.asarray(HAZE_REFLECTANCE, np.float32)[:, None, None]
    clear = ~hazy.mask
    np.testing.assert_allclose(hazy.cloudy[:, clear], expected[:, clear], atol=2e-6)
    # No cloud, no haze: cover 0 gives the clear image back, whatever the haze setting.
    cloudless = add_clouds(optical, 0.0, 6, haze=0.5)
    assert np.array_equal(cloudless.cloudy, optical) and not cloudless.haze.any()
    # Haze does not move the clouds.
    with_clouds = add_clouds(optical, 0.4, 6, haze=0.5)
    assert np.array_equal(with_clouds.mask, add_clouds(optical, 0.4, 6, haze=0.0).mask)
    assert HAZE_REFLECTANCE[0] == max(HAZE_REFLECTANCE)  # path radiance: blue highest


def test_texture_roughens_thin_cloud_and_cloud_tops_but_not_the_mask():
    optical = _ground(size=128)
    flat = add_clouds(optical, 0.5, 11, shadows=False, **FLAT)
    rough = add_clouds(optical, 0.5, 11, shadows=False, texture=0.35, haze=0.0, thickness=1.0)
    assert np.array_equal(flat.mask, rough.mask)
    core = (flat.opacity == 1.0) & (rough.opacity == 1.0)
    assert core.sum() > 200
    # Flat tops: the core brightness hardly varies; textured tops vary by several hundredths.
    assert flat.cloudy[0, core].std() < 0.02 < rough.cloudy[0, core].std()
    thin = flat.mask & (flat.opacity < 1.0)
    assert not np.allclose(flat.opacity[thin], rough.opacity[thin])
    assert rough.opacity[rough.mask].min() >= THINNEST_OPACITY - 1e-6


def test_a_thickness_range_is_drawn_per_seed_inside_the_range():
    optical = _ground()
    peaks = {round(float(add_clouds(optical, 0.5, seed, thickness=(0.3, 0.9), thin_fraction=0.5).opacity.max()), 4)
             for seed in range(8)}
    assert len(peaks) == 8 and min(peaks) >= 0.3 - 1e-6 and max(peaks) <= 0.9 + 1e-6


REAL_TILE_INSIDE_MEAN = REAL_TILE_STATISTICS["inside_mean"]
REAL_TILE_INSIDE_STD = REAL_TILE_STATISTICS["inside_std"]
REAL_TILE_OUTSIDE_MEAN = REAL_TILE_STATISTICS["outside_mean"]


def test_default_clouds_span_the_real_tiles_statistics():
    from edc_lab.data.synthetic import scene_arrays

    stats = [cloud_statistics(s.optical, s.cloud_mask) for s in (scene_arrays(seed, 128, 0.5) for seed in range(24))]
    inside_mean = np.array([s["inside_mean"] for s in stats])
    inside_std = np.array([s["inside_std"] for s in stats])
    outside_mean = np.array([s["outside_mean"] for s in stats])
    for band in range(4):
        # the real tile lies inside the range the default generator draws ...
        assert inside_mean[:, band].min() < REAL_TILE_INSIDE_MEAN[band] < inside_mean[:, band].max()
        assert inside_std[:, band].min() < REAL_TILE_INSIDE_STD[band] < inside_std[:, band].max()
        assert outside_mean[:, band].min() < REAL_TILE_OUTSIDE_MEAN[band] < outside_mean[:, band].max()
        # ... and the clouds are textured: inside-mask std of the same order as the real tile's
        assert 0.5 * REAL_TILE_INSIDE_STD[band] < np.median(inside_std[:, band]) < 3 * REAL_TILE_INSIDE_STD[band]
    # a minority of cloudy pixels is opaque (the old flat clouds: 71 %)
    scene = scene_arrays(3, 256, 0.5)
    assert np.mean(scene.cloud_opacity[scene.cloud_mask] > 0.99) < 0.3


def test_cloud_statistics_of_the_real_tile_match_the_documented_numbers():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "m3mcr_sample" / "train"
    if not root.is_dir():
        pytest.skip(f"the real M3M-CR tile is not at {root} (../shared/data)")
    import rasterio

    name = "planet_cloudy_fall/planet_cloudy_fall_1/planet_cloudy_fall_1_p_457.tif"
    with rasterio.open(root / name) as source:
        cloudy = source.read().astype(np.float32) / 10000
    mask = np.load(root / "cloudmask_fall/cloudmask_fall_1/cloudmask_fall_1_p_457.npy", allow_pickle=False)
    stats = cloud_statistics(cloudy, mask)
    np.testing.assert_allclose(stats["inside_mean"], REAL_TILE_INSIDE_MEAN, atol=1e-3)
    np.testing.assert_allclose(stats["inside_std"], REAL_TILE_INSIDE_STD, atol=1e-3)
    np.testing.assert_allclose(stats["outside_mean"], REAL_TILE_OUTSIDE_MEAN, atol=1e-3)
    np.testing.assert_allclose(stats["outside_std"], REAL_TILE_STATISTICS["outside_std"], atol=1e-3)
    assert stats["cover"] == pytest.approx(REAL_TILE_STATISTICS["cover"], abs=1e-3)


def test_cloud_statistics_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(4, H, W\).*\(4, 8, 8\).*\(9, 9\)"):
        cloud_statistics(np.zeros((4, 8, 8)), np.zeros((9, 9), bool))


def test_wrong_optical_shape_names_expected_and_found():
    with pytest.raises(ValueError, match=r"\(4, H, W\).*\(3, 8, 8\)"):
        add_clouds(np.zeros((3, 8, 8), np.float32), 0.5, 0)
    with pytest.raises(ValueError, match=r"\(4, H, W\).*\(8, 8\)"):
        add_clouds(np.zeros((8, 8), np.float32), 0.5, 0)


def test_fractal_noise_is_standardised_and_has_the_requested_spectral_slope():
    rng = np.random.default_rng(0)
    for beta in (1.5, 2.2, 3.0):
        fields = np.stack([fractal_noise((128, 128), beta, rng) for _ in range(8)])
        assert fields.dtype == np.float32
        assert np.allclose(fields.mean(axis=(1, 2)), 0, atol=1e-5)
        assert np.allclose(fields.std(axis=(1, 2)), 1, atol=1e-4)
        # The power spectrum along a line through the field falls as 1 / f^beta.
        power = (np.abs(np.fft.rfft(fields, axis=2)) ** 2).mean(axis=(0, 1))
        frequency = np.fft.rfftfreq(128)
        band = slice(3, 40)
        slope = np.polyfit(np.log(frequency[band]), np.log(power[band]), 1)[0]
        assert slope == pytest.approx(-beta, abs=0.3)


def test_fractal_noise_refuses_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="beta"):
        fractal_noise((16, 16), -1.0, rng)
    with pytest.raises(ValueError, match="shape"):
        fractal_noise((1, 16), 2.0, rng)
