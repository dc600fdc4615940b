"""Step 1 of a synthetic scene: the land-cover map, WHU-OPT-SAR's seven classes laid out like a landscape,
and the within-class structure (``detail``) that the spectra and the backscatter load on.

The landscape
-------------
:func:`land_cover` lays the classes out like the country near a Chinese river
town (5 m pixels): field *parcels* (farmland: a rotated, jittered grid of
rectangles, each parcel with its own crop vigour), *forest* blobs (thresholded
smooth noise), a meandering *river* and a few *lakes* (water), one *city* (a
dense grid of building blocks and streets), small *village* clusters of
houses, a *road* network (straight or gently curved lines 2–4 px wide), and
*others* (bare soil and grass) everywhere else. What each class then looks
like to the optical and to the SAR is :mod:`edc_lab.data.synthetic_signatures`.

Whose idea: the class set and the 5 m grid are WHU-OPT-SAR's; the layout and
its numbers are our choice.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

# Class indices (WHU-OPT-SAR order).
FARMLAND, CITY, VILLAGE, WATER, FOREST, ROAD, OTHERS = range(7)


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
