"""Reading rasters with validation: bad files stop here, with one clear error.

Every file a reader touches goes through this module. It checks what a dataset
promises — the band count, the data type, a CRS to align by, finite values,
the shape of a cloud mask — and turns every failure (a missing file, a
truncated GeoTIFF, a pickled ``.npy``, optical and SAR that do not overlap)
into one :class:`~edc_lab.data.sample.DataError` whose message names the file,
what was expected and what was found. Nothing deep inside torch should be the
first to notice bad data (STYLE.md, "errors at the boundary").

It also holds the one geometric operation the readers need: **alignment by
georeference**. Two rasters of one place rarely share a pixel grid (M3M-CR: 3 m
PlanetScope optical, 10 m Sentinel-1 SAR whose origin is shifted by 1 m east
and 2 m south). :func:`align_to` resamples a raster onto another's grid with
rioxarray's ``reproject_match``: each target pixel takes the value found at its
*map coordinates* in the source, never the value at the same array index.

Whose idea: all of this is our choice (following TorchGeo's readers); the
paper (arXiv 2603.20811) and its predecessor CloudSeg upsample SAR by array
size instead.

Non-finite pixels (NaN/Inf in a float raster): refused by default with a
DataError; ``fill_nonfinite=value`` replaces them with ``value`` and warns with
the count (see :func:`edc_lab.data.sample.check_finite`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import rasterio
import rasterio.errors
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import array_bounds
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from scipy.ndimage import distance_transform_edt

from edc_lab.data.sample import DataError, check_finite

#: a source must cover at least this fraction of the target's footprint to be aligned to it
MIN_OVERLAP = 0.9


@dataclass(frozen=True)
class Raster:
    """A GeoTIFF (or a window of one) read into memory.

    Attributes:
        path: the file it came from (named in every error message).
        values: (bands, H, W) array in the file's data type.
        crs: its coordinate reference system, or None when the file has none.
        transform: affine map from (col, row) to map coordinates (x, y).
        nodata: the file's nodata value, or None.
    """

    path: Path
    values: np.ndarray
    crs: CRS | None
    transform: Affine
    nodata: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the grid."""
        return self.values.shape[1], self.values.shape[2]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in the raster's CRS."""
        return array_bounds(*self.shape, self.transform)

    def with_values(self, values: np.ndarray, nodata: float | None = None) -> "Raster":
        """The same grid carrying other (bands, H, W) values (e.g. mapped labels)."""
        return Raster(self.path, values, self.crs, self.transform, nodata)

    def to_xarray(self) -> xr.DataArray:
        """(band, y, x) DataArray with CRS, transform and nodata written for rioxarray."""
        height, width = self.shape
        xs = self.transform.c + self.transform.a * (np.arange(width) + 0.5)
        ys = self.transform.f + self.transform.e * (np.arange(height) + 0.5)
        array = xr.DataArray(
            self.values,
            dims=("band", "y", "x"),
            coords={"band": np.arange(1, self.values.shape[0] + 1), "y": ys, "x": xs},
        )
        array = array.rio.write_transform(self.transform)
        if self.crs is not None:
            array = array.rio.write_crs(self.crs)
        if self.nodata is not None:
            array = array.rio.write_nodata(self.nodata)
        return array


@contextmanager
def open_raster(path: str | Path, what: str) -> Iterator[rasterio.DatasetReader]:
    """``rasterio.open`` that turns a missing or unreadable file into a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: expected a GeoTIFF ({what}), found no such file")
    try:
        source = rasterio.open(path)
    except rasterio.errors.RasterioError as error:
        raise DataError(
            f"{path}: expected a readable GeoTIFF ({what}), found a file rasterio cannot open "
            f"(corrupt or not a raster): {error}"
        ) from None
    try:
        yield source
    finally:
        source.close()


def check_header(
    source: rasterio.DatasetReader,
    what: str,
    *,
    bands: int | None = None,
    dtypes: Sequence[str] | None = None,
    require_crs: bool = False,
) -> None:
    """Check band count, data type and CRS of an open raster before reading pixels."""
    path = Path(source.name)
    if bands is not None and source.count != bands:
        raise DataError(f"{path}: expected {bands} band(s) ({what}), found {source.count}")
    if dtypes is not None and source.dtypes[0] not in dtypes:
        raise DataError(f"{path}: expected data type {' or '.join(dtypes)} ({what}), found {source.dtypes[0]}")
    if require_crs and source.crs is None:
        raise DataError(
            f"{path}: expected a CRS (e.g. an EPSG code) so the {what} can be aligned by "
            f"georeference, found none"
        )


def read_geotiff(
    path: str | Path,
    what: str,
    *,
    bands: int | None = None,
    dtypes: Sequence[str] | None = None,
    require_crs: bool = False,
    window: Window | None = None,
    fill_nonfinite: float | None = None,
) -> Raster:
    """Read a whole GeoTIFF, or one window of it, with validation.

    Args:
        path: the file.
        what: what the file should be, for messages ("cloudy optical", "SAR").
        bands: expected band count (None: any).
        dtypes: accepted data types, e.g. ``("uint8",)`` (None: any).
        require_crs: refuse a file without a CRS (needed to align by georeference).
        window: read only this window (rows/cols); the returned transform is the
            window's. The window must lie inside the raster.
        fill_nonfinite: float rasters only: None refuses NaN/Inf pixels, a value fills them.

    Returns:
        :class:`Raster` with values (bands, H, W).
    """
    path = Path(path)
    with open_raster(path, what) as source:
        check_header(source, what, bands=bands, dtypes=dtypes, require_crs=require_crs)
        if window is not None:
            inside = (
                window.col_off >= 0
                and window.row_off >= 0
                and window.col_off + window.width <= source.width
                and window.row_off + window.height <= source.height
            )
            if not inside:
                raise DataError(
                    f"{path}: expected window rows {window.row_off}..{window.row_off + window.height}, cols "
                    f"{window.col_off}..{window.col_off + window.width} inside the raster, found a raster of "
                    f"{source.height}x{source.width}"
                )
        try:
            values = source.read(window=window)
        except rasterio.errors.RasterioError as error:
            raise DataError(
                f"{path}: expected {source.count}x{source.height}x{source.width} readable pixels ({what}), "
                f"found a truncated or corrupt file: {error}"
            ) from None
        transform = source.window_transform(window) if window is not None else source.transform
        crs, nodata = source.crs, source.nodata
    if np.issubdtype(values.dtype, np.floating):
        values = check_finite(values, f"{path} ({what})", fill=fill_nonfinite)
    return Raster(path, values, crs, transform, nodata)


def read_cloud_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Load a ``.npy`` cloud mask safely (``allow_pickle=False``) and check it.

    Args:
        path: the ``.npy`` file (a plain boolean or 0/1 array).
        shape: (H, W) the mask must have (the optical grid).

    Returns:
        (H, W) bool array. A pickled file is refused: unpickling runs code.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: expected a .npy cloud mask, found no such file")
    try:
        mask = np.load(path, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise DataError(
                f"{path}: expected a plain .npy array (cloud mask), found pickled (object) data, which "
                f"is refused because unpickling can run code (np.load(allow_pickle=False))"
            ) from None
        raise DataError(f"{path}: expected a .npy array (cloud mask), found an unreadable file: {error}") from None
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: expected a .npy array (cloud mask), found an unreadable file: {error}") from None
    if not isinstance(mask, np.ndarray):
        raise DataError(f"{path}: expected one .npy array (cloud mask), found {type(mask).__name__}")
    if mask.shape != tuple(shape):
        raise DataError(f"{path}: expected a cloud mask of shape {tuple(shape)} (the optical grid), found {mask.shape}")
    if mask.dtype != bool:
        values = np.unique(mask)
        if not np.isin(values, (0, 1)).all():
            raise DataError(
                f"{path}: expected a boolean or 0/1 cloud mask, found values {values[:8].tolist()} (dtype {mask.dtype})"
            )
    return mask.astype(bool)


def overlap_fraction(source: Raster, target: Raster) -> float:
    """Fraction of the target's footprint covered by the source's bounding box (in the target CRS)."""
    west, south, east, north = source.bounds
    if source.crs != target.crs:
        west, south, east, north = transform_bounds(source.crs, target.crs, west, south, east, north)
    t_west, t_south, t_east, t_north = target.bounds
    width = max(0.0, min(east, t_east) - max(west, t_west))
    height = max(0.0, min(north, t_north) - max(south, t_south))
    return width * height / ((t_east - t_west) * (t_north - t_south))


def align_to(
    source: Raster,
    target: Raster,
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
    for raster, role in ((source, what), (target, "reference grid")):
        if raster.crs is None:
            raise DataError(
                f"{raster.path}: expected a CRS to align the {what} by georeference ({role}), found none"
            )
    covered = overlap_fraction(source, target)
    if covered < min_overlap:
        raise DataError(
            f"{source.path}: expected the {what} to cover at least {min_overlap:.0%} of the footprint of "
            f"{target.path}, found {covered:.1%} overlap (source bounds {_fmt_bounds(source)} in {source.crs}, "
            f"target bounds {_fmt_bounds(target)} in {target.crs})"
        )
    template = target.with_values(np.zeros((1, *target.shape), dtype=np.uint8)).to_xarray()
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


def same_grid(a: Raster, b: Raster) -> bool:
    """True when two rasters share CRS, transform and shape (pixel-for-pixel comparable)."""
    return a.crs == b.crs and a.shape == b.shape and a.transform.almost_equals(b.transform)


def _fmt_bounds(raster: Raster) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in raster.bounds) + ")"
