"""Alignment by georeference: check that two rasters can be aligned, read only the part of a file that
covers a target grid, and resample it onto that grid by map coordinates.

Two rasters of one place rarely share a pixel grid (M3M-CR: 3 m PlanetScope
optical, 10 m Sentinel-1 SAR whose origin is shifted by 1 m east and 2 m
south). :func:`align_to` resamples a raster onto another's grid with
rioxarray's ``reproject_match``: each target pixel takes the value found at its
*map coordinates* in the source, never the value at the same array index.
:func:`check_alignable` is the one georeference check of every reader (a CRS on
both, reprojectable, an overlap of at least :data:`MIN_OVERLAP`), and
:func:`read_covering` reads only the part of a file that covers the target
grid, so a huge file is never read whole for a small target.

Whose idea: our choice (following TorchGeo's readers); the paper (arXiv
2603.20811) and its predecessor CloudSeg upsample SAR by array size instead.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from scipy.ndimage import distance_transform_edt

from edc_lab.data.raster import Grid, Raster, check_header, open_raster, read_geotiff
from edc_lab.data.sample import DataError

#: a source must cover at least this fraction of the target's footprint to be aligned to it
MIN_OVERLAP = 0.9


def overlap_fraction(source: Raster | Grid, target: Raster | Grid) -> float:
    """Fraction of the target's footprint covered by the source's bounding box (in the target CRS)."""
    west, south, east, north = source.bounds
    if source.crs != target.crs:
        west, south, east, north = transform_bounds(source.crs, target.crs, west, south, east, north)
    t_west, t_south, t_east, t_north = target.bounds
    width = max(0.0, min(east, t_east) - max(west, t_west))
    height = max(0.0, min(north, t_north) - max(south, t_south))
    area = (t_east - t_west) * (t_north - t_south)
    return width * height / area if area > 0 else 0.0


def check_alignable(
    source: Raster | Grid, target: Raster | Grid, what: str, min_overlap: float = MIN_OVERLAP
) -> float:
    """The one georeference check of every reader: refuse two rasters that cannot be aligned.

    Both need a CRS; the source CRS must be reprojectable into the target's; the
    source footprint must cover at least ``min_overlap`` of the target's. Returns
    the fraction covered. Used by :func:`align_to`, :func:`read_covering` and the
    WHU-OPT-SAR reader (which checks the headers of whole scenes before any patch).
    """
    for raster, role in ((source, what), (target, "reference grid")):
        if raster.crs is None:
            raise DataError(
                f"{raster.path}: expected a CRS to align the {what} by georeference ({role}), found none"
            )
    try:
        covered = overlap_fraction(source, target)
    except Exception as error:  # rasterio raises several kinds for CRSs that cannot be related
        raise DataError(
            f"{source.path}: expected a CRS that can be reprojected to {target.crs} (the grid of {target.path}) "
            f"to align the {what}, found {_short(source.crs)}: {_short(error)}"
        ) from None
    if not np.isfinite(covered) or covered < min_overlap:
        raise DataError(
            f"{source.path}: expected the {what} to cover at least {min_overlap:.0%} of the footprint of "
            f"{target.path}, found {covered:.1%} overlap (source bounds {_fmt_bounds(source)} in {source.crs}, "
            f"target bounds {_fmt_bounds(target)} in {target.crs})"
        )
    return covered


def read_covering(
    path: str | Path,
    what: str,
    target: Raster | Grid,
    *,
    bands: int | None = None,
    dtypes: Sequence[str] | None = None,
    fill_nonfinite: float | None = None,
    min_overlap: float = MIN_OVERLAP,
    margin: int = 2,
    role: str | None = None,
) -> Raster:
    """Read only the part of a GeoTIFF that covers ``target``'s footprint, after :func:`check_alignable`.

    When the file shares the target's CRS and pixel size and the target's origin
    falls on a pixel corner of the file (same grid, or a window of it), the
    returned raster *is* on the target grid (``same_grid(result, target)``): no
    resampling is needed. Otherwise it is the window of the file covering the
    target plus ``margin`` pixels, to be resampled with :func:`align_to`. Either
    way a huge file is never read whole for a small target. ``role`` names the
    file in the alignment messages (default ``what``).
    """
    path = Path(path)
    with open_raster(path, what) as source:
        check_header(source, what, bands=bands, dtypes=dtypes, require_crs=True)
        grid = Grid(path, source.crs, source.transform, source.height, source.width)
        check_alignable(grid, target, role or what, min_overlap)
        col, row = ~source.transform * (target.transform.c, target.transform.f)  # target origin in file pixels
        source_pixel = [source.transform.a, source.transform.b, source.transform.d, source.transform.e]
        target_pixel = [target.transform.a, target.transform.b, target.transform.d, target.transform.e]
        on_the_lattice = (
            source.crs == target.crs
            and np.allclose(source_pixel, target_pixel)
            and abs(col - round(col)) < 1e-6
            and abs(row - round(row)) < 1e-6
        )
        col, row = round(col), round(row)
        height, width = target.shape
        inside = 0 <= col <= source.width - width and 0 <= row <= source.height - height
        if on_the_lattice and inside:
            window = Window(col, row, width, height)
        else:
            window = _covering_window(source, target, margin)
    return read_geotiff(path, what, bands=bands, dtypes=dtypes, window=window, fill_nonfinite=fill_nonfinite)


def source_pixel_box(source: rasterio.DatasetReader, target: Raster | Grid) -> tuple[float, float, float, float]:
    """``target``'s bounds in ``source``'s pixel coordinates: (first col, first row, last col, last row), unclipped."""
    west, south, east, north = target.bounds
    if source.crs != target.crs:
        west, south, east, north = transform_bounds(target.crs, source.crs, west, south, east, north)
    corners = [~source.transform * (x, y) for x in (west, east) for y in (south, north)]
    cols, rows = [c for c, _ in corners], [r for _, r in corners]
    return min(cols), min(rows), max(cols), max(rows)


def _covering_window(source: rasterio.DatasetReader, target: Raster | Grid, margin: int) -> Window | None:
    """The window of ``source`` covering ``target``'s bounds plus ``margin`` pixels (None: the whole file)."""
    first_col, first_row, last_col, last_row = source_pixel_box(source, target)
    col0 = max(0, math.floor(first_col) - margin)
    row0 = max(0, math.floor(first_row) - margin)
    col1 = min(source.width, math.ceil(last_col) + margin)
    row1 = min(source.height, math.ceil(last_row) + margin)
    if (col0, row0, col1, row1) == (0, 0, source.width, source.height):
        return None
    return Window(col0, row0, max(1, col1 - col0), max(1, row1 - row0))


def align_to(
    source: Raster,
    target: Raster | Grid,
    *,
    resampling: Resampling,
    nodata: float,
    what: str,
    min_overlap: float = MIN_OVERLAP,
) -> np.ndarray:
    """Resample ``source`` onto ``target``'s grid by georeference (rioxarray ``reproject_match``).

    Each target pixel centre is located in map coordinates and the source is
    sampled there (``Resampling.bilinear`` for continuous values such as SAR,
    ``Resampling.nearest`` for class labels). Source CRS and target CRS may
    differ: the source is reprojected.

    Args:
        source: (C, h, w) raster on its own grid.
        target: the grid to land on, (H, W).
        resampling: rasterio resampling method.
        nodata: value for target pixels outside the source footprint (NaN for floats).
        what: name of the source for messages.
        min_overlap: the source must cover this fraction of the target footprint.

    Returns:
        (C, H, W) array on the target grid.
    """
    check_alignable(source, target, what, min_overlap)
    template = Raster(target.path, np.zeros((1, *target.shape), dtype=np.uint8), target.crs, target.transform).to_xarray()
    moved = source.to_xarray().rio.write_nodata(nodata).rio.reproject_match(template, resampling=resampling)
    return np.asarray(moved.values)


def fill_from_nearest(values: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """Fill ``invalid`` pixels of a (C, H, W) array with the nearest valid pixel's value.

    Used for the thin strip of the optical grid that lies just outside the SAR
    footprint (M3M-CR: the first 3 m row, because the SAR starts 2 m lower).
    """
    if not invalid.any():
        return values
    nearest = distance_transform_edt(invalid, return_distances=False, return_indices=True)
    rows, cols = nearest
    return values[:, rows, cols]


def same_grid(a: Raster | Grid, b: Raster | Grid) -> bool:
    """True when two rasters share CRS, transform and shape (pixel-for-pixel comparable)."""
    return a.crs == b.crs and a.shape == b.shape and a.transform.almost_equals(b.transform)


def _short(thing: object, limit: int = 160) -> str:
    """``str(thing)`` cut to ``limit`` characters (a CRS in PROJJSON can fill a screen)."""
    text = " ".join(str(thing).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt_bounds(raster: Raster | Grid) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in raster.bounds) + ")"
