"""A synthetic scene drawn from its seed in four steps: :func:`scene_arrays` gives it as plain arrays,
:func:`synthetic_scene` as the canonical ``xarray.Dataset``.

The four steps
--------------
All seeded (``numpy.random.default_rng(seed)``, same seed, same scene):

1. **a land-cover map** with WHU-OPT-SAR's seven classes and its within-class
   structure (:func:`edc_lab.data.synthetic_land_cover.land_cover`);
2. **optical reflectance** (blue, green, red, nir) from per-class spectra,
   texture and sensor noise, times a per-scene illumination;
3. **SAR backscatter** (VV, VH) in dB from per-class means, the same structure
   and Gamma speckle, scaled to [0, 1] with M3M-CR's convention (the tables of
   steps 2 and 3, and which classes each sensor separates:
   :mod:`edc_lab.data.synthetic_signatures`);
4. **clouds** on the optical image with :func:`edc_lab.data.clouds.add_clouds`;
   the clear image is kept as ``optical_clear``, the opacity as ``cloud_opacity``.

The scene lies on WHU-OPT-SAR's 5 m grid (:data:`PIXEL_SIZE_M`) in UTM 50N
(:data:`SCENE_CRS`), its origin drawn from the seed.

A second family: scenes that need context (``family="context"``)
-----------------------------------------------------------------
In the default family a pixel's class can be read from the pixel and its close
neighbours, so a model gains little from global aggregation, and clouds have no
global estimate to corrupt. The ``"context"`` family is the same scenes (same
land cover, SAR, clouds, seed for seed) with one change: each band's clear
reflectance is multiplied by its own per-scene gain, drawn log-uniformly in
``[1 / CONTEXT_GAIN, CONTEXT_GAIN]`` = [0.5, 2] (think of an uncalibrated
sensor, a season, an atmosphere). Absolute reflectance and band ratios such as
NDVI then no longer name the class; the scene as a whole does (its farmland,
forest and bare ground shift together), and clouds, which are bright, corrupt
any scene-wide estimate that includes them. The SAR is not shifted: it stays a
calibrated, local cue. Measured on 20 + 20 clear scenes at 128² (log-reflectance
nearest class mean, balanced accuracy over the seven classes, optical only):
0.65 in the default family, 0.56 in the context family, and 0.65 again when the
context scenes are divided by their true gains. This family is the controlled
experiment of ``benchmarks/RESULTS.md`` (issue 11); ``context_gains(seed)``
returns a scene's gains.

Whose idea: the 5 m grid is WHU-OPT-SAR's; the generator and both families are
our choice.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
import xarray as xr
from affine import Affine

from edc_lab.data.clouds import DEFAULT_HAZE, DEFAULT_THICKNESS, DEFAULT_THIN_FRACTION, add_clouds
from edc_lab.data.sample import WHU_CLASSES, WHU_COLORS, make_sample
from edc_lab.data.synthetic_land_cover import land_cover
from edc_lab.data.synthetic_signatures import (
    OPTICAL_LOADING_T,
    OPTICAL_MEAN_T,
    OPTICAL_NOISE,
    SAR_DB_RANGE,
    SAR_LOADING_DB_T,
    SAR_MEAN_DB_T,
    SPECKLE_LOOKS,
)

#: Pixel size in metres (WHU-OPT-SAR's grid) and the CRS (UTM 50N, Hubei).
PIXEL_SIZE_M: float = 5.0
SCENE_CRS: str = "EPSG:32650"

#: Scene families: "default" (every class is separable from local evidence) and
#: "context" (the same scenes under a strong per-scene spectral shift, so the
#: optical meaning of a pixel has to be estimated from the whole scene).
SCENE_FAMILIES: tuple[str, ...] = ("default", "context")
#: "context" family: each band's reflectance is multiplied by its own gain, drawn
#: log-uniformly in [1 / CONTEXT_GAIN, CONTEXT_GAIN] per scene.
CONTEXT_GAIN: float = 2.0


class SceneArrays(NamedTuple):
    """One synthetic scene as plain arrays (what :func:`scene_arrays` returns).

    Attributes:
        optical: (4, H, W) float32 cloudy reflectance in [0, 1].
        optical_clear: (4, H, W) float32 clear reflectance in [0, 1].
        sar: (Cs, H, W) float32 backscatter scaled to [0, 1] (VV, VH or VV only).
        label: (H, W) uint8 class index (WHU_CLASSES).
        cloud_mask: (H, W) bool.
        cloud_opacity: (H, W) float32 in [0, 1].
        transform: ``affine.Affine`` of the 5 m grid (origin depends on the seed).
        polarizations: names of the SAR planes.
    """

    optical: np.ndarray
    optical_clear: np.ndarray
    sar: np.ndarray
    label: np.ndarray
    cloud_mask: np.ndarray
    cloud_opacity: np.ndarray
    transform: Affine
    polarizations: tuple[str, ...]


# ----------------------------------------------------------------------------- random draws


@lru_cache(maxsize=1)
def _normal_quantiles() -> np.ndarray:
    """(65536,) float32 quantiles of the standard normal at probabilities (i + 0.5) / 65536."""
    from scipy.special import ndtri

    return ndtri((np.arange(65536) + 0.5) / 65536).astype(np.float32)


@lru_cache(maxsize=1)
def _speckle_db_quantiles() -> np.ndarray:
    """(65536,) float32 quantiles of speckle in dB, ``10 log10(Gamma(L, 1/L))`` with L = SPECKLE_LOOKS."""
    from scipy.special import gammaincinv

    gamma = gammaincinv(SPECKLE_LOOKS, (np.arange(65536) + 0.5) / 65536) / SPECKLE_LOOKS
    return (10.0 * np.log10(gamma)).astype(np.float32)


def _draw_from_quantiles(
    rng: np.random.Generator, quantiles: np.ndarray, shape: tuple[int, ...], out: np.ndarray | None = None
) -> np.ndarray:
    """Random draws by inverse-transform sampling from a table of 65536 quantiles.

    One random 16-bit code per value picks a quantile: the draws follow the
    tabulated distribution (tails cut at probability 1/131072), at a fraction
    of the cost of ``standard_normal`` or ``standard_gamma`` plus ``log10``.
    """
    codes = np.frombuffer(rng.bytes(2 * int(np.prod(shape))), dtype="<u2").reshape(shape)
    return np.take(quantiles, codes, out=out, mode="clip")  # "clip": no buffering of `out`


# ----------------------------------------------------------------------------- scene


def context_gains(seed: int) -> np.ndarray:
    """(4,) float32 per-band gains of the "context" family's scene ``seed``, log-uniform in
    [1 / CONTEXT_GAIN, CONTEXT_GAIN] (drawn from their own stream, ``default_rng((seed, 7))``)."""
    log_gain = np.log(CONTEXT_GAIN)
    return np.exp(np.random.default_rng((int(seed), 7)).uniform(-log_gain, log_gain, 4)).astype(np.float32)


def check_scene_arguments(seed, size, sar_channels, family: str = "default") -> None:
    """Refuse a family, seed, size or SAR channel count that no scene has (one ValueError naming it)."""
    if family not in SCENE_FAMILIES:
        raise ValueError(f"synthetic scene: expected family in {SCENE_FAMILIES}, found {family!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"synthetic scene: expected a non-negative integer seed, found {seed!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"synthetic scene: expected an integer size >= 16 pixels, found {size!r}")
    if sar_channels not in (1, 2):
        raise ValueError(f"synthetic scene: expected sar_channels 1 (VV) or 2 (VV, VH), found {sar_channels!r}")


def scene_arrays(
    seed: int,
    size: int = 256,
    cloud_cover: float = 0.5,
    *,
    thickness: float | tuple[float, float] = DEFAULT_THICKNESS,
    shadows: bool = True,
    sar_channels: int = 2,
    haze: float | tuple[float, float] = DEFAULT_HAZE,
    family: str = "default",
    thin_fraction: float = DEFAULT_THIN_FRACTION,
) -> SceneArrays:
    """Draw one synthetic scene as plain arrays (the single generator behind
    :func:`synthetic_scene` and :class:`SyntheticScenes`). Arguments as
    :func:`synthetic_scene`."""
    check_scene_arguments(seed, size, sar_channels, family)
    size = int(size)
    if not 0.0 <= cloud_cover <= 1.0:
        raise ValueError(f"synthetic scene: expected cloud_cover in [0, 1], found {cloud_cover}")
    rng = np.random.default_rng(seed)
    origin_x = 200_000.0 + PIXEL_SIZE_M * 64 * float(rng.integers(0, 1000))
    origin_y = 3_300_000.0 + PIXEL_SIZE_M * 64 * float(rng.integers(0, 1000))
    transform = Affine(PIXEL_SIZE_M, 0.0, origin_x, 0.0, -PIXEL_SIZE_M, origin_y)

    label, detail = land_cover(rng, size)

    # Optical (4, S, S): class mean + class loading * detail + class noise * N(0, 1),
    # times a per-scene illumination.
    illumination = np.float32(rng.uniform(0.92, 1.08))
    optical_clear = np.take(OPTICAL_MEAN_T, label, axis=1)
    scratch = np.take(OPTICAL_LOADING_T, label, axis=1)
    scratch *= detail
    optical_clear += scratch
    _draw_from_quantiles(rng, _normal_quantiles(), (4, size, size), out=scratch)
    scratch *= np.take(OPTICAL_NOISE, label)
    optical_clear += scratch
    optical_clear *= illumination
    if family == "context":
        # its own stream, so a context scene is its default twin with shifted spectra
        gains = context_gains(seed)
        optical_clear *= gains[:, None, None]
    np.clip(optical_clear, 0.0, 1.0, out=optical_clear)

    # SAR (Cs, S, S) in dB: class mean + class loading * detail + speckle. Gamma
    # speckle (mean 1, ENL L) is multiplicative in power, so additive in dB:
    # 10 log10(Gamma(L, 1/L)). Both planes are drawn even for VV only, so VV
    # does not depend on sar_channels.
    calibration_db = np.float32(rng.uniform(-0.5, 0.5))
    polarizations = ("VV", "VH")[:sar_channels]
    sar = np.take(SAR_MEAN_DB_T[:sar_channels], label, axis=1)
    sar_scratch = np.take(SAR_LOADING_DB_T[:sar_channels], label, axis=1)
    sar_scratch *= detail
    sar += sar_scratch
    speckle_codes = np.frombuffer(rng.bytes(2 * 2 * size * size), dtype="<u2").reshape(2, size, size)
    np.take(_speckle_db_quantiles(), speckle_codes[:sar_channels], out=sar_scratch, mode="clip")
    sar += sar_scratch
    sar += calibration_db
    for index, polarization in enumerate(polarizations):  # M3M-CR scaling to [0, 1]
        low, high = SAR_DB_RANGE[polarization]
        np.clip(sar[index], low, high, out=sar[index])
        sar[index] -= low
        sar[index] /= high - low

    cloud_seed = int(rng.integers(0, 2**31 - 1))
    clouds = add_clouds(optical_clear, cloud_cover, cloud_seed, thickness=thickness, shadows=shadows, haze=haze,
                        thin_fraction=thin_fraction)
    return SceneArrays(
        optical=clouds.cloudy,
        optical_clear=optical_clear,
        sar=sar,
        label=label,
        cloud_mask=clouds.mask,
        cloud_opacity=clouds.opacity,
        transform=transform,
        polarizations=polarizations,
    )


def synthetic_scene(
    seed: int,
    size: int = 256,
    cloud_cover: float = 0.5,
    *,
    thickness: float | tuple[float, float] = DEFAULT_THICKNESS,
    shadows: bool = True,
    sar_channels: int = 2,
    haze: float | tuple[float, float] = DEFAULT_HAZE,
    family: str = "default",
    thin_fraction: float = DEFAULT_THIN_FRACTION,
) -> xr.Dataset:
    """One synthetic cloudy optical–SAR scene as the canonical ``xarray.Dataset``.

    Args:
        seed: non-negative integer; the same seed gives the identical scene.
        size: side in pixels (5 m each); 256 is the reference size, >= 16.
        cloud_cover: fraction of the optical covered by cloud, in [0, 1]
            (achieved within ±0.05, exactly up to rounding).
        thickness: opacity of the cloud cores in [0, 1], or a (lo, hi) range drawn per scene
            (default (0.2, 1.0): from the real M3M-CR tile's thin veils to opaque cores).
        shadows: add cloud shadows on clear ground.
        sar_channels: 2 for (VV, VH), 1 for VV only.
        haze: opacity of the scene-wide haze veil in [0, 1], or a (lo, hi) range drawn per
            scene (default (0.0, 0.8)); see :func:`edc_lab.data.clouds.add_clouds`.
        family: "default", or "context" for the family whose spectra carry a per-scene
            shift (see the module docstring).
        thin_fraction: fraction of the cloudy pixels that are thin (default 0.8); the named
            cloud models of :func:`edc_lab.data.clouds.cloud_model` (``"realistic"``,
            ``"opaque"``) set it with the other cloud options:
            ``synthetic_scene(3, **cloud_model("opaque"))``.

    Returns:
        Dataset with ``optical`` (4, S, S), ``optical_clear``, ``sar`` (Cs, S, S),
        ``label`` (S, S) uint8 (WHU_CLASSES), ``cloud_mask`` (S, S) bool and
        ``cloud_opacity`` (S, S) float32, in EPSG:32650 on a 5 m grid whose
        origin depends on the seed; ``attrs`` hold the seed and the achieved cover.
    """
    arrays = scene_arrays(
        seed, size, cloud_cover, thickness=thickness, shadows=shadows, sar_channels=sar_channels, haze=haze,
        family=family, thin_fraction=thin_fraction,
    )
    return make_sample(
        arrays.optical,
        arrays.sar,
        arrays.label,
        arrays.cloud_mask,
        arrays.optical_clear,
        polarizations=arrays.polarizations,
        crs=SCENE_CRS,
        transform=arrays.transform,
        dataset="synthetic",
        class_names=WHU_CLASSES,
        class_colors=WHU_COLORS,
        extra={"cloud_opacity": (("y", "x"), arrays.cloud_opacity)},
        attrs={
            "seed": int(seed),
            "requested_cloud_cover": float(cloud_cover),
            "family": family,
            "cloud_cover": float(arrays.cloud_mask.mean()),
        },
    )
