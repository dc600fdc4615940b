"""Opening and reading a GeoTIFF with validation: :class:`Raster` (pixels and georeference), :class:`Grid`
(the georeference alone) and the checks of a file's header, all made before a pixel is read.

Grids are checked when a file is opened: :func:`open_raster` turns a missing or
unreadable file into a DataError, and :func:`check_north_up` refuses a
south-up, mirrored or rotated transform (every bound and window of the readers
assumes north-up), naming the file that has it. :func:`check_header` checks the
band count, the data type and the CRS, and :func:`check_declared_size` refuses a
header declaring more than :data:`MAX_RASTER_BYTES` before any pixel is read.

Non-finite pixels (NaN/Inf in a float raster): refused by default with a
DataError; ``fill_nonfinite=value`` replaces them with ``value`` and warns with
the count (see :func:`edc_lab.data.sample.check_finite`).

Whose idea: our choice, following TorchGeo's readers.
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
from rasterio.transform import array_bounds
from rasterio.windows import Window

from edc_lab.data.path_checks import check_input_file
from edc_lab.data.sample import DataError, check_finite

#: the most bytes one read may declare (bands x rows x cols x item size); a larger header is refused
#: before any pixel is read (a 9 MB sparse GeoTIFF can declare 200000² pixels = hundreds of GiB)
MAX_RASTER_BYTES = 4 * 2**30


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


@dataclass(frozen=True)
class Grid:
    """The georeference of a raster, or of a window of one, without its pixels.

    Has the same ``path``, ``crs``, ``transform``, ``shape`` and ``bounds`` as a
    :class:`Raster`, so the alignment checks (:mod:`edc_lab.data.alignment`) take either.
    """

    path: Path
    crs: CRS | None
    transform: Affine
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return array_bounds(self.height, self.width, self.transform)


def check_declared_size(
    path: Path, what: str, bands: int, height: int, width: int, dtype: str, limit: int | None = None
) -> None:
    """Refuse a read whose declared size exceeds ``limit`` bytes (default :data:`MAX_RASTER_BYTES`)."""
    limit = MAX_RASTER_BYTES if limit is None else limit
    if height < 1 or width < 1 or bands < 1:
        raise DataError(f"{path}: expected at least 1 band of 1x1 pixels ({what}), found {bands}x{height}x{width}")
    size = bands * height * width * np.dtype(dtype).itemsize
    if size > limit:
        raise DataError(
            f"{path}: expected a raster of at most {limit / 2**30:.1f} GiB ({what}), found a header declaring "
            f"{bands}x{height}x{width} {dtype} pixels = {size / 2**30:.1f} GiB; refused before reading"
        )


@contextmanager
def open_raster(path: str | Path, what: str) -> Iterator[rasterio.DatasetReader]:
    """``rasterio.open`` that turns a missing or unreadable file, or one not north-up, into a DataError."""
    path = Path(path)
    check_input_file(path, f"a GeoTIFF ({what})")
    try:
        source = rasterio.open(path)
    except rasterio.errors.RasterioError as error:
        raise DataError(
            f"{path}: expected a readable GeoTIFF ({what}), found a file rasterio cannot open "
            f"(corrupt or not a raster): {error}"
        ) from None
    try:
        check_north_up(path, source.transform, what)
        yield source
    finally:
        source.close()


def check_north_up(path: Path, transform: Affine, what: str) -> None:
    """Refuse a raster whose rows do not run north to south along a map axis.

    Every grid computation of the readers (bounds, windows, overlap, resampling
    targets: :mod:`edc_lab.data.alignment`)
    assumes the usual GeoTIFF layout: ``transform = (a, b, c, d, e, f)`` with
    pixel width ``a > 0``, pixel height ``e < 0`` (row 0 is the northern edge)
    and no rotation or shear (``b = d = 0``). A south-up file (``e > 0``) would
    otherwise reach the alignment check with inverted bounds and the error would
    blame the other file. The identity transform is what rasterio reports for a
    file with no georeference at all; it is left to the CRS checks.
    """
    if transform.is_identity:
        return
    a, b, _, d, e, _ = tuple(transform)[:6]
    if a > 0 and e < 0 and b == 0 and d == 0:
        return
    kind = "rotated or sheared" if b or d else "south-up (e > 0)" if e > 0 else "mirrored or degenerate"
    raise DataError(
        f"{path}: expected a north-up raster ({what}: transform with pixel width a > 0, pixel height e < 0 and "
        f"no rotation, b = d = 0), found a {kind} transform {_fmt_transform(transform)}; warp it north-up "
        f"first, e.g. gdalwarp {path.name} north_up.tif"
    )


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
        height, width = (source.height, source.width) if window is None else (int(window.height), int(window.width))
        check_declared_size(path, what, source.count, height, width, source.dtypes[0])
        try:
            values = source.read(window=window)
        except (rasterio.errors.RasterioError, MemoryError) as error:
            raise DataError(
                f"{path}: expected {source.count}x{source.height}x{source.width} readable pixels ({what}), "
                f"found a truncated or corrupt file: {error}"
            ) from None
        transform = source.window_transform(window) if window is not None else source.transform
        crs, nodata = source.crs, source.nodata
    if np.issubdtype(values.dtype, np.floating):
        values = check_finite(values, f"{path} ({what})", fill=fill_nonfinite)
    return Raster(path, values, crs, transform, nodata)


def read_grid(path: str | Path, what: str) -> Grid:
    """The :class:`Grid` of a GeoTIFF (header only; no pixels are read)."""
    with open_raster(path, what) as source:
        return Grid(Path(path), source.crs, source.transform, source.height, source.width)


def _fmt_transform(transform: Affine) -> str:
    """``(a=.., b=.., c=.., d=.., e=.., f=..)``: the affine coefficients in rasterio's order."""
    return "(" + ", ".join(f"{name}={value:.10g}" for name, value in zip("abcdef", tuple(transform)[:6])) + ")"
