"""Write a canonical sample in the real M3M-CR or WHU-OPT-SAR file layout.

Why: tests and the committed ``data/`` sample must exercise the *real* readers
on the *real* formats (TorchGeo's ``tests/data`` practice), without the real
datasets. Any canonical sample (a synthetic scene, or one read from a reader)
can be saved so that :class:`~edc_lab.data.m3mcr.M3MCR` or
:class:`~edc_lab.data.whu.WHUOptSAR` reads it back.

M3M-CR layout (:func:`write_m3mcr_sample`, :func:`write_m3mcr`), as the real data:

* optical (cloudy and cloud-free): uint16 reflectance ×10000, nodata 0, on a
  3 m grid (the sample's pixels are *relabelled* as 3 m: a synthetic scene's
  nominal 5 m becomes 3 m; the origin and CRS are kept). Valid pixels are
  written as at least 1 so that none reads back as nodata;
* SAR and land cover on a coarser 10 m grid whose origin is shifted from the
  optical one (default 1 m east, 2 m south, as on the real tile). SAR is
  averaged onto it in dB (inverse of the published scaling); labels take the
  majority class (``Resampling.mode``) as WorldCover codes. So a reader that
  aligned by array index instead of georeference would read shifted labels —
  the fake data *tests* the alignment;
* cloud mask: boolean ``.npy`` on the optical grid; a CSV row of 5 paths.

WHU-OPT-SAR layout (:func:`write_whu_sample`): ``<root>/<optical_dir>/NAME.tif``
(4 bands uint8, band order configurable), ``<root>/<sar_dir>/NAME.tif`` (1 band
uint8), ``<root>/<label_dir>/NAME.tif`` (codes 10..70, 0 = background), all on
the sample's own grid. WHU-OPT-SAR has no cloudy images, so the cloud-free
optical (``optical_clear``) is written when the sample has it.

Class names are translated through WorldCover codes (M3M-CR) or WHU codes
using the names in ``ds.attrs["class_names"]`` (WHU-OPT-SAR's seven for
synthetic scenes, M3M-CR's six level-1 classes for M3M-CR samples). Our choice
throughout; nothing here is from the paper.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import rasterio
import xarray as xr
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.windows import Window

from edc_lab.data.io import Raster, fill_from_nearest
from edc_lab.data.m3mcr import SAR_POLARIZATIONS, denormalize_sar
from edc_lab.data.outputs import atomic_output  # noqa: F401 (imported from here by evaluate and predict too)
from edc_lab.data.sample import OPTICAL_BANDS, WHU_CLASSES, DataError

#: class name -> ESA WorldCover code used when writing M3M-CR land cover
NAME_TO_WORLDCOVER: dict[str, int] = {
    # WHU-OPT-SAR / synthetic classes
    "farmland": 40,
    "city": 50,
    "village": 50,
    "road": 50,
    "water": 80,
    "forest": 10,
    "others": 30,
    # M3M-CR level-1 classes (inverse of the published mapping, one code each)
    "rangeland": 30,
    "agriculture": 40,
    "urban": 50,
    "barren": 60,
}
#: WorldCover's nodata code: ignored pixels are written as 0
WORLDCOVER_NODATA = 0

#: class name -> WHU-OPT-SAR label code (10..70); M3M-CR classes map to their nearest WHU class
NAME_TO_WHU_CODE: dict[str, int] = {
    **{name: 10 * (index + 1) for index, name in enumerate(WHU_CLASSES)},
    "agriculture": 10,
    "urban": 20,
    "rangeland": 70,
    "barren": 70,
}

#: fallback georeference for samples without one (a UTM zone over Hubei, like WHU-OPT-SAR)
DEFAULT_CRS = "EPSG:32649"
DEFAULT_ORIGIN = (500000.0, 3400000.0)


def write_geotiff(
    path: str | Path,
    values: np.ndarray,
    *,
    crs,
    transform: Affine,
    nodata: float | None = None,
    descriptions: Sequence[str] | None = None,
) -> Path:
    """Write (bands, H, W) ``values`` as a GeoTIFF (deflate-compressed, dtype kept), atomically."""
    path = Path(path)
    bands, height, width = values.shape
    profile = dict(
        driver="GTiff", height=height, width=width, count=bands, dtype=values.dtype.name,
        crs=crs, transform=transform, nodata=nodata, compress="deflate",
    )
    with atomic_output(path) as temporary:  # written whole, then renamed: never a half-written file
        with rasterio.open(temporary, "w", **profile) as target:
            target.write(values)
            for band, description in enumerate(descriptions or (), start=1):
                target.set_band_description(band, description)
    return path


def class_codes(ds: xr.Dataset, name_to_code: dict[str, int], ignore_code: int) -> np.ndarray:
    """(H, W) label indices -> file codes through ``ds.attrs["class_names"]``."""
    names = list(ds.attrs.get("class_names", WHU_CLASSES))
    missing = [name for name in names if name not in name_to_code]
    if missing:
        raise DataError(f"writer: expected class names among {sorted(name_to_code)}, found {missing}")
    lookup = np.full(256, ignore_code, dtype=np.uint8)
    for index, name in enumerate(names):
        lookup[index] = name_to_code[name]
    return lookup[ds["label"].values.astype(np.int64)]


def georeference(ds: xr.Dataset) -> tuple[object, Affine]:
    """(crs, transform) of a sample, or a default UTM grid when it has none (5 m pixels)."""
    if ds.rio.crs is not None:
        return ds.rio.crs, ds.rio.transform()
    return DEFAULT_CRS, Affine(5.0, 0.0, DEFAULT_ORIGIN[0], 0.0, -5.0, DEFAULT_ORIGIN[1])


def m3mcr_relative_paths(season: str, roi: int, patch: int) -> list[str]:
    """The five relative paths of one M3M-CR sample, in CSV column order."""
    stems = [f"planet_cloudfree_{season}", f"planet_cloudy_{season}", f"S1_{season}", f"landcover_{season}",
             f"cloudmask_{season}"]
    suffixes = [".tif", ".tif", ".tif", ".tif", ".npy"]
    return [f"{stem}/{stem}_{roi}/{stem}_{roi}_p_{patch}{suffix}" for stem, suffix in zip(stems, suffixes)]


def write_m3mcr_sample(
    ds: xr.Dataset,
    root: str | Path,
    *,
    split: str = "train",
    patch: int = 0,
    season: str = "synthetic",
    roi: int = 1,
    optical_resolution: float = 3.0,
    sar_resolution: float = 10.0,
    sar_origin_shift: tuple[float, float] = (1.0, -2.0),
) -> list[str]:
    """Write one canonical sample as an M3M-CR quintet under ``<root>/<split>/``.

    Args:
        ds: canonical sample with ``optical_clear`` and two SAR polarizations (VV, VH).
        root: dataset root.
        split: sub-folder ("train", "test").
        patch, season, roi: name parts (``..._<roi>_p_<patch>.tif``).
        optical_resolution: pixel size the optical is written at (m).
        sar_resolution: pixel size of the SAR and land-cover grid (m).
        sar_origin_shift: (dx, dy) in metres from the optical origin (top-left) to the
            SAR origin; (1, -2) = 1 m east, 2 m south, as on the real tile.

    Returns:
        The CSV row: five paths relative to ``<root>/<split>/``.
    """
    if "optical_clear" not in ds:
        raise DataError("writer: the M3M-CR layout needs a cloud-free optical (optical_clear), found none")
    polarizations = tuple(str(p) for p in ds["polarization"].values)
    if polarizations != SAR_POLARIZATIONS:
        raise DataError(f"writer: the M3M-CR layout needs SAR polarizations {SAR_POLARIZATIONS}, found {polarizations}")
    crs, transform = georeference(ds)
    height, width = ds.sizes["y"], ds.sizes["x"]
    optical_transform = Affine(optical_resolution, 0.0, transform.c, 0.0, -optical_resolution, transform.f)
    shift_x, shift_y = sar_origin_shift
    sar_transform = Affine(
        sar_resolution, 0.0, transform.c + shift_x, 0.0, -sar_resolution, transform.f + shift_y
    )
    # enough 10 m cells to cover the optical footprint from the shifted origin
    sar_width = math.ceil((width * optical_resolution - shift_x) / sar_resolution)
    sar_height = math.ceil((height * optical_resolution + shift_y) / sar_resolution)

    relative = m3mcr_relative_paths(season, roi, patch)
    base = Path(root) / split
    paths = [base / rel for rel in relative]

    for variable, path in zip(("optical_clear", "optical"), paths[:2]):
        reflectance = np.round(np.clip(ds[variable].values, 0.0, 1.0) * 10000.0)
        write_geotiff(path, np.maximum(reflectance, 1).astype(np.uint16), crs=crs, transform=optical_transform,
                      nodata=0, descriptions=OPTICAL_BANDS)

    optical_grid = Raster(paths[1], np.zeros((1, height, width)), CRS.from_user_input(crs),
                          optical_transform)
    coarse = Raster(paths[2], np.zeros((1, sar_height, sar_width)), optical_grid.crs, sar_transform)
    template = coarse.to_xarray()

    backscatter_db = denormalize_sar(ds["sar"].values).astype(np.float32)
    sar = optical_grid.with_values(backscatter_db, nodata=np.nan).to_xarray()
    sar_coarse = sar.rio.reproject_match(template, resampling=Resampling.average).values
    sar_coarse = fill_from_nearest(sar_coarse, np.isnan(sar_coarse).any(axis=0))
    write_geotiff(paths[2], sar_coarse.astype(np.float64), crs=crs, transform=sar_transform,
                  descriptions=SAR_POLARIZATIONS)

    codes = class_codes(ds, NAME_TO_WORLDCOVER, WORLDCOVER_NODATA)[None]
    labels = optical_grid.with_values(codes, nodata=WORLDCOVER_NODATA).to_xarray()
    codes_coarse = labels.rio.reproject_match(template, resampling=Resampling.mode).values.astype(np.uint8)
    write_geotiff(paths[3], codes_coarse, crs=crs, transform=sar_transform)

    paths[4].parent.mkdir(parents=True, exist_ok=True)
    np.save(paths[4], ds["cloud_mask"].values.astype(bool), allow_pickle=False)
    return relative


def write_m3mcr(samples: Iterable[xr.Dataset], root: str | Path, split: str = "train", **kwargs) -> Path:
    """Write samples as patches 0, 1, ... of ``<root>/<split>/`` and the file list ``<root>/<split>.csv``.

    Keyword arguments go to :func:`write_m3mcr_sample`. Returns the CSV path.
    """
    root = Path(root)
    rows = [write_m3mcr_sample(ds, root, split=split, patch=patch, **kwargs) for patch, ds in enumerate(samples)]
    csv_path = root / f"{split}.csv"
    with open(csv_path, "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    return csv_path


def write_whu_sample(
    ds: xr.Dataset,
    root: str | Path,
    name: str,
    *,
    optical_dir: str = "optical",
    sar_dir: str = "sar",
    label_dir: str = "lbl",
    optical_bands: Sequence[str] = OPTICAL_BANDS,
    sar_polarization: str | None = None,
) -> dict[str, Path]:
    """Write one canonical sample as a WHU-OPT-SAR triplet named ``name`` (e.g. "NH49E004021.tif").

    Args:
        ds: canonical sample; its ``optical_clear`` (else ``optical``) is written.
        root: dataset root.
        optical_dir, sar_dir, label_dir: folder names (the release uses optical/sar/lbl).
        optical_bands: band order in the file (canonical names), e.g. ("red", "green", "blue", "nir").
        sar_polarization: which SAR plane to write (WHU-OPT-SAR has one); None: the only one.

    Returns:
        {"optical": path, "sar": path, "label": path}.
    """
    if not name.endswith((".tif", ".tiff")):
        name = f"{name}.tif"
    crs, transform = georeference(ds)
    optical = ds["optical_clear"] if "optical_clear" in ds else ds["optical"]
    band_order = [OPTICAL_BANDS.index(band) for band in optical_bands]
    optical_bytes = np.round(np.clip(optical.values[band_order], 0.0, 1.0) * 255.0).astype(np.uint8)

    polarizations = [str(p) for p in ds["polarization"].values]
    if sar_polarization is None:
        if len(polarizations) != 1:
            raise DataError(
                f"writer: WHU-OPT-SAR holds one SAR band, found polarizations {polarizations}; "
                f"pass sar_polarization= to pick one"
            )
        sar_polarization = polarizations[0]
    sar_plane = ds["sar"].sel(polarization=sar_polarization).values
    sar_bytes = np.round(np.clip(sar_plane, 0.0, 1.0) * 255.0).astype(np.uint8)[None]

    codes = class_codes(ds, NAME_TO_WHU_CODE, 0)[None]
    root = Path(root)
    paths = {
        "optical": write_geotiff(root / optical_dir / name, optical_bytes, crs=crs, transform=transform,
                                 descriptions=tuple(optical_bands)),
        "sar": write_geotiff(root / sar_dir / name, sar_bytes, crs=crs, transform=transform,
                             descriptions=(sar_polarization,)),
        "label": write_geotiff(root / label_dir / name, codes, crs=crs, transform=transform),
    }
    return paths



#: block (tile) size of the GeoTIFFs that predict writes: GIS tools read a zoom by tiles
TILE = 256
#: GDAL's raster block cache while writing (MB; ``rasterio.Env(GDAL_CACHEMAX=...)`` around the writers):
#: written tiles are flushed, never held for the whole scene (GDAL's default is 5 % of the RAM)
GDAL_CACHE_MB = 64


def overview_factors(height: int, width: int, smallest: int = TILE) -> list[int]:
    """Overview decimation factors 2, 4, 8, … while the overview stays at least ``smallest`` pixels wide or high."""
    factors, factor = [], 2
    while max(height, width) // factor >= smallest:
        factors.append(factor)
        factor *= 2
    return factors


class RowWriter:
    """Write a GeoTIFF band of rows at a time: tiled (:data:`TILE`²), DEFLATE-compressed, atomically.

    Rows arrive top to bottom in bands of any height (:meth:`write`); they are
    written once a whole row of tiles is complete, so every tile is compressed
    once and memory holds at most one row of tiles. :meth:`close` writes the
    rest, builds overviews when asked (``overviews``: a resampling name such as
    ``"nearest"`` for classes or ``"average"`` for probabilities) and renames the
    temporary file over ``path`` (:func:`atomic_output`): a run that fails,
    whenever it fails, leaves no half-written file. Use as a context manager.

    The same writer serves a scene held in memory (one :meth:`write` of all rows)
    and a streamed one, so both produce the same file.
    """

    def __init__(self, path: str | Path, bands: int, dtype: str, *, crs, transform: Affine, height: int, width: int,
                 nodata: float | None = None, descriptions: Sequence[str] | None = None,
                 overviews: str | None = None) -> None:
        self.path, self.height, self.width, self.bands = Path(path), height, width, bands
        self.overviews = overviews
        self._atomic = atomic_output(self.path)
        self._temporary = self._atomic.__enter__()
        try:
            profile = dict(driver="GTiff", height=height, width=width, count=bands, dtype=dtype, crs=crs,
                           transform=transform, nodata=nodata, compress="deflate", tiled=True,
                           blockxsize=TILE, blockysize=TILE, BIGTIFF="IF_SAFER")
            self._target = rasterio.open(self._temporary, "w", **profile)
            for band, description in enumerate(descriptions or (), start=1):
                self._target.set_band_description(band, description)
        except BaseException:
            self._atomic.__exit__(*sys.exc_info())
            raise
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self.rows_written = 0

    def write(self, values: np.ndarray) -> None:
        """Append the next (bands, rows, width) band of rows."""
        if values.ndim != 3 or values.shape[0] != self.bands or values.shape[2] != self.width:
            raise ValueError(f"RowWriter {self.path}: expected ({self.bands}, rows, {self.width}) values, "
                             f"found {values.shape}")
        if self.rows_written + self._pending_rows + values.shape[1] > self.height:
            raise ValueError(f"RowWriter {self.path}: expected at most {self.height} rows in all, found more")
        self._pending.append(values)
        self._pending_rows += values.shape[1]
        complete = (self._pending_rows // TILE) * TILE
        if complete:
            self._flush(complete)

    def _flush(self, rows: int) -> None:
        block = np.concatenate(self._pending, axis=1) if len(self._pending) > 1 else self._pending[0]
        self._target.write(block[:, :rows], window=Window(0, self.rows_written, self.width, rows))
        self.rows_written += rows
        rest = block[:, rows:]
        self._pending = [rest] if rest.shape[1] else []
        self._pending_rows = rest.shape[1]

    def close(self) -> Path:
        """Write the last rows, build overviews, rename into place. Refuses a file with rows missing."""
        if getattr(self, "_closed", False):
            return self.path
        self._closed = True
        try:
            if self._pending_rows:
                self._flush(self._pending_rows)
            if self.rows_written != self.height:
                raise ValueError(f"RowWriter {self.path}: expected {self.height} rows, found {self.rows_written}")
            if self.overviews is not None:
                factors = overview_factors(self.height, self.width)
                if factors:
                    self._target.build_overviews(factors, Resampling[self.overviews])
                    self._target.update_tags(ns="rio_overview", resampling=self.overviews)
            self._target.close()
        except BaseException:
            self.abort()
            raise
        self._atomic.__exit__(None, None, None)  # renames the temporary file over the path
        self._renamed = True
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (idempotent); ``path`` keeps what it had before."""
        if getattr(self, "_aborted", False) or getattr(self, "_renamed", False):
            return
        self._aborted = True
        try:
            self._target.close()
        except Exception:
            pass
        error = RuntimeError(f"RowWriter {self.path}: aborted")
        try:
            self._atomic.__exit__(RuntimeError, error, None)
        except RuntimeError:
            pass
        self._temporary.unlink(missing_ok=True)

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
