"""Cloud synthesis: put realistic clouds, haze and shadows on any clear optical image.

The idea in plain words
-----------------------
Real cloud fields look alike at every scale: a big bank has bumps, the bumps
have bumps. A random field whose spectrum falls like a power of the frequency,
``1 / f**beta`` (*fractal* or *1/f noise*), has exactly that look, and it is
cheap: draw random Fourier coefficients, scale them and take one inverse FFT.
``beta`` is the slope of the power spectrum along a line through the field,
the number measured on cloud images (about 5/3 to 3 for real clouds; we use
2.2). In two dimensions that is a power spectral density ``1 / f**(beta + 1)``,
so the Fourier amplitudes scale as ``f**(-(beta + 1) / 2)``.

A real cloudy scene is not a white blob on a clear image. Inside the cloud
mask of the real M3M-CR tile in ``../shared/data`` the mean reflectance is
0.24 / 0.25 / 0.24 / 0.31 (blue, green, red, NIR: the NIR of the vegetation
below still shows through), with a standard deviation of 0.10-0.12 per band,
and a haze veil brightens the whole scene outside the mask too (blue 0.16
against 0.06 in the cloud-free image). So the model has four layers:

1. **Where** is cloud? Threshold the fractal field. The threshold is the
   field's own quantile, so the binary mask covers *exactly* the requested
   fraction of pixels (up to ties, which a continuous field does not have).
2. **How thick?** Above the threshold the opacity ramps up from thin to
   ``thickness``: the ``thin_fraction`` of cloudy pixels nearest the threshold
   (cloud edges, veils and wisps) are semi-transparent, the rest are opaque
   cores. A second, rougher fractal field (``texture``) modulates both the
   opacity of the thin cloud and the brightness of the cloud tops, so a cloud
   is textured, not a flat colour: no single pixel value says "cloud".
3. **Haze**: a smooth veil of opacity about ``haze`` over the *whole* scene
   (outside the mask too), with a blue-heavy path-radiance colour. It is not
   part of the cloud mask (as in M3M-CR, whose masks mark clouds, not haze).
   Haze comes with clouds: at ``cover = 0`` the image is returned unchanged.
4. **Shadows** (optional): the sun casts the cloud onto the ground a few pixels
   away, so the shadow is the opacity field displaced along a random sun
   direction, darkening the ground only where it is *not* itself under cloud.

The image is composed from the ground up (ground, shadow, haze, cloud)::

    hazy   = (1 - h) * shade * optical + h * haze_reflectance
    cloudy = (1 - opacity) * hazy + opacity * top_brightness * cloud_reflectance

Whose idea is it
----------------
Fractal cloud synthesis is a common practice in cloud-removal and
cloud-robust segmentation studies (the EDC paper, arXiv 2603.20811, and its
predecessor CloudSeg evaluate on real clouds (M3M-CR) and on clouds synthesised
on WHU-OPT-SAR's clear images). The specific recipe here (quantile threshold,
thin ramp, texture, haze veil, shadow by displacement, the reflectance
numbers and the default ranges, chosen so that the statistics inside and
outside the mask span the real tile's; notebook 01 plots both) is our choice;
it is a teaching model of clouds, not a radiative-transfer model.

Everything is seeded with ``numpy.random.default_rng(seed)``: the same seed
gives the same clouds, bit for bit.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np

#: Cloud top reflectance per band (blue, green, red, nir) of a thick core: bright,
#: nearly flat, a little higher in blue (our choice, typical of thick water clouds).
CLOUD_REFLECTANCE: tuple[float, ...] = (0.80, 0.77, 0.75, 0.72)

#: Reflectance of the haze veil per band: path radiance, highest in blue (our choice,
#: set so that a veil of opacity about 0.5 brightens a clear scene as the real
#: M3M-CR tile's haze does outside its cloud mask).
HAZE_REFLECTANCE: tuple[float, ...] = (0.24, 0.22, 0.19, 0.17)

#: Opacity of the thinnest cloud pixel, as a fraction of ``thickness``: a pixel
#: the mask calls cloud is always visibly affected.
THINNEST_OPACITY: float = 0.12

#: How much a shadow under an opaque cloud darkens the ground (fraction removed).
SHADOW_STRENGTH: float = 0.55

#: Spectral slope of the texture field: rougher than the cloud field (more small-scale detail).
TEXTURE_BETA: float = 1.2
#: Spectral slope of the haze field: very smooth, a veil that varies over the scene.
HAZE_BETA: float = 3.5
#: Relative variation of the haze opacity over the scene (std of the smooth field's factor).
HAZE_VARIATION: float = 0.35

#: Defaults of :func:`add_clouds` (our choices): 80 % of the cloudy pixels are thin, the
#: texture modulates opacity and brightness by about ±35 %, and each image draws its
#: core opacity from (0.2, 1.0) and its haze opacity from (0.0, 0.8). The thin end of
#: those ranges (thickness 0.3-0.4, haze 0.5-0.6) reproduces the real M3M-CR tile's
#: statistics inside its mask (mean 0.24-0.31, std about 0.1 per band) and outside it.
DEFAULT_THIN_FRACTION: float = 0.8
DEFAULT_TEXTURE: float = 0.35
DEFAULT_THICKNESS: tuple[float, float] = (0.2, 1.0)
DEFAULT_HAZE: tuple[float, float] = (0.0, 0.8)
#: how far outside [0, 1] an input reflectance may stray (rounding, resampling overshoot)
#: before :func:`add_clouds` refuses it as another scale
UNIT_TOLERANCE: float = 0.01


#: Statistics of the real M3M-CR tile in ``../shared/data`` (``planet_cloudy_fall_1_p_457``,
#: reflectance = DN / 10000), as :func:`cloud_statistics` computes them: the cloudy image
#: inside and outside its cloud mask, per band (blue, green, red, nir). The default clouds
#: are built to span these numbers (``tests/test_clouds.py``; notebook 01 plots both).
REAL_TILE_STATISTICS: dict = {
    "cover": 0.484,
    "inside_mean": (0.238, 0.245, 0.237, 0.305),
    "inside_std": (0.096, 0.101, 0.105, 0.116),
    "outside_mean": (0.158, 0.162, 0.151, 0.207),
    "outside_std": (0.018, 0.019, 0.020, 0.026),
}


class CloudResult(NamedTuple):
    """What :func:`add_clouds` returns.

    Attributes:
        cloudy: (4, H, W) float32 optical with haze, clouds and shadows, in [0, 1].
        opacity: (H, W) float32 cloud opacity in [0, 1] (0 = clear; haze not included).
        mask: (H, W) bool, True where cloud covers the ground (``opacity > 0`` unless ``thickness`` is 0).
        haze: (H, W) float32 opacity of the haze veil in [0, 1] (0 everywhere when ``haze`` is 0).
    """

    cloudy: np.ndarray
    opacity: np.ndarray
    mask: np.ndarray
    haze: np.ndarray


@lru_cache(maxsize=16)
def _spectral_amplitude(shape: tuple[int, int], beta: float) -> np.ndarray:
    """(H, W // 2 + 1) float32 amplitude ``f**(-(beta + 1) / 2)`` on the rfft2 grid; 0 at f = 0."""
    height, width = shape
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    frequency = np.sqrt(fy**2 + fx**2)
    frequency[0, 0] = np.inf  # no mean component: the field is zero-mean
    amplitude = (frequency ** (-(beta + 1.0) / 2.0)).astype(np.float32)
    amplitude.setflags(write=False)  # cached: shared between calls
    return amplitude


def fractal_noise(shape: tuple[int, int], beta: float, rng: np.random.Generator) -> np.ndarray:
    """A (H, W) float32 fractal random field, zero mean, unit std.

    The power spectrum of any line through the field falls as ``1 / f**beta``
    (2-D power spectral density ``1 / f**(beta + 1)``): ``beta = -1`` is white noise,
    ``beta ≈ 2`` looks like clouds, larger is smoother. The field is periodic
    (it wraps around at the borders), a property of FFT synthesis.

    Args:
        shape: (H, W), both >= 2.
        beta: spectral slope, >= 0.
        rng: a ``numpy.random.Generator``; draws 2 * H * (W // 2 + 1) normals.
    """
    height, width = (int(s) for s in shape)
    if height < 2 or width < 2:
        raise ValueError(f"fractal_noise: expected shape (H, W) with H, W >= 2, found {tuple(shape)}")
    if not beta >= 0:
        raise ValueError(f"fractal_noise: expected beta >= 0, found {beta}")
    amplitude = _spectral_amplitude((height, width), float(beta))
    # Random complex Fourier coefficients: (real, imaginary) pairs of i.i.d. normals,
    # viewed as complex64 without a copy, then shaped by the f^(-(beta+1)/2) amplitude.
    real_imag = rng.standard_normal((height, width // 2 + 1, 2), dtype=np.float32)
    coefficients = real_imag.view(np.complex64)[..., 0]  # (H, W // 2 + 1)
    coefficients *= amplitude
    field = np.fft.irfft2(coefficients, s=(height, width)).astype(np.float32, copy=False)
    field -= field.mean()
    std = field.std()
    if std > 0:
        field /= std
    return field


def add_clouds(
    optical: np.ndarray,
    cover: float,
    seed: int,
    *,
    thickness: float | tuple[float, float] = DEFAULT_THICKNESS,
    thin_fraction: float = DEFAULT_THIN_FRACTION,
    shadows: bool = True,
    beta: float = 2.2,
    texture: float = DEFAULT_TEXTURE,
    haze: float | tuple[float, float] = DEFAULT_HAZE,
) -> CloudResult:
    """Put fractal clouds, a haze veil and optionally cloud shadows on a clear optical image.

    Args:
        optical: (4, H, W) clear reflectance in [0, 1], bands blue, green, red, nir.
            Checked first (:func:`check_unit_reflectance`): integer data (uint16
            reflectance x10000, 8-bit), NaN/Inf and values outside [0, 1] are a
            ValueError, as they would otherwise come back as a white image.
        cover: requested fraction of cloudy pixels in [0, 1]; the returned mask
            covers ``round(cover * H * W)`` pixels (exact up to ties).
        seed: seed of ``numpy.random.default_rng``; same seed, same clouds.
        thickness: opacity of the cloud cores in [0, 1] (1 = opaque), or a ``(lo, hi)``
            range from which each call draws it (seeded).
        thin_fraction: fraction of the cloudy pixels that are thin
            (opacity < ``thickness``): edges and veils, in [0, 1].
        shadows: darken a displaced copy of the clouds on clear ground.
        beta: spectral slope of the fractal field along a line
            (larger = smoother clouds; see :func:`fractal_noise`).
        texture: strength of the cloud texture in [0, 1]: the relative variation
            of thin-cloud opacity and of cloud-top brightness (0 = flat clouds).
        haze: mean opacity of the scene-wide haze veil in [0, 1], or a ``(lo, hi)``
            range from which each call draws it (seeded); 0 = no haze. There is no
            haze when ``cover`` rounds to no cloudy pixel.

    Returns:
        :class:`CloudResult` ``(cloudy (4, H, W) f32, opacity (H, W) f32, mask (H, W) bool,
        haze (H, W) f32)``. At ``cover=0`` ``cloudy`` equals ``optical``. With ``haze=0``, outside the mask ``cloudy`` equals
        ``optical`` except in shadows, where it is darker. With the same seed the
        cloud field and mask do not depend on ``shadows``, ``thickness``,
        ``thin_fraction``, ``texture`` or ``haze``.
    """
    optical = check_unit_reflectance(optical)
    if optical.ndim != 3 or optical.shape[0] != 4:
        raise ValueError(
            f"add_clouds: expected optical of shape (4, H, W) (blue, green, red, nir), found {optical.shape}"
        )
    height, width = optical.shape[1:]
    if height < 2 or width < 2:
        raise ValueError(f"add_clouds: expected an image of at least 2x2 pixels, found {height}x{width}")
    if not 0.0 <= cover <= 1.0:
        raise ValueError(f"add_clouds: expected cover in [0, 1], found {cover}")
    if not 0.0 <= thin_fraction <= 1.0:
        raise ValueError(f"add_clouds: expected thin_fraction in [0, 1], found {thin_fraction}")
    if not 0.0 <= texture <= 1.0:
        raise ValueError(f"add_clouds: expected texture in [0, 1], found {texture}")
    thickness_range = unit_range("thickness", thickness)
    haze_range = unit_range("haze", haze)

    rng = np.random.default_rng(seed)
    field = fractal_noise((height, width), beta, rng)
    # Everything is drawn whatever the options, in a fixed order, so the random
    # stream (and the clouds) never depend on `shadows`, `texture` or `haze`.
    sun_angle = rng.uniform(0.0, 2.0 * np.pi)
    shadow_length = rng.uniform(0.03, 0.07) * min(height, width)
    roughness = fractal_noise((height, width), TEXTURE_BETA, rng)
    np.clip(roughness, -2.5, 2.5, out=roughness)
    haze_level = rng.uniform(*haze_range)
    thickness = rng.uniform(*thickness_range)
    veil = fractal_noise((height, width), HAZE_BETA, rng)

    # 3. (first, it is everywhere) Haze: opacity haze_level * (1 + HAZE_VARIATION * smooth field).
    if haze_level > 0:
        veil *= HAZE_VARIATION * haze_level
        veil += haze_level
        np.clip(veil, 0.0, 1.0, out=veil)
    else:
        veil[...] = 0.0

    n_pixels = height * width
    n_cloudy = int(round(cover * n_pixels))
    if n_cloudy == 0:  # a cloudless sky: no haze either (cover 0 gives back the clear image)
        zeros = np.zeros((height, width), np.float32)
        return CloudResult(optical.copy(), zeros, zeros.astype(bool), zeros.copy())
    n_thin = int(round(thin_fraction * n_cloudy))

    # 1. Where: the field's own quantile as threshold -> exactly n_cloudy pixels.
    #    The same partial sort gives the depth below which a cloudy pixel is thin
    #    (the n_thin-th smallest field value inside the cloud).
    threshold_rank = n_pixels - n_cloudy
    thin_rank = threshold_rank + max(n_thin - 1, 0)
    ordered = np.partition(field.ravel(), [threshold_rank, thin_rank])
    threshold, thin_limit = ordered[threshold_rank], ordered[thin_rank]
    mask = field >= threshold

    # 2. How thick: ramp 0 -> 1 from the cloud edge to the thin limit (smoothstep),
    #    opacity from THINNEST_OPACITY * thickness up to thickness; the texture
    #    roughens the thin part (not the cores, which stay opaque).
    ramp = field - threshold  # (H, W): depth inside the cloud, negative outside
    if n_thin == 0:
        ramp[...] = 1.0
    elif thin_limit > threshold:
        ramp /= thin_limit - threshold
        np.clip(ramp, 0.0, 1.0, out=ramp)
        ramp_squared = ramp * ramp
        ramp *= -2.0
        ramp += 3.0
        ramp *= ramp_squared  # smoothstep: soft edges
    else:  # one thin pixel: the edge pixel itself
        ramp = (ramp > 0).astype(np.float32)
    opacity = ramp * (1.0 - THINNEST_OPACITY)
    opacity += THINNEST_OPACITY
    if texture > 0:
        opacity *= 1.0 + texture * roughness * (1.0 - ramp)
        np.clip(opacity, THINNEST_OPACITY, 1.0, out=opacity)
    opacity *= thickness
    opacity *= mask  # zero outside the cloud

    # How it looks: cloud tops a little brighter in the thick cores, textured.
    brightness = ramp  # reuses the ramp's memory: 0.85 + 0.15 * ramp + 0.5 * texture * roughness
    brightness *= 0.15
    brightness += 0.85
    if texture > 0:
        brightness += (0.5 * texture) * roughness
        np.clip(brightness, 0.4, 1.15, out=brightness)

    # 4. Shadows: the opacity displaced along the sun direction, on clear ground only.
    shade: np.ndarray | float = 1.0
    if shadows and n_cloudy < n_pixels:
        shift_y = int(round(shadow_length * np.sin(sun_angle)))
        shift_x = int(round(shadow_length * np.cos(sun_angle)))
        shade = _shifted(opacity, shift_y, shift_x)
        shade[mask] = 0.0
        shade *= -SHADOW_STRENGTH
        shade += 1.0

    cloudy = _compose(optical, opacity, brightness, veil, shade)
    return CloudResult(cloudy, opacity.astype(np.float32, copy=False), mask, veil)


def check_unit_reflectance(optical) -> np.ndarray:
    """``optical`` as float32 after checking it is reflectance in [0, 1]; otherwise one ValueError.

    The cloud model mixes the ground with cloud and haze reflectances of 0.2-0.8
    and clips to [0, 1], so an image on another scale does not fail: it comes back
    all white (uint16 reflectance x10000, 8-bit values, a x1e6 scaling) or all
    NaN. So integer and boolean data types are refused, and so are NaN/Inf and
    values outside [0, 1] by more than :data:`UNIT_TOLERANCE` (rounding and
    resampling overshoot); the message gives the data type, minimum and maximum.
    """
    array = np.asarray(optical)
    dtype, where = array.dtype, "add_clouds: expected optical as float reflectance in [0, 1]"
    if not np.issubdtype(dtype, np.floating):
        found = f", values in [{array.min()}, {array.max()}]" if array.size and dtype.kind in "biu" else ""
        raise ValueError(f"{where}, found data type {dtype}{found}; scale it first, e.g. reflectance x10000 "
                         f"/ 10000 (M3M-CR) or 8-bit values / 255 (WHU-OPT-SAR)")
    array = array.astype(np.float32, copy=False)
    if not array.size:
        return array
    low, high = float(array.min()), float(array.max())  # a NaN anywhere makes both NaN
    if not (math.isfinite(low) and math.isfinite(high)):
        count = int(array.size - np.isfinite(array).sum())
        raise ValueError(f"{where}, found {count} NaN/Inf value(s) in {dtype} data (min {low}, max {high})")
    if low < -UNIT_TOLERANCE or high > 1.0 + UNIT_TOLERANCE:
        raise ValueError(f"{where} (tolerance {UNIT_TOLERANCE}), found {dtype} values with min {low:.4g} "
                         f"and max {high:.4g}")
    return array


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def unit_range(name: str, value, owner: str = "add_clouds") -> tuple[float, float]:
    """``value`` (a number or a (lo, hi) pair in [0, 1]) as a range, or one ValueError naming
    ``owner``, the argument and what was found."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or not all(_is_number(v) for v in value) or not 0.0 <= value[0] <= value[1] <= 1.0:
            raise ValueError(f"{owner}: expected {name} as (lo, hi) with 0 <= lo <= hi <= 1, found {value!r}")
        return float(value[0]), float(value[1])
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{owner}: expected {name} in [0, 1] or a (lo, hi) range, found {value!r}")
    return float(value), float(value)


def _compose(optical, opacity, brightness, veil, shade) -> np.ndarray:
    """``(1 - o) * ((1 - h) * shade * optical + h * haze) + o * brightness * cloud``, clipped to [0, 1]."""
    ground = 1.0 - veil  # (H, W) transmission of the haze
    ground *= 1.0 - opacity  # ... and of the cloud
    ground *= shade
    haze_light = veil * (1.0 - opacity)
    cloud_light = opacity * brightness
    cloudy = np.empty_like(optical)
    for band in range(4):
        np.multiply(optical[band], ground, out=cloudy[band])
        cloudy[band] += HAZE_REFLECTANCE[band] * haze_light
        cloudy[band] += CLOUD_REFLECTANCE[band] * cloud_light
    np.clip(cloudy, 0.0, 1.0, out=cloudy)
    return cloudy


def _shifted(image: np.ndarray, shift_y: int, shift_x: int) -> np.ndarray:
    """(H, W) copy of ``image`` moved by (shift_y, shift_x) pixels; uncovered pixels are 0."""
    height, width = image.shape
    out = np.zeros_like(image)
    if abs(shift_y) >= height or abs(shift_x) >= width:
        return out
    dst_y = slice(max(shift_y, 0), height + min(shift_y, 0))
    src_y = slice(max(-shift_y, 0), height + min(-shift_y, 0))
    dst_x = slice(max(shift_x, 0), width + min(shift_x, 0))
    src_x = slice(max(-shift_x, 0), width + min(-shift_x, 0))
    out[dst_y, dst_x] = image[src_y, src_x]
    return out


def cloud_statistics(optical, mask) -> dict:
    """Per-band reflectance statistics inside and outside a cloud mask (to compare clouds).

    Args:
        optical: (4, H, W) reflectance (blue, green, red, nir), e.g. a cloudy image.
        mask: (H, W) bool cloud mask.

    Returns:
        dict with ``cover`` (fraction of masked pixels) and (4,) float arrays
        ``inside_mean``, ``inside_std``, ``outside_mean``, ``outside_std`` (NaN where
        a side has no pixel). Notebook 01 puts the real M3M-CR tile's next to the
        synthetic clouds'.
    """
    optical = np.asarray(optical, dtype=np.float64)
    mask = np.asarray(mask).astype(bool)
    if optical.ndim != 3 or optical.shape[0] != 4 or optical.shape[1:] != mask.shape:
        raise ValueError(
            f"cloud_statistics: expected optical (4, H, W) and mask (H, W) on the same grid, found "
            f"{optical.shape} and {mask.shape}"
        )
    stats: dict = {"cover": float(mask.mean())}
    for side, where in (("inside", mask), ("outside", ~mask)):
        values = optical[:, where]
        empty = values.shape[1] == 0
        stats[f"{side}_mean"] = np.full(4, np.nan) if empty else values.mean(axis=1)
        stats[f"{side}_std"] = np.full(4, np.nan) if empty else values.std(axis=1)
    return stats
