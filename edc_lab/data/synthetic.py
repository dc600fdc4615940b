"""Synthetic cloudy optical–SAR scenes: the embedded default data of edc_lab.

The idea in plain words
-----------------------
To learn what optical–SAR fusion buys under clouds you need scenes where it
matters, instantly and without a download. A synthetic scene is drawn in four
steps, all seeded (``numpy.random.default_rng(seed)``, same seed, same scene):

1. **A land-cover map** with WHU-OPT-SAR's seven classes, laid out like a
   landscape near a Chinese river town (5 m pixels):
   field *parcels* (farmland: a rotated, jittered grid of rectangles, each
   parcel with its own crop vigour), *forest* blobs (thresholded smooth
   noise), a meandering *river* and a few *lakes* (water), one *city* (a
   dense grid of building blocks and streets), small *village* clusters of
   houses, a *road* network (straight or gently curved lines 2–4 px wide),
   and *others* (bare soil and grass) everywhere else.
2. **Optical reflectance** (blue, green, red, nir) from per-class spectra, plus
   within-class texture (crop vigour, canopy, bare-soil/grass mixing,
   building/street pattern) and sensor noise. Vegetation is bright in NIR,
   water is dark.
3. **SAR backscatter** (VV, VH) in dB from per-class means and the same
   within-class structure (water ≈ −22 dB VV, city bright by double bounce,
   forest high VH by volume scattering), with multiplicative Gamma speckle of
   ENL 4, then clipped and scaled to [0, 1] with the M3M-CR convention
   (VV: [−25, 0] dB, VH: [−32.5, 0] dB, linear to [0, 1]).
4. **Clouds** on the optical image with :func:`edc_lab.data.clouds.add_clouds`;
   the clear image is kept as ``optical_clear``, the opacity as ``cloud_opacity``.

Which classes separate where (designed so that fusion matters)
--------------------------------------------------------------
Per-pixel Fisher ratio ``J = d^T (S_a + S_b)^-1 d`` (d: difference of the
class means, S: class covariances; > 1 separates well, ≈ 0 not at all) on
clear optical (4 bands) and on SAR (VV, VH), measured on seeds 21-23 at 256²:

=================  =====================  =====================  =============
pair               optical                SAR                    J opt / J sar
=================  =====================  =====================  =============
farmland – others  yes (NDVI: NIR, red)   **no** (same σ0)       17.6 / 0.00
village – others   **no** (same spectrum) yes (double bounce)    0.00 / 2.7
road – others      **no** (same spectrum) yes (smooth: dark)     0.01 / 7.9
village – road     **no**                 yes                    0.02 / 16.6
village – forest   yes (canopy)           **weak** (both bright) 41.5 / 0.20
water – road       yes (NIR)              **weak** (both dark)   197 / 1.7
farmland – forest  yes (darker canopy)    yes (VH volume)        10.4 / 3.3
city – village     yes (bright, low NIR)  partly (brighter)      7.9 / 1.4
water – others     yes                    yes                    196 / 17.3
=================  =====================  =====================  =============

A nearest-class-mean classifier on single pixels reaches a balanced accuracy
of about 0.69 on the optical alone, 0.60 on the SAR alone and 0.95 on both.
So under a thick cloud the SAR still finds villages, roads, water, forest and
the city, but farmland and others become one blur; without the SAR, villages
and roads vanish into the bare ground. ``tests/test_synthetic.py`` asserts
these orderings. At 5 m a village (roofs, courtyards, trees) and a narrow
road (mixed with its verges) really do look much like bare or grassy ground;
making them *identical* in the optical is our simplification, to make the
lesson sharp.

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

Whose idea is it
----------------
The class set and the 5 m grid are WHU-OPT-SAR's; the SAR scaling is
M3M-CR's (both used by EDC, arXiv 2603.20811, and by its predecessor CloudSeg).
The scene generator, its numbers and the separability design are our choice.

Speed
-----
:class:`SyntheticScenes` makes more than 50 scenes/s at 256² with clouds on one
core (``benchmarks/bench_scenes.py``): everything is vectorised numpy, smooth
fields come from small FFTs, windows are used for local objects, and the
dataset skips the ``xarray.Dataset`` (it calls the same :func:`scene_arrays`
as :func:`synthetic_scene`, so both give identical numbers).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple, Sequence

import numpy as np
import torch
import xarray as xr
from affine import Affine

from edc_lab.data.clouds import DEFAULT_HAZE, DEFAULT_THICKNESS, DEFAULT_THIN_FRACTION, add_clouds, unit_range
from edc_lab.data.sample import OPTICAL_BANDS, WHU_CLASSES, WHU_COLORS, make_sample

# Class indices (WHU-OPT-SAR order).
FARMLAND, CITY, VILLAGE, WATER, FOREST, ROAD, OTHERS = range(7)

#: Clear-sky surface reflectance per class: (class, band) with bands blue, green, red, nir.
OPTICAL_MEAN = np.array(
    [
        [0.045, 0.085, 0.060, 0.320],  # farmland: green crops, high NIR
        [0.115, 0.120, 0.125, 0.160],  # city: bright grey roofs and concrete, low NIR
        [0.085, 0.105, 0.120, 0.210],  # village: like others (roofs, courtyards, trees mixed)
        [0.070, 0.075, 0.050, 0.025],  # water: dark, darkest in NIR
        [0.030, 0.055, 0.035, 0.290],  # forest: dark visible canopy, high NIR
        [0.085, 0.105, 0.120, 0.210],  # road: like others (narrow, mixed with verges)
        [0.085, 0.105, 0.120, 0.210],  # others: bare soil and grass
    ],
    dtype=np.float32,
)

#: How the within-class structure ``detail`` (about -1..1) changes reflectance: (class, band).
OPTICAL_LOADING = np.array(
    [
        [-0.010, 0.010, -0.025, 0.080],  # farmland: crop vigour (more green/NIR, less red)
        [0.030, 0.030, 0.030, 0.025],  # city: building roofs bright, streets dark
        [-0.010, 0.000, -0.020, 0.030],  # village: same mixing direction as others
        [0.005, 0.010, 0.010, 0.005],  # water: turbidity
        [0.005, 0.010, 0.005, 0.040],  # forest: canopy density
        [-0.010, 0.000, -0.020, 0.030],  # road: same as others
        [-0.010, 0.000, -0.020, 0.030],  # others: bare soil <-> grass
    ],
    dtype=np.float32,
)

#: Per-pixel optical noise standard deviation per class (reflectance units).
OPTICAL_NOISE = np.array([0.006, 0.012, 0.008, 0.003, 0.008, 0.008, 0.008], dtype=np.float32)

#: Mean backscatter per class, dB: (class, polarization) with polarizations VV, VH.
SAR_MEAN_DB = np.array(
    [
        [-12.0, -19.0],  # farmland: rough soil + crop, like others
        [-3.0, -9.5],  # city: double bounce (wall-ground corner reflectors)
        [-7.0, -14.0],  # village: weaker double bounce (small, low houses)
        [-22.0, -29.0],  # water: specular, dark
        [-8.5, -13.5],  # forest: volume scattering, high VH
        [-19.0, -26.0],  # road: smooth asphalt, dark
        [-12.0, -19.0],  # others: bare soil and grass
    ],
    dtype=np.float32,
)

#: How ``detail`` changes backscatter (dB per unit detail): (class, polarization).
SAR_LOADING_DB = np.array(
    [[1.5, 1.5], [5.0, 3.5], [3.0, 2.0], [1.0, 1.0], [1.0, 1.0], [0.5, 0.5], [1.5, 1.5]],
    dtype=np.float32,
)

#: Equivalent number of looks of the Gamma speckle.
SPECKLE_LOOKS: float = 4.0
#: M3M-CR's SAR scaling: dB range per polarization mapped linearly to [0, 1].
SAR_DB_RANGE: dict[str, tuple[float, float]] = {"VV": (-25.0, 0.0), "VH": (-32.5, 0.0)}
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

# Per-class tables laid out (quantity, class) so that ``np.take(TABLE, label, axis=1)``
# gives (quantity, S, S) per-pixel values (``take`` is several times faster than ``TABLE[:, label]``).
OPTICAL_MEAN_T = np.ascontiguousarray(OPTICAL_MEAN.T)
OPTICAL_LOADING_T = np.ascontiguousarray(OPTICAL_LOADING.T)
SAR_MEAN_DB_T = np.ascontiguousarray(SAR_MEAN_DB.T)
SAR_LOADING_DB_T = np.ascontiguousarray(SAR_LOADING_DB.T)
for _table in (OPTICAL_MEAN, OPTICAL_LOADING, OPTICAL_NOISE, SAR_MEAN_DB, SAR_LOADING_DB,
               OPTICAL_MEAN_T, OPTICAL_LOADING_T, SAR_MEAN_DB_T, SAR_LOADING_DB_T):
    _table.setflags(write=False)  # shared constants: read-only


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


# ----------------------------------------------------------------------------- helpers
# Written with memory traffic in mind: a 256² float32 plane is 256 KiB, and a
# fresh temporary that size costs page faults as well as arithmetic, so the
# hot path works in place (``out=``, ``*=``) and on small windows where it can.


@lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates as broadcastable float32 arrays: (S, 1) and (1, S)."""
    coords = np.arange(size, dtype=np.float32)
    rows, cols = coords[:, None].copy(), coords[None, :].copy()
    rows.setflags(write=False)
    cols.setflags(write=False)
    return rows, cols


def smooth_fields(rng: np.random.Generator, size: int, sigmas: Sequence[float]) -> np.ndarray:
    """(len(sigmas), S, S) float32 smooth Gaussian random fields, zero mean, unit std.

    Field ``i`` looks like white noise blurred by a Gaussian of ``sigmas[i]``
    pixels. Only the low-frequency Fourier coefficients are drawn (those the
    blur does not kill: up to 3 / (2 pi sigma) cycles per pixel), so a smooth
    field costs a few thousand random numbers, a short FFT down the columns
    that carry them and one real FFT along the rows. Periodic, like any FFT field.
    """
    frequency = np.fft.fftfreq(size).astype(np.float32)
    fields = np.empty((len(sigmas), size, size), dtype=np.float32)
    for index, sigma in enumerate(sigmas):
        keep = int(min(size // 2, np.ceil(3.0 / (2.0 * np.pi * sigma) * size) + 1))
        rows = np.r_[0:keep, size - keep + 1 : size]  # the low |fy| rows, both signs
        gain = np.exp(-2.0 * np.pi**2 * sigma**2 * (frequency[rows, None] ** 2 + frequency[None, :keep] ** 2))
        gain[0, 0] = 0.0  # zero mean
        real_imag = rng.standard_normal((rows.size, keep, 2), dtype=np.float32)
        coefficients = np.zeros((size, keep), dtype=np.complex64)  # (fy, fx) for fx < keep
        coefficients[rows] = real_imag.view(np.complex64)[..., 0] * gain
        # 2-D inverse real FFT in two passes: columns (only `keep` of them), then rows.
        fields[index] = np.fft.irfft(np.fft.ifft(coefficients, axis=0), n=size, axis=1)
    fields /= fields.std(axis=(1, 2), keepdims=True) + 1e-12
    return fields


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


def _quantile_threshold(field: np.ndarray, fraction_above: float) -> float:
    """Value above which ``fraction_above`` of ``field`` lies (estimated on every 4th pixel)."""
    sample = field[::4, ::4].ravel()
    index = int(np.clip(round((1.0 - fraction_above) * (sample.size - 1)), 0, sample.size - 1))
    return float(np.partition(sample, index)[index])


def _window(center: float, radius: float, size: int) -> slice:
    return slice(max(0, int(center - radius)), min(size, int(center + radius) + 2))


def _blob(rng: np.random.Generator, size: int, radius: float, aspect_max: float = 1.4):
    """A random irregular blob around a random centre, computed on its window only.

    Returns ``(row slice, col slice, region (h, w) bool, dy (h, 1), dx (1, w))``
    with dy, dx the offsets of the window's pixels from the centre.
    """
    rows, cols = _pixel_grid(size)
    center_y, center_x = (float(c) for c in rng.uniform(0.1 * size, 0.9 * size, 2))
    aspect = rng.uniform(1.0 / aspect_max, aspect_max)
    phase = rng.uniform(0.0, 2.0 * np.pi, 2)
    wobble = rng.uniform(0.05, 0.18)
    row_slice = _window(center_y, 1.5 * radius, size)
    col_slice = _window(center_x, 1.5 * radius, size)
    dy = rows[row_slice] - np.float32(center_y)
    dx = cols[:, col_slice] - np.float32(center_x)
    angle = np.arctan2(dy, dx)
    edge = 1.0 + wobble * np.sin(3.0 * angle + phase[0]) + 0.5 * wobble * np.sin(5.0 * angle + phase[1])
    distance = np.sqrt((dx * aspect) ** 2 + (dy / aspect) ** 2) / radius
    return row_slice, col_slice, distance < edge, dy, dx


def _line_mask(
    rng: np.random.Generator, size: int, half_width: float, meander: float, wavelength: tuple[float, float]
) -> np.ndarray:
    """(S, S) bool: a random line of ``half_width`` (px) crossing the scene, straight or meandering.

    The line is ``across = c0 + slope * along + A1 sin(...) + A2 sin(...)`` in
    a horizontal or vertical frame. A pixel is on it when its perpendicular
    distance is below the half width, i.e. when ``across`` lies within
    ``half_width * sqrt(1 + line'(along)^2)`` of the line: that band is
    computed once per ``along`` (1-D), so the full-size work is two comparisons.
    The half width itself varies slowly along the line (by up to ±30 % for wide lines).
    """
    rows, cols = _pixel_grid(size)
    vertical = rng.random() < 0.5
    along = np.arange(size, dtype=np.float64)
    offset = rng.uniform(0.15, 0.85) * size
    slope = rng.uniform(-0.5, 0.5)
    amplitude = rng.uniform(0.3, 1.0, 2) * meander * np.array([1.0, 0.3])
    angular = 2.0 * np.pi / rng.uniform(*wavelength, 2) * np.array([1.0, 2.7])
    phase = rng.uniform(0.0, 2.0 * np.pi, 3)
    position = offset + slope * (along - size / 2) + np.zeros(size)
    derivative = slope + np.zeros(size)
    for a, w, p in zip(amplitude, angular, phase):
        position += a * np.sin(w * along + p)
        derivative += a * w * np.cos(w * along + p)
    width_variation = 1.0 + (0.3 if half_width > 2 else 0.0) * np.sin(along / rng.uniform(20.0, 60.0) + phase[2])
    band = half_width * width_variation * np.sqrt(1.0 + derivative**2)
    low, high = (position - band).astype(np.float32), (position + band).astype(np.float32)
    if vertical:  # along = rows, across = columns
        return (cols >= low[:, None]) & (cols <= high[:, None])
    return (rows >= low[None, :]) & (rows <= high[None, :])


# ----------------------------------------------------------------------------- land cover


def land_cover(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw a land-cover map and its within-class structure.

    Returns:
        label: (S, S) uint8 class index (WHU_CLASSES order).
        detail: (S, S) float32, about -1..1: crop vigour on farmland, roof (+) vs
            street (-) in the city, house (+) vs garden (-) in villages, and a
            smooth texture elsewhere. Spectra and backscatter load on it.
    """
    area = (size / 256.0) ** 2
    zone, forest_field, detail = smooth_fields(rng, size, (16.0, 9.0, 2.0))
    detail *= 0.6  # texture of others, forest, water: std 0.6, clipped to [-1, 1]
    np.clip(detail, -1.0, 1.0, out=detail)
    label = np.full((size, size), OTHERS, dtype=np.uint8)

    # Farmland zone, then forest blobs on top (thresholds by quantile: fractions per scene).
    label[zone > _quantile_threshold(zone, rng.uniform(0.45, 0.7))] = FARMLAND
    label[forest_field > _quantile_threshold(forest_field, rng.uniform(0.12, 0.25))] = FOREST

    # Field parcels: a rotated grid of rows of rectangles, each row with its own
    # column width and offset; each parcel gets a crop vigour in [-1, 1].
    # Computed on a half-resolution grid (parcels are >= 9 px) and repeated 2x2.
    angle = rng.uniform(0.0, np.pi / 2)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    row_height = rng.uniform(9.0, 16.0)
    n_rows = int(np.ceil(2 * size / row_height)) + 1
    column_width = rng.uniform(12.0, 32.0, n_rows).astype(np.float32)
    column_offset = rng.uniform(0.0, 32.0, n_rows).astype(np.float32)
    vigour_table = rng.uniform(-1.0, 1.0, 4096).astype(np.float32)
    half = (size + 1) // 2
    coarse = np.arange(half, dtype=np.float32) * 2 + 0.5  # pixel centres of the 2x2 cells
    across = coarse[:, None] * cos - coarse[None, :] * sin + np.float32(size * sin)  # (half, half) >= 0
    parcel_row = (across / np.float32(row_height)).astype(np.int32)
    along = coarse[None, :] * cos + coarse[:, None] * sin  # (half, half) >= 0
    along += np.take(column_offset, parcel_row)
    along /= np.take(column_width, parcel_row)
    parcel_id = parcel_row * 7919 + along.astype(np.int32) * 104729
    parcel_id &= 4095
    vigour = np.take(vigour_table, parcel_id).repeat(2, axis=0).repeat(2, axis=1)[:size, :size]
    vigour += 0.2 * detail
    np.clip(vigour, -1.0, 1.0, out=vigour)
    np.copyto(detail, vigour, where=label == FARMLAND)

    # Lakes: 0-2 irregular blobs (at least one when there is no river).
    has_river = rng.random() < 0.8
    n_lakes = int(rng.integers(0, 3)) + (0 if has_river else 1)
    for _ in range(n_lakes):
        row_slice, col_slice, region, _, _ = _blob(rng, size, rng.uniform(6.0, 18.0) * np.sqrt(max(area, 0.25)))
        label[row_slice, col_slice][region] = WATER

    # The city: an irregular blob filled with a rotated grid of blocks and streets.
    row_slice, col_slice, region, dy, dx = _blob(rng, size, rng.uniform(0.1, 0.17) * size)
    block = np.float32(rng.uniform(9.0, 14.0))
    street_width = 2.0
    city_angle = rng.uniform(0.0, np.pi / 2)
    cos, sin = np.float32(np.cos(city_angle)), np.float32(np.sin(city_angle))
    block_u = (dx * cos + dy * sin + np.float32(4 * size)) / block  # in blocks, > 0
    block_v = (dy * cos - dx * sin + np.float32(4 * size)) / block
    street = (np.mod(block_u, 1.0) < street_width / block) | (np.mod(block_v, 1.0) < street_width / block)
    roof_table = rng.uniform(0.3, 1.0, 1024).astype(np.float32)
    roof = roof_table[(block_u.astype(np.int32) * 31 + block_v.astype(np.int32) * 17) & 1023]
    roof[street] = -1.0
    label[row_slice, col_slice][region] = CITY
    detail[row_slice, col_slice][region] = roof[region]

    # The river: a meandering band of varying width.
    if has_river:
        river = _line_mask(rng, size, rng.uniform(2.5, 6.0), meander=rng.uniform(5.0, 25.0), wavelength=(80.0, 220.0))
        label[river] = WATER

    # Villages: small clusters of houses on land (not on water or in the city).
    n_villages = max(1, int(round(rng.uniform(4.0, 8.0) * area)))
    for _ in range(n_villages):
        row_slice, col_slice, region, dy, dx = _blob(rng, size, rng.uniform(5.0, 12.0))
        window_label = label[row_slice, col_slice]
        region &= (window_label == FARMLAND) | (window_label == OTHERS) | (window_label == FOREST)
        houses = (np.mod(dy + 100.5, 5.0) < 3.0) & (np.mod(dx + 100.5, 5.0) < 3.0)
        window_label[region] = VILLAGE
        detail[row_slice, col_slice][region] = np.where(houses, 1.0, -0.5)[region]

    # Roads: straight or gently curved lines of 2-4 px crossing the scene (bridges included).
    n_roads = max(1, int(round(rng.uniform(1.5, 3.5) * np.sqrt(area))))
    for _ in range(n_roads):
        meander = 10.0 if rng.random() < 0.5 else 0.0
        road = _line_mask(rng, size, rng.uniform(0.9, 1.7), meander=meander, wavelength=(200.0, 500.0))
        label[road] = ROAD

    return label, detail


# ----------------------------------------------------------------------------- scene


def context_gains(seed: int) -> np.ndarray:
    """(4,) float32 per-band gains of the "context" family's scene ``seed``, log-uniform in
    [1 / CONTEXT_GAIN, CONTEXT_GAIN] (drawn from their own stream, ``default_rng((seed, 7))``)."""
    log_gain = np.log(CONTEXT_GAIN)
    return np.exp(np.random.default_rng((int(seed), 7)).uniform(-log_gain, log_gain, 4)).astype(np.float32)


def _check_arguments(seed, size, sar_channels, family: str = "default") -> None:
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
    _check_arguments(seed, size, sar_channels, family)
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


# ----------------------------------------------------------------------------- torch dataset


def scene_seed(seed: int, index: int) -> int:
    """The scene seed of item ``index`` of a dataset seeded ``seed`` (independent streams per pair)."""
    return int(np.random.SeedSequence((int(seed), int(index))).generate_state(1, dtype=np.uint32)[0])


class SyntheticScenes(torch.utils.data.Dataset):
    """``n`` synthetic scenes as a torch dataset; item ``i`` is a pure function of ``(seed, i)``.

    Args:
        n: number of scenes.
        size: side in pixels.
        seed: dataset seed; scene ``i`` uses :func:`scene_seed(seed, i)`.
        cloud_cover: a float, or a ``(lo, hi)`` range from which each item draws
            its cover (deterministically from ``(seed, i)``).
        sar_channels: 2 (VV, VH) or 1 (VV).
        transforms: a callable on the sample dict (e.g. :mod:`edc_lab.data.transforms`);
            random transforms draw from their own generator or torch's global RNG.
        thickness, shadows, haze, family, thin_fraction: as :func:`synthetic_scene`
            (``**cloud_model("opaque")`` gives a named cloud model's four options).

    Items are dicts as :func:`edc_lab.data.sample.to_torch` makes them:
    ``optical`` / ``optical_clear`` (4, S, S) float32, ``sar`` (Cs, S, S)
    float32, ``label`` (S, S) int64, ``cloud_mask`` (S, S) float32,
    ``has_clear`` (True).
    """

    class_names: tuple[str, ...] = WHU_CLASSES
    class_colors: tuple[str, ...] = WHU_COLORS
    num_classes: int = len(WHU_CLASSES)
    in_optical: int = len(OPTICAL_BANDS)

    def __init__(
        self,
        n: int,
        size: int = 256,
        seed: int = 0,
        cloud_cover: float | tuple[float, float] = 0.5,
        sar_channels: int = 2,
        transforms=None,
        *,
        thickness: float | tuple[float, float] = DEFAULT_THICKNESS,
        shadows: bool = True,
        haze: float | tuple[float, float] = DEFAULT_HAZE,
        family: str = "default",
        thin_fraction: float = DEFAULT_THIN_FRACTION,
    ):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"SyntheticScenes: expected a non-negative integer n, found {n!r}")
        _check_arguments(seed, size, sar_channels, family)
        unit_range("thickness", thickness, owner="SyntheticScenes")
        unit_range("haze", haze, owner="SyntheticScenes")
        if not (isinstance(thin_fraction, (int, float)) and 0.0 <= thin_fraction <= 1.0):
            raise ValueError(f"SyntheticScenes: expected thin_fraction in [0, 1], found {thin_fraction!r}")
        if isinstance(cloud_cover, (tuple, list)):
            if len(cloud_cover) != 2 or not 0.0 <= cloud_cover[0] <= cloud_cover[1] <= 1.0:
                raise ValueError(
                    f"SyntheticScenes: expected cloud_cover as (lo, hi) with 0 <= lo <= hi <= 1, found {cloud_cover!r}"
                )
            self.cloud_cover: float | tuple[float, float] = (float(cloud_cover[0]), float(cloud_cover[1]))
        else:
            if not 0.0 <= cloud_cover <= 1.0:
                raise ValueError(f"SyntheticScenes: expected cloud_cover in [0, 1], found {cloud_cover!r}")
            self.cloud_cover = float(cloud_cover)
        self.n, self.size, self.seed = int(n), int(size), int(seed)
        self.sar_channels = self.in_sar = int(sar_channels)
        self.transforms = transforms
        self.cloud_options = dict(thickness=thickness, shadows=bool(shadows), haze=haze, family=family,
                                  thin_fraction=float(thin_fraction))

    def __len__(self) -> int:
        return self.n

    def cover_of(self, index: int) -> float:
        """The cloud cover requested for item ``index``."""
        if isinstance(self.cloud_cover, float):
            return self.cloud_cover
        low, high = self.cloud_cover
        draw = np.random.default_rng(np.random.SeedSequence((self.seed, index, 1))).random()
        return float(low + (high - low) * draw)

    def _index(self, index: int) -> int:
        if not -self.n <= index < self.n:
            raise IndexError(f"SyntheticScenes: index {index} out of range for {self.n} scenes")
        return index % self.n

    def scene(self, index: int) -> xr.Dataset:
        """Item ``index`` as the canonical ``xarray.Dataset`` (without transforms)."""
        index = self._index(index)
        return synthetic_scene(
            scene_seed(self.seed, index),
            self.size,
            self.cover_of(index),
            sar_channels=self.sar_channels,
            **self.cloud_options,
        )

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = self._index(index)
        arrays = scene_arrays(
            scene_seed(self.seed, index),
            self.size,
            self.cover_of(index),
            sar_channels=self.sar_channels,
            **self.cloud_options,
        )
        sample = {
            "optical": torch.from_numpy(arrays.optical),
            "sar": torch.from_numpy(arrays.sar),
            "label": torch.from_numpy(arrays.label.astype(np.int64)),
            "cloud_mask": torch.from_numpy(arrays.cloud_mask.astype(np.float32)),
            "optical_clear": torch.from_numpy(arrays.optical_clear),
            "has_clear": torch.tensor(True),
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def plot(self, sample, **kwargs):
        """Six panels (true colour, false colour, SAR, label with legend, cloud mask); returns the figure."""
        from edc_lab.viz.plots import plot_sample

        kwargs.setdefault("class_names", self.class_names)
        kwargs.setdefault("class_colors", self.class_colors)
        return plot_sample(sample, **kwargs)

    def __repr__(self) -> str:
        return (
            f"SyntheticScenes(n={self.n}, size={self.size}, seed={self.seed}, "
            f"cloud_cover={self.cloud_cover}, sar_channels={self.sar_channels}, "
            f"family={self.cloud_options['family']!r})"
        )
