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

Grids are checked when a file is opened: :func:`check_north_up` refuses a
south-up, mirrored or rotated transform (every bound and window below assumes
north-up), naming the file that has it.

Sizes and conventions are checked before they can hurt: a header declaring
more than :data:`MAX_RASTER_BYTES` (or a ``.npy`` header of another shape than
the optical grid) is refused before any pixel is read; :func:`check_convention`
refuses values whose data type or range betrays another scaling (float
reflectance already in [0, 1], 8-bit SAR read as dB, reflectance that is mostly
negative); :func:`read_covering` reads only the part of a file that covers the
target grid.

Non-finite pixels (NaN/Inf in a float raster): refused by default with a
DataError; ``fill_nonfinite=value`` replaces them with ``value`` and warns with
the count (see :func:`edc_lab.data.sample.check_finite`).
"""

from __future__ import annotations

import math
import os
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
#: the most bytes one read may declare (bands x rows x cols x item size); a larger header is refused
#: before any pixel is read (a 9 MB sparse GeoTIFF can declare 200000² pixels = hundreds of GiB)
MAX_RASTER_BYTES = 4 * 2**30
#: the largest fraction of valid optical pixels that may be negative (reflectance after
#: atmospheric correction has a few slightly negative values; a negative median is wrong data)
MAX_NEGATIVE_FRACTION = 0.5
#: value conventions :func:`check_convention` knows (what the pixel values of a file mean)
CONVENTION_NAMES = ("reflectance", "db", "uint8", "unit")


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


def check_input_file(path: Path, expected: str) -> None:
    """Refuse a path that is missing, a directory or an empty file, naming it."""
    if path.is_dir():
        raise DataError(f"{path}: expected {expected}, found a directory")
    if not path.is_file():
        raise DataError(f"{path}: expected {expected}, found no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: expected {expected}, found an empty file (0 bytes)")


def check_output_paths(outputs: dict[str, str | Path | None], inputs: dict[str, str | Path | None]) -> None:
    """Refuse an output that would overwrite an input or another output (one DataError naming both).

    Paths are compared after resolving symbolic links (``os.path.realpath``) and,
    for files that exist, by identity (``os.path.samefile``: hard links). An
    output that is an existing directory is refused too.
    """
    def same(a: Path, b: Path) -> bool:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        try:
            return a.exists() and b.exists() and os.path.samefile(a, b)
        except OSError:
            return False

    seen: list[tuple[str, Path]] = []
    for option, value in outputs.items():
        if value is None:
            continue
        path = Path(value)
        if path.is_dir():
            raise DataError(f"{option} {path}: expected an output file path, found a directory")
        for other_option, other in [*((o, Path(v)) for o, v in inputs.items() if v is not None), *seen]:
            if same(path, other):
                raise DataError(
                    f"{option} {path}: expected an output path distinct from every input and output, found the "
                    f"same file as {other_option} {other}; refusing to overwrite it"
                )
        seen.append((option, path))


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

    Every grid computation here (bounds, windows, overlap, resampling targets)
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


def check_convention(raster: Raster, what: str, convention: str) -> None:
    """Refuse pixel values whose data type or range betrays another scaling than ``convention``.

    A wrong convention does not crash, it mis-scales silently (float reflectance
    already in [0, 1] divided by 10000 is 0 everywhere; 8-bit SAR read as dB
    clips to 1 everywhere), so the readers and ``predict`` check first:

    * ``"reflectance"`` (M3M-CR optical: reflectance x10000, uint16, valid range
      [0, 10000]): refuse 8-bit files, float files whose values all lie in [0, 2]
      (already scaled) and files whose valid pixels are *mostly* negative. Real
      reflectance may hold a few slightly negative values after atmospheric
      correction (the readers clip them to 0), so single negatives are kept; but
      when more than half the values of all bands together
      (:data:`MAX_NEGATIVE_FRACTION`) are below 0, i.e. the median is negative,
      the file is wrong data (a signed/unsigned mix-up, an offset, another
      product), which clipping would turn into a black image. (Deep water can have
      a slightly negative NIR band, never four negative bands.);
    * ``"db"`` (M3M-CR SAR: backscatter in dB, float): refuse integer files (8-bit
      or digital numbers), values mostly above 0 dB (linear power or [0, 1] scaled)
      and values above 100 (not dB);
    * ``"uint8"`` (WHU-OPT-SAR: 8-bit optical and SAR): refuse any other data type;
    * ``"unit"`` (floats already in [0, 1]): refuse integer files, values outside [-0.5, 1.5]
      and, as for reflectance, mostly negative values.

    Pixels equal to the file's nodata and non-finite pixels are not looked at.
    """
    if convention not in CONVENTION_NAMES:
        raise ValueError(f"convention: expected one of {CONVENTION_NAMES}, found {convention!r}")
    values, dtype = raster.values, raster.values.dtype
    where = f"{raster.path}: expected {what}"
    is_float = np.issubdtype(dtype, np.floating)
    valid = values[np.isfinite(values)] if is_float else values.ravel()
    if raster.nodata is not None and np.isfinite(raster.nodata):
        valid = valid[valid != raster.nodata]
    low, high = (float(valid.min()), float(valid.max())) if valid.size else (0.0, 0.0)
    if convention == "uint8":
        if dtype != np.uint8:
            raise DataError(f"{where} as 8-bit values (uint8, WHU-OPT-SAR convention), found data type {dtype}")
    elif convention == "reflectance":
        if dtype == np.uint8 or dtype == np.int8:
            raise DataError(f"{where} as reflectance x10000 (uint16, M3M-CR convention), found 8-bit data ({dtype}); "
                            f"8-bit images follow the WHU-OPT-SAR convention")
        if is_float and valid.size and high <= 2.0:
            raise DataError(f"{where} as reflectance x10000 (M3M-CR convention), found {dtype} values in "
                            f"[{low:.4g}, {high:.4g}], i.e. already scaled to [0, 1] (the 'unit' convention)")
        _refuse_mostly_negative(valid, f"{where} as reflectance x10000 in [0, 10000] (M3M-CR convention)", dtype)
    elif convention == "db":
        if not is_float:
            raise DataError(f"{where} as backscatter in dB (float, M3M-CR convention), found integer data ({dtype}), "
                            f"which is 8-bit or digital numbers, not dB")
        positive = float((valid > 0).mean()) if valid.size else 0.0
        if valid.size and (positive > 0.5 or high > 100.0):
            raise DataError(f"{where} as backscatter in dB (mostly negative, M3M-CR convention), found values in "
                            f"[{low:.4g}, {high:.4g}] with {positive:.0%} above 0 (linear power or values scaled "
                            f"to [0, 1] / 8-bit, not dB)")
    else:  # unit
        if not is_float:
            raise DataError(f"{where} as floats already scaled to [0, 1], found integer data ({dtype})")
        if valid.size and (low < -0.5 or high > 1.5):
            raise DataError(f"{where} as floats already scaled to [0, 1], found values in [{low:.4g}, {high:.4g}]")
        _refuse_mostly_negative(valid, f"{where} as floats already scaled to [0, 1]", dtype)


def _refuse_mostly_negative(valid: np.ndarray, expected: str, dtype) -> None:
    """The reflectance rule of :func:`check_convention`: more than half the valid values below 0 is a DataError.

    ``valid``: the values looked at, all bands together (nodata and NaN removed);
    ``expected`` starts the message ("<file>: expected ..."). A few negatives are
    kept (noise of the atmospheric correction); a negative median is not reflectance.
    """
    if not valid.size:
        return
    negative = float((valid < 0).mean())
    if negative > MAX_NEGATIVE_FRACTION:
        raise DataError(
            f"{expected}, found {dtype} values in [{float(valid.min()):.4g}, {float(valid.max()):.4g}] with "
            f"{negative:.0%} of the valid values below 0 (median {float(np.median(valid)):.4g}); a few slightly "
            f"negative values are accepted (and clipped to 0), mostly negative ones are wrong data, not reflectance"
        )


def nodata_mask(raster: Raster) -> np.ndarray:
    """(H, W) mask of the pixels equal to the raster's nodata value in every band (all False without one)."""
    if raster.nodata is None:
        return np.zeros(raster.shape, dtype=bool)
    if np.isnan(raster.nodata):
        return np.isnan(raster.values).all(axis=0)
    return (raster.values == raster.nodata).all(axis=0)


def check_some_data(raster: Raster, what: str) -> np.ndarray:
    """(H, W) mask of pixels equal to nodata in every band; a raster that is nodata everywhere is a DataError.

    (A wrong nodata value — say 0 on a file whose zeros are data — is the usual cause.)
    """
    missing = nodata_mask(raster)
    if missing.all():
        raise DataError(
            f"{raster.path}: expected some valid {what} pixels, found every one of {raster.shape[0]}x{raster.shape[1]} "
            f"equal to the file's nodata value {raster.nodata} (is the nodata value right?)"
        )
    return missing


def nodata_as_nan(raster: Raster, what: str) -> Raster:
    """The raster as float32 with its nodata pixels set to NaN (so resampling never mixes them in).

    A raster without a single valid pixel (all nodata, e.g. a sparse file with no
    data written) is a DataError naming the file.
    """
    values = raster.values.astype(np.float32)
    if raster.nodata is not None and not np.isnan(raster.nodata):
        values[raster.values == raster.nodata] = np.nan
    if not np.isfinite(values).any():
        raise DataError(
            f"{raster.path}: expected valid {what} pixels over the area read, found only nodata "
            f"({raster.nodata}) in {raster.values.shape[0]}x{raster.shape[0]}x{raster.shape[1]} pixels"
        )
    return raster.with_values(values, nodata=np.nan)


def read_cloud_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Load a ``.npy`` cloud mask safely (``allow_pickle=False``) and check it.

    Args:
        path: the ``.npy`` file (a plain boolean or 0/1 array).
        shape: (H, W) the mask must have (the optical grid).

    Returns:
        (H, W) bool array. A pickled file is refused: unpickling runs code.
    """
    path = Path(path)
    check_input_file(path, "a .npy cloud mask")
    check_npy_header(path, tuple(shape))
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


def check_npy_header(path: Path, shape: tuple[int, int]) -> None:
    """Read a ``.npy`` header (no data) and refuse a shape or dtype that cannot be the cloud mask.

    A header can declare any size; checking it first turns a 300 GiB allocation
    into one DataError naming the file and the size found.
    """
    expected = f"a .npy cloud mask of shape {tuple(shape)} (the optical grid)"
    pickled = DataError(
        f"{path}: expected a plain .npy array (cloud mask), found pickled (object) data, which "
        f"is refused because unpickling can run code (np.load(allow_pickle=False))"
    )
    try:
        with open(path, "rb") as handle:
            if handle.read(1) == b"\x80":  # the first byte of a pickle (protocol 2+)
                raise pickled
            handle.seek(0)
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                declared, _, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                declared, _, dtype = np.lib.format.read_array_header_2_0(handle)
    except (ValueError, OSError, EOFError, SyntaxError) as error:
        raise DataError(f"{path}: expected {expected}, found a file that is not a .npy array: {error}") from None
    if dtype.hasobject:
        raise pickled
    if tuple(declared) != tuple(shape):
        raise DataError(f"{path}: expected a cloud mask of shape {tuple(shape)} (the optical grid), found "
                        f"{tuple(declared)} (declared in the .npy header; not loaded)")
    if dtype.kind not in "biuf":
        raise DataError(f"{path}: expected a boolean or 0/1 cloud mask, found dtype {dtype}")


@dataclass(frozen=True)
class Grid:
    """The georeference of a raster, or of a window of one, without its pixels.

    Has the same ``path``, ``crs``, ``transform``, ``shape`` and ``bounds`` as a
    :class:`Raster`, so the checks below take either.
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


def read_grid(path: str | Path, what: str) -> Grid:
    """The :class:`Grid` of a GeoTIFF (header only; no pixels are read)."""
    with open_raster(path, what) as source:
        return Grid(Path(path), source.crs, source.transform, source.height, source.width)


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


def _fmt_transform(transform: Affine) -> str:
    """``(a=.., b=.., c=.., d=.., e=.., f=..)``: the affine coefficients in rasterio's order."""
    return "(" + ", ".join(f"{name}={value:.10g}" for name, value in zip("abcdef", tuple(transform)[:6])) + ")"


def _fmt_bounds(raster: Raster | Grid) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in raster.bounds) + ")"
