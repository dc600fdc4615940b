"""Cloud synthesis: exact cover, thin vs thick, the mixing model, shadows, the fractal spectrum."""

import numpy as np
import pytest

from edc_lab.data.clouds import CLOUD_REFLECTANCE, THINNEST_OPACITY, add_clouds, fractal_noise


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
    clear = add_clouds(optical, 0.0, 3)
    assert not clear.mask.any() and not clear.opacity.any()
    assert np.array_equal(clear.cloudy, optical)
    overcast = add_clouds(optical, 1.0, 3, thin_fraction=0.0)
    assert overcast.mask.all() and np.all(overcast.opacity == 1.0)
    # Opaque everywhere: the ground no longer matters.
    assert np.array_equal(overcast.cloudy, add_clouds(_ground(seed=9), 1.0, 3, thin_fraction=0.0).cloudy)


def test_same_seed_same_clouds_different_seed_different_clouds():
    optical = _ground()
    first, again, other = add_clouds(optical, 0.4, 7), add_clouds(optical, 0.4, 7), add_clouds(optical, 0.4, 8)
    for a, b in zip(first, again):
        assert np.array_equal(a, b)
    assert not np.array_equal(first.mask, other.mask)


def test_thin_fraction_sets_the_share_of_thin_cloud_and_thin_cloud_sits_at_edges():
    optical = _ground(size=96)
    for thin_fraction in (0.0, 0.3, 0.7):
        result = add_clouds(optical, 0.5, 1, thickness=1.0, thin_fraction=thin_fraction)
        cloudy_opacity = result.opacity[result.mask]
        thin_share = np.mean(cloudy_opacity < 1.0)
        assert thin_share == pytest.approx(thin_fraction, abs=0.01)
        assert cloudy_opacity.min() >= THINNEST_OPACITY - 1e-6
    # Thin cloud is at the edges: cloud pixels next to clear ones are thinner than the rest.
    result = add_clouds(optical, 0.5, 1, thin_fraction=0.3)
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
    thick = add_clouds(optical, 0.5, 2, thickness=1.0)
    half = add_clouds(optical, 0.5, 2, thickness=0.5)
    assert np.array_equal(thick.mask, half.mask)  # same field, same place
    np.testing.assert_allclose(half.opacity, 0.5 * thick.opacity, atol=1e-6)
    assert half.opacity.max() == pytest.approx(0.5)


def test_brightness_is_a_mix_of_ground_and_a_bright_flat_cloud():
    ground_a, ground_b = _ground(seed=1), _ground(seed=2)
    cloud_a = add_clouds(ground_a, 0.6, 4, shadows=False)
    cloud_b = add_clouds(ground_b, 0.6, 4, shadows=False)
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
    without = add_clouds(optical, 0.3, 5, shadows=False)
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
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, words):
    with pytest.raises(ValueError) as error:
        add_clouds(_ground(), seed=0, **kwargs)
    for word in words:
        assert word in str(error.value)


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
