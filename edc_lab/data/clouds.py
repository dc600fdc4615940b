"""Cloud synthesis: put realistic clouds (and their shadows) on any clear optical image.

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

1. **Where** is cloud? Threshold the fractal field. The threshold is the
   field's own quantile, so the binary mask covers *exactly* the requested
   fraction of pixels (up to ties, which a continuous field does not have).
2. **How thick?** Above the threshold the opacity ramps up from thin to
   ``thickness``: the ``thin_fraction`` of cloudy pixels nearest the threshold
   (cloud edges and the isolated wisps where the field only just crosses it)
   form thin, semi-transparent cloud; the rest are opaque cores.
3. **How does it look?** A cloud is a bright, spectrally flat reflector
   (slightly brighter in blue) seen through with transparency ``1 - opacity``::

       cloudy = (1 - opacity) * optical + opacity * cloud_reflectance

4. **Shadows** (optional): the sun casts the cloud onto the ground a few pixels
   away, so the shadow is the opacity field displaced along a random sun
   direction, darkening the image only where the ground is *not* itself under
   cloud.

Whose idea is it
----------------
Fractal cloud synthesis is a common practice in cloud-removal and
cloud-robust segmentation studies (the EDC paper, arXiv 2603.20811, and its
predecessor CloudSeg evaluate on real clouds (M3M-CR) and on clouds synthesised
on WHU-OPT-SAR's clear images). The specific recipe here (quantile threshold,
thin ramp, shadow by displacement, the cloud reflectance numbers) is our
choice; it is a teaching model of clouds, not a radiative-transfer model.

Everything is seeded with ``numpy.random.default_rng(seed)``: the same seed
gives the same clouds, bit for bit.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

#: Cloud top reflectance per band (blue, green, red, nir): bright, nearly flat,
#: a little higher in blue (our choice, typical of thick water clouds).
CLOUD_REFLECTANCE: tuple[float, ...] = (0.80, 0.77, 0.75, 0.72)

#: Opacity of the thinnest cloud pixel, as a fraction of ``thickness``: a pixel
#: the mask calls cloud is always visibly affected.
THINNEST_OPACITY: float = 0.15

#: How much a shadow under an opaque cloud darkens the ground (fraction removed).
SHADOW_STRENGTH: float = 0.55


class CloudResult(NamedTuple):
    """What :func:`add_clouds` returns.

    Attributes:
        cloudy: (4, H, W) float32 optical with clouds and shadows, in [0, 1].
        opacity: (H, W) float32 cloud opacity in [0, 1] (0 = clear).
        mask: (H, W) bool, True where cloud covers the ground (``opacity > 0`` unless ``thickness`` is 0).
    """

    cloudy: np.ndarray
    opacity: np.ndarray
    mask: np.ndarray


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
    thickness: float = 1.0,
    thin_fraction: float = 0.3,
    shadows: bool = True,
    beta: float = 2.2,
) -> CloudResult:
    """Put fractal clouds (and optionally their shadows) on a clear optical image.

    Args:
        optical: (4, H, W) clear reflectance in [0, 1], bands blue, green, red, nir.
        cover: requested fraction of cloudy pixels in [0, 1]; the returned mask
            covers ``round(cover * H * W)`` pixels (exact up to ties).
        seed: seed of ``numpy.random.default_rng``; same seed, same clouds.
        thickness: opacity of the cloud cores, in [0, 1] (1 = opaque).
        thin_fraction: fraction of the cloudy pixels that are thin
            (opacity < ``thickness``): edges and veils, in [0, 1].
        shadows: darken a displaced copy of the clouds on clear ground.
        beta: spectral slope of the fractal field along a line
            (larger = smoother clouds; see :func:`fractal_noise`).

    Returns:
        :class:`CloudResult` ``(cloudy (4, H, W) f32, opacity (H, W) f32, mask (H, W) bool)``.
        Outside the mask, ``cloudy`` equals ``optical`` except in shadows,
        where it is darker. With the same seed the cloud field does not depend
        on ``shadows``, ``thickness`` or ``thin_fraction``.
    """
    optical = np.asarray(optical, dtype=np.float32)
    if optical.ndim != 3 or optical.shape[0] != 4:
        raise ValueError(
            f"add_clouds: expected optical of shape (4, H, W) (blue, green, red, nir), found {optical.shape}"
        )
    height, width = optical.shape[1:]
    if height < 2 or width < 2:
        raise ValueError(f"add_clouds: expected an image of at least 2x2 pixels, found {height}x{width}")
    if not 0.0 <= cover <= 1.0:
        raise ValueError(f"add_clouds: expected cover in [0, 1], found {cover}")
    if not 0.0 <= thickness <= 1.0:
        raise ValueError(f"add_clouds: expected thickness in [0, 1], found {thickness}")
    if not 0.0 <= thin_fraction <= 1.0:
        raise ValueError(f"add_clouds: expected thin_fraction in [0, 1], found {thin_fraction}")

    rng = np.random.default_rng(seed)
    field = fractal_noise((height, width), beta, rng)
    # The shadow direction is drawn whether or not shadows are wanted, so the
    # random stream (and the clouds) never depend on the `shadows` flag.
    sun_angle = rng.uniform(0.0, 2.0 * np.pi)
    shadow_length = rng.uniform(0.03, 0.07) * min(height, width)

    n_pixels = height * width
    n_cloudy = int(round(cover * n_pixels))
    if n_cloudy == 0:
        return CloudResult(optical.copy(), np.zeros((height, width), np.float32), np.zeros((height, width), bool))
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
    #    opacity from THINNEST_OPACITY * thickness up to thickness.
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
    opacity = ramp * (thickness * (1.0 - THINNEST_OPACITY))
    opacity += thickness * THINNEST_OPACITY
    opacity *= mask  # zero outside the cloud

    # 3. How it looks: cloudy = transparency * optical + opacity * cloud reflectance,
    #    the cloud a little brighter in its thick cores.
    cloud_light = ramp
    cloud_light *= 0.1
    cloud_light += 0.9
    cloud_light *= opacity
    transparency = 1.0 - opacity

    # 4. Shadows: the opacity displaced along the sun direction, on clear ground only
    #    (folded into the transparency, which is 1 there).
    if shadows and n_cloudy < n_pixels:
        shift_y = int(round(shadow_length * np.sin(sun_angle)))
        shift_x = int(round(shadow_length * np.cos(sun_angle)))
        shade = _shifted(opacity, shift_y, shift_x)
        shade[mask] = 0.0
        shade *= -SHADOW_STRENGTH
        shade += 1.0
        transparency *= shade

    cloudy = np.empty_like(optical)
    for band, reflectance in enumerate(CLOUD_REFLECTANCE):
        np.multiply(optical[band], transparency, out=cloudy[band])
        cloudy[band] += reflectance * cloud_light
    np.clip(cloudy, 0.0, 1.0, out=cloudy)
    return CloudResult(cloudy, opacity.astype(np.float32, copy=False), mask)


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
