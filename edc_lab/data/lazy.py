"""Open scenes and predictions larger than memory, lazily: dask-backed xarray.

The idea in plain words
-----------------------
A Sentinel-2 tile (10980² pixels, 4 bands of uint16) is about 1 GB; a class map
of a whole region may be many times that. To *look* at such a scene you rarely
need all of it: its size, its grid, a zoom into one town. ``rioxarray`` can open
a GeoTIFF as an ``xarray`` DataArray whose values are a **dask array**: a grid of
chunks, each a recipe ("read rows 1024..2047, cols 0..1023 of this file") that
runs only when a value is asked for (``.compute()``, ``.values``, a plot). So

* opening reads the header only (size, CRS, transform, band names): instant,
  whatever the file size;
* ``.isel(y=slice(...), x=slice(...))`` or ``.sel(x=..., y=...)`` (map
  coordinates) selects a window, still without reading;
* ``.compute()`` then reads only the chunks that the window touches.

What this module returns (the names of the canonical sample, DESIGN §3):

* :func:`open_lazy` — one GeoTIFF as a ``DataArray``: ``optical (band, y, x)``
  with band names blue, green, red, nir; ``sar (polarization, y, x)``; or a
  class map ``(y, x)``;
* :func:`open_scene_lazy` — optical + SAR as a ``Dataset`` on the **optical
  grid**: the SAR (its own CRS, resolution and origin, e.g. M3M-CR's 10 m
  Sentinel-1 under 3 m PlanetScope) is resampled onto the optical grid by
  georeference, chunk by chunk, when a chunk is computed;
* :func:`open_prediction` — what :func:`edc_lab.predict.predict_geotiff` wrote:
  the class map (uint8, 255 = no data, kept as a mask ``valid``) and optionally
  the per-class probabilities, with class names from the band descriptions.

Lazy alignment, chunk by chunk: rioxarray's ``reproject_match`` (used by
:func:`edc_lab.data.io.align_to`) reads and warps the whole source, so it is
not lazy. Here each chunk of the optical grid is one task that reads the part
of the SAR file covering the chunk plus a margin of a few SAR pixels and warps
it onto the chunk with ``rasterio.warp.reproject`` (bilinear, the same GDAL
warper). Each output pixel depends only on the SAR pixels around its map
position, so the chunked result equals the whole-scene alignment
(``tests/test_lazy.py`` checks it against ``align_to``: within 1e-9 on one CRS,
where only the round-off of pixel coordinates differs; across CRSs GDAL's
approximate transformer, which interpolates coordinates within 0.125 pixel over
each warped block, makes chunk and whole scene differ slightly). Unlike
:func:`edc_lab.predict.read_inputs`, the thin strip of the optical grid outside
the SAR footprint stays NaN (filling it from the nearest SAR pixel needs the
whole scene), and values are *not* normalised: optical in the file's data type,
SAR in the file's unit (dB for M3M-CR).

Bad input: the header is checked when the file is opened (missing file, not a
GeoTIFF, wrong band count or data type, prediction grids that differ) and one
:class:`~edc_lab.data.sample.DataError` names the file, what was expected and
what was found (the checks of :mod:`edc_lab.data.io`). Pixels are read later, so
a file whose header is sound but whose pixel data is truncated fails only when
the damaged chunk is computed (rasterio's error names the file).

Whose idea: all our choice (standard xarray/dask practice); nothing here is
from the paper (arXiv 2603.20811).
"""

from __future__ import annotations

import math
import threading
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import dask.array
import numpy as np
import rasterio
import rioxarray
import xarray as xr
from dask.base import tokenize
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import reproject
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from edc_lab.data.io import Grid, check_alignable, check_header, open_raster, same_grid, source_pixel_box
from edc_lab.data.sample import IGNORE_INDEX, OPTICAL_BANDS, DataError

__all__ = ["DEFAULT_CHUNKS", "KINDS", "open_lazy", "open_scene_lazy", "open_prediction"]

#: chunk edge in pixels when none is given: 1024² pixels = 1 MiB per uint8 band (a multiple of
#: the 256² tiles that edc-lab predict writes, so a chunk never splits a tile)
DEFAULT_CHUNKS = 1024
#: what :func:`open_lazy` can open, and what it expects of each
KINDS = ("optical", "sar", "classes", "probabilities")
_WHAT = {
    "optical": "optical (blue, green, red, NIR)",
    "sar": "SAR",
    "classes": "class map (uint8, 255 = no data)",
    "probabilities": "class probabilities (one float band per class)",
}


def _chunk_spec(chunks, band_dim: str) -> dict:
    """``chunks`` as rioxarray wants it: all bands in one chunk, y and x as asked.

    ``chunks``: an int (square chunks), a ``(rows, cols)`` pair, or a dict with
    ``"y"`` / ``"x"`` keys (``-1`` = the whole axis).
    """
    if isinstance(chunks, Mapping):
        unknown = set(chunks) - {"y", "x", "band", band_dim}
        if unknown:
            raise ValueError(f"chunks: expected keys 'y' and 'x', found {sorted(unknown)}")
        rows, cols = chunks.get("y", DEFAULT_CHUNKS), chunks.get("x", DEFAULT_CHUNKS)
    elif isinstance(chunks, (int, np.integer)) and not isinstance(chunks, bool):
        rows = cols = int(chunks)
    elif isinstance(chunks, Sequence) and len(chunks) == 2:
        rows, cols = chunks
    else:
        raise ValueError(f"chunks: expected an int, a (rows, cols) pair or a dict with 'y' and 'x', found {chunks!r}")
    for name, size in (("rows", rows), ("cols", cols)):
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or (size < 1 and size != -1):
            raise ValueError(f"chunks: expected {name} as a positive int (or -1 = whole axis), found {size!r}")
    return {"band": -1, "y": int(rows), "x": int(cols)}


def _names(descriptions: Sequence[str | None], count: int, default: Sequence[str] | None, prefix: str) -> list[str]:
    """Band names: the file's band descriptions when all are set, else ``default``, else numbered."""
    if descriptions and all(descriptions) and len(set(descriptions)) == count:
        return [str(name) for name in descriptions]
    if default is not None and len(default) == count:
        return list(default)
    return [f"{prefix} {index}" for index in range(1, count + 1)]


def open_lazy(path: str | Path, what: str = "optical", *, chunks=DEFAULT_CHUNKS) -> xr.DataArray:
    """Open one GeoTIFF as a dask-backed DataArray; only the header is read.

    Args:
        path: the GeoTIFF.
        what: what the file holds, one of :data:`KINDS`:

            * ``"optical"``: 4 bands -> ``(band, y, x)`` with ``band`` = blue,
              green, red, nir. A file whose band descriptions name these four
              in another order (``write_whu_sample(optical_bands=...)``) is
              put into this order (a lazy re-index); otherwise the file's
              order is taken to be the canonical one;
            * ``"sar"``: any band count -> ``(polarization, y, x)``, named from
              the band descriptions (else VV, VH for two bands, else numbered);
            * ``"classes"``: 1 band uint8 -> ``(y, x)``; 255 = no data;
            * ``"probabilities"``: one float band per class -> ``(class, y, x)``
              named from the band descriptions.
        chunks: chunk size in pixels: an int (square), ``(rows, cols)``, or
            ``{"y": rows, "x": cols}``; every chunk holds all bands.

    Returns:
        The DataArray, values a ``dask.array.Array`` (nothing read yet), with
        ``x`` / ``y`` pixel-centre coordinates and CRS / transform / nodata
        through ``.rio``. ``attrs["source"]`` is the path.

    Raises:
        DataError: a missing, empty or unreadable file, or one with the wrong
            band count or data type (the message names the file).
    """
    if what not in KINDS:
        raise ValueError(f"what: expected one of {KINDS}, found {what!r}")
    path = Path(path)
    band_dim = {"optical": "band", "sar": "polarization", "classes": "band", "probabilities": "class"}[what]
    spec = _chunk_spec(chunks, band_dim)
    label = _WHAT[what]
    with open_raster(path, label) as source:
        if what == "optical":
            check_header(source, label, bands=len(OPTICAL_BANDS))
        elif what == "classes":
            check_header(source, label, bands=1, dtypes=("uint8",))
        elif what == "probabilities":
            check_header(source, label, dtypes=("float32", "float64"))
        descriptions, count = list(source.descriptions), source.count
    array = rioxarray.open_rasterio(path, chunks=spec)
    if what == "optical":
        names = _names(descriptions, count, None, "band")
        if sorted(names) == sorted(OPTICAL_BANDS):
            array = array.assign_coords(band=names).sel(band=list(OPTICAL_BANDS))
        else:
            array = array.assign_coords(band=list(OPTICAL_BANDS))
    elif what == "sar":
        from edc_lab.data.m3mcr import SAR_POLARIZATIONS

        array = array.assign_coords(band=_names(descriptions, count, SAR_POLARIZATIONS, "band"))
        array = array.rename(band="polarization")
    elif what == "classes":
        array = array.squeeze("band", drop=True)
    else:
        array = array.assign_coords(band=_names(descriptions, count, None, "class")).rename(band="class")
    array.attrs["source"] = str(path)
    return array


def open_scene_lazy(
    optical: str | Path,
    sar: str | Path,
    *,
    chunks=DEFAULT_CHUNKS,
    resampling: Resampling = Resampling.bilinear,
) -> xr.Dataset:
    """Open an optical + SAR pair as one lazy Dataset on the optical grid.

    The SAR may have its own CRS, resolution and origin: each chunk of the
    optical grid is resampled from the SAR by georeference when it is computed
    (see the module docstring); a SAR already on the optical grid is used as it
    is. Nothing is read here but the two headers.

    Args:
        optical: the optical GeoTIFF (4 bands); its grid is the Dataset's grid.
        sar: the SAR GeoTIFF (any band count; CRS required when grids differ).
        chunks: as :func:`open_lazy`; the SAR gets the optical chunks.
        resampling: how SAR values are resampled (bilinear, as ``edc-lab predict``).

    Returns:
        ``Dataset`` with ``optical (band, y, x)`` in the file's data type and
        ``sar (polarization, y, x)`` as floats in the file's unit, NaN where the
        SAR does not cover the optical grid or equals its nodata.

    Raises:
        DataError: bad files (see :func:`open_lazy`), a grid without a CRS, or
            a SAR that covers less than 90 % of the optical footprint.
    """
    optical_array = open_lazy(optical, "optical", chunks=chunks)
    sar_array = open_lazy(sar, "sar", chunks=chunks)
    target = Grid(Path(optical), optical_array.rio.crs, optical_array.rio.transform(),
                  optical_array.sizes["y"], optical_array.sizes["x"])
    source = Grid(Path(sar), sar_array.rio.crs, sar_array.rio.transform(), sar_array.sizes["y"], sar_array.sizes["x"])
    if same_grid(source, target):
        aligned = sar_array.astype(np.result_type(sar_array.dtype, np.float32))
        nodata = sar_array.rio.nodata
        if nodata is not None and np.isfinite(nodata):
            aligned = aligned.where(aligned != nodata)
        aligned = aligned.assign_coords(x=optical_array.x, y=optical_array.y)
    else:
        check_alignable(source, target, "SAR")
        with open_raster(sar, "SAR") as handle:
            dtype = np.result_type(handle.dtypes[0], np.float32)
            nodata = handle.nodata
        chunk_rows, chunk_cols = optical_array.data.chunks[1:]
        token = tokenize(str(sar), Path(sar).stat().st_mtime_ns, str(optical), chunks, resampling.name)
        values = dask.array.from_array(
            _AlignedWindows(Path(sar), source, target, len(sar_array.polarization), dtype, nodata, resampling),
            chunks=((len(sar_array.polarization),), chunk_rows, chunk_cols),
            name=f"align-sar-{token}",
            asarray=True,
            meta=np.empty((0, 0, 0), dtype=dtype),
        )
        aligned = xr.DataArray(values, dims=("polarization", "y", "x"),
                               coords={"polarization": sar_array.polarization, "y": optical_array.y,
                                       "x": optical_array.x})
    aligned.attrs = {"source": str(sar), "units": "as in the file (dB for M3M-CR)"}
    scene = xr.Dataset({"optical": optical_array, "sar": aligned})
    scene = scene.rio.write_crs(optical_array.rio.crs).rio.write_transform(optical_array.rio.transform())
    scene.attrs = {"optical": str(optical), "sar": str(sar), "sar_aligned_by": resampling.name}
    return scene


_WARP_LOCK = threading.Lock()


class _AlignedWindows:
    """A (bands, H, W) array on the target grid whose slices are resampled from a file on demand.

    ``dask.array.from_array`` asks it for one chunk at a time (``self[bands, rows, cols]``);
    each request reads the part of the source covering that window plus a margin of
    source pixels and warps it onto the window with ``rasterio.warp.reproject``.
    """

    def __init__(self, path: Path, source: Grid, target: Grid, bands: int, dtype, nodata, resampling) -> None:
        self.path, self.source, self.target = path, source, target
        self.shape = (bands, target.height, target.width)
        self.dtype, self.ndim = np.dtype(dtype), 3
        self.nodata, self.resampling = nodata, resampling

    def __getitem__(self, key) -> np.ndarray:
        bands, rows, cols = (k.indices(n) for k, n in zip(key, self.shape))
        height, width = rows[1] - rows[0], cols[1] - cols[0]
        window = Window(cols[0], rows[0], width, height)
        out = np.full((self.shape[0], height, width), np.nan, dtype=self.dtype)
        if height <= 0 or width <= 0:  # dask may ask for an empty slice: nothing to read or warp
            return out[slice(*bands)]
        grid = Grid(self.target.path, self.target.crs, window_transform(window, self.target.transform), height, width)
        with rasterio.open(self.path) as source:
            read = self._covering(source, grid)
            if read is not None:
                values = source.read(window=read, out_dtype=self.dtype)
                # both transforms are given; for some edge chunks rasterio still warns that one of its
                # temporary in-memory datasets has no geotransform (the values match io.align_to: tested).
                # warnings.catch_warnings is not thread-safe and dask reads chunks in threads: one at a time.
                with _WARP_LOCK, warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    reproject(values, out, src_transform=source.window_transform(read), src_crs=source.crs,
                              src_nodata=self.nodata if self.nodata is not None else np.nan,
                              dst_transform=grid.transform, dst_crs=grid.crs, dst_nodata=np.nan,
                              resampling=self.resampling)
        return out[slice(*bands)]

    def _covering(self, source, grid: Grid) -> Window | None:
        """The window of ``source`` over ``grid``'s bounds plus the margin, clipped to the file (None: no overlap)."""
        first_col, first_row, last_col, last_row = source_pixel_box(source, grid)
        # 2 source pixels for the bilinear kernel, plus the source pixels per target pixel: a coarsening
        # warp widens its kernel by that factor
        scale = max((last_col - first_col) / grid.width, (last_row - first_row) / grid.height)
        margin = 2 + math.ceil(scale)
        col0 = max(0, math.floor(first_col) - margin)
        row0 = max(0, math.floor(first_row) - margin)
        col1 = min(source.width, math.ceil(last_col) + margin)
        row1 = min(source.height, math.ceil(last_row) + margin)
        if col1 <= col0 or row1 <= row0:
            return None
        return Window(col0, row0, col1 - col0, row1 - row0)


def open_prediction(
    path: str | Path,
    *,
    probabilities: str | Path | None = None,
    chunks=DEFAULT_CHUNKS,
    class_names: Sequence[str] | None = None,
) -> xr.Dataset:
    """Open what ``predict_geotiff`` / ``edc-lab predict`` wrote, lazily.

    Args:
        path: the class map (``--out``): 1 band uint8, 255 = no data.
        probabilities: the probabilities file (``--probabilities``), one float
            band per class named in its band descriptions; optional.
        chunks: as :func:`open_lazy`.
        class_names: the class names; default: the probabilities' band
            descriptions, else none (``attrs`` then has no ``class_names``).

    Returns:
        ``Dataset`` on the prediction's grid with ``classes (y, x)`` uint8 (255
        where the optical had no data), ``valid (y, x)`` bool (``classes != 255``,
        the mask to apply to any statistic), and ``probabilities (class, y, x)``
        (NaN where not valid) when asked; ``attrs["class_names"]``.

    Raises:
        DataError: bad files (see :func:`open_lazy`; a probabilities file given
            as ``path`` is named as such), or a probabilities file on another grid.
    """
    path = Path(path)
    with open_raster(path, _WHAT["classes"]) as source:
        if source.count > 1 or source.dtypes[0] != "uint8":
            hint = (" (a probabilities file? pass it as probabilities=)"
                    if source.count > 1 and source.dtypes[0].startswith("float") else "")
            raise DataError(f"{path}: expected a class map (1 band, uint8, 255 = no data), found {source.count} "
                            f"band(s) of {source.dtypes[0]}{hint}")
    classes = open_lazy(path, "classes", chunks=chunks)
    prediction = xr.Dataset({"classes": classes, "valid": classes != IGNORE_INDEX})
    names = list(class_names) if class_names is not None else None
    if probabilities is not None:
        scores = open_lazy(probabilities, "probabilities", chunks=chunks)
        grids = [Grid(Path(p), a.rio.crs, a.rio.transform(), a.sizes["y"], a.sizes["x"])
                 for p, a in ((path, classes), (probabilities, scores))]
        if not same_grid(*grids):
            raise DataError(f"{probabilities}: expected probabilities on the grid of the class map {path} "
                            f"({grids[0].height}x{grids[0].width}, {grids[0].crs}), found "
                            f"{grids[1].height}x{grids[1].width}, {grids[1].crs}, transform "
                            f"{tuple(grids[1].transform)[:6]}")
        if names is None:  # the band descriptions (numbered when the file has none)
            names = [str(name) for name in scores["class"].values]
        if names is not None and len(names) != scores.sizes["class"]:
            raise DataError(f"{probabilities}: expected one band per class ({len(names)}: {names}), "
                            f"found {scores.sizes['class']}")
        if names is not None:
            scores = scores.assign_coords({"class": names})
        prediction["probabilities"] = scores.where(prediction["valid"])
    prediction = prediction.rio.write_crs(classes.rio.crs).rio.write_transform(classes.rio.transform())
    prediction.attrs = {"source": str(path)}
    if names is not None:
        prediction.attrs["class_names"] = names
    return prediction
